-- Workflows (revisioned), runs (with a worker lease and a resume cursor) and run events (ordered by seq).

CREATE TABLE workflows (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  family_id uuid NOT NULL,
  revision integer NOT NULL DEFAULT 1,
  source_workflow_id uuid NULL CONSTRAINT workflows_source_workflow_id_fk REFERENCES workflows(id) ON DELETE SET NULL,
  name text NOT NULL,
  status text NOT NULL DEFAULT 'draft',
  version integer NOT NULL DEFAULT 1,
  dsl jsonb NOT NULL,
  editor_state jsonb NULL,
  created_by_user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
  published_at timestamptz NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT workflows_status_check CHECK (status IN ('draft', 'published'))
);
CREATE INDEX workflows_org_id_idx ON workflows (organization_id);
CREATE INDEX workflows_org_status_idx ON workflows (organization_id, status);
CREATE UNIQUE INDEX workflows_org_family_revision_unique ON workflows (organization_id, family_id, revision);
CREATE INDEX workflows_org_family_revision_idx ON workflows (organization_id, family_id, revision DESC);
CREATE INDEX workflows_org_created_idx ON workflows (organization_id, created_at DESC, id DESC);

CREATE TABLE workflow_runs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  workflow_id uuid NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
  trigger_type text NOT NULL DEFAULT 'manual',
  status text NOT NULL DEFAULT 'queued',
  attempt_count integer NOT NULL DEFAULT 0 CONSTRAINT workflow_runs_attempt_count_non_negative CHECK (attempt_count >= 0),
  max_attempts integer NOT NULL DEFAULT 3 CONSTRAINT workflow_runs_max_attempts_positive CHECK (max_attempts >= 1),
  next_attempt_at timestamptz NULL,
  cursor_node_index integer NOT NULL DEFAULT 0,
  blocked_request_id text NULL,
  blocked_node_id text NULL,
  blocked_node_type text NULL,
  blocked_kind text NULL,
  blocked_at timestamptz NULL,
  blocked_timeout_at timestamptz NULL,
  -- The worker holding the run and until when: an expired lease means the worker is gone.
  lease_owner text NULL,
  lease_expires_at timestamptz NULL,
  requested_by_user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
  input jsonb NULL,
  output jsonb NULL,
  error text NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz NULL,
  finished_at timestamptz NULL,
  CONSTRAINT workflow_runs_status_check CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
  CONSTRAINT workflow_runs_blocked_kind_check CHECK (blocked_kind IS NULL OR blocked_kind IN ('agent.execute', 'connector.action', 'agent.run'))
);
-- No index covers status, lease, cursor or output: those change on every step of a run, and leaving them
-- unindexed lets PostgreSQL update the row in place (HOT) instead of touching every index each time. The
-- sweeper finds work through `workflow_run_index`, and nothing queries runs by status across a workflow.
CREATE INDEX workflow_runs_workflow_id_idx ON workflow_runs (workflow_id);
CREATE INDEX workflow_runs_list_idx ON workflow_runs (organization_id, workflow_id, created_at DESC, id DESC);
CREATE INDEX workflow_runs_blocked_timeout_idx ON workflow_runs (blocked_timeout_at) WHERE blocked_timeout_at IS NOT NULL;

CREATE TABLE workflow_run_events (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  -- Insertion order: pages and ordering follow it (created_at alone ties within a transaction).
  seq bigserial NOT NULL,
  -- Only the run is a foreign key: events go when their run goes, and the run goes with its workflow and
  -- org. Foreign keys to the org and workflow rows would make every event insert share-lock those two hot
  -- rows, and concurrent share locks on one row cost PostgreSQL a multixact each (measured: it halved
  -- run throughput).
  organization_id uuid NOT NULL,
  workflow_id uuid NOT NULL,
  run_id uuid NOT NULL REFERENCES workflow_runs(id) ON DELETE CASCADE,
  attempt_count integer NOT NULL DEFAULT 0 CONSTRAINT workflow_run_events_attempt_count_non_negative CHECK (attempt_count >= 0),
  event_type text NOT NULL,
  node_id text NULL,
  node_type text NULL,
  level text NOT NULL DEFAULT 'info',
  message text NULL,
  payload jsonb NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  CONSTRAINT workflow_run_events_level_check CHECK (level IN ('info', 'warn', 'error'))
);
-- Events are read per run in `seq` order; this one index serves that and the cascade from the run.
CREATE INDEX workflow_run_events_run_seq_idx ON workflow_run_events (run_id, seq);

ALTER TABLE workflows ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflows FORCE ROW LEVEL SECURITY;
CREATE POLICY workflows_tenant_isolation_all ON workflows FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());
ALTER TABLE workflow_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY workflow_runs_tenant_isolation_all ON workflow_runs FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());
ALTER TABLE workflow_run_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_run_events FORCE ROW LEVEL SECURITY;
CREATE POLICY workflow_run_events_tenant_isolation_all ON workflow_run_events FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());

-- The reaper's view of runs across tenants: ids, org, status and timing only, kept by a trigger (running
-- as the owner) in a table the application role cannot read. `app.stranded_runs` exposes just what needs
-- re-delivery: queued past their due time, or running with an expired lease and not waiting on a remote.
CREATE TABLE workflow_run_index (
  run_id uuid PRIMARY KEY,
  organization_id uuid NOT NULL,
  status text NOT NULL,
  due_at timestamptz NOT NULL,
  lease_expires_at timestamptz NULL,
  blocked boolean NOT NULL DEFAULT false
);
CREATE INDEX workflow_run_index_active_idx ON workflow_run_index (status, due_at) WHERE status IN ('queued', 'running');

CREATE OR REPLACE FUNCTION app.track_run_index() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    DELETE FROM workflow_run_index WHERE run_id = OLD.id;
    RETURN NULL;
  END IF;
  IF NEW.status IN ('succeeded', 'failed') THEN
    DELETE FROM workflow_run_index WHERE run_id = NEW.id;
    RETURN NULL;
  END IF;
  INSERT INTO workflow_run_index (run_id, organization_id, status, due_at, lease_expires_at, blocked)
  VALUES (NEW.id, NEW.organization_id, NEW.status, coalesce(NEW.next_attempt_at, NEW.created_at),
          NEW.lease_expires_at, NEW.blocked_request_id IS NOT NULL)
  ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, due_at = EXCLUDED.due_at,
    lease_expires_at = EXCLUDED.lease_expires_at, blocked = EXCLUDED.blocked;
  RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION app.track_run_index() FROM PUBLIC;

CREATE TRIGGER workflow_runs_index
  AFTER INSERT OR DELETE OR UPDATE OF status, next_attempt_at, lease_expires_at, blocked_request_id
  ON workflow_runs FOR EACH ROW EXECUTE FUNCTION app.track_run_index();

CREATE OR REPLACE FUNCTION app.stranded_runs(stale_before timestamptz, max_rows integer)
  RETURNS TABLE (run_id uuid, organization_id uuid)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT i.run_id, i.organization_id FROM workflow_run_index i
  WHERE (i.status = 'queued' AND i.due_at < stale_before)
     OR (i.status = 'running' AND NOT i.blocked AND (i.lease_expires_at IS NULL OR i.lease_expires_at < now()))
  ORDER BY i.due_at
  LIMIT max_rows
$$;
REVOKE EXECUTE ON FUNCTION app.stranded_runs(timestamptz, integer) FROM PUBLIC;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vespid_app') THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON workflows, workflow_runs, workflow_run_events TO vespid_app;
    GRANT USAGE, SELECT ON SEQUENCE workflow_run_events_seq_seq TO vespid_app;
    GRANT EXECUTE ON FUNCTION app.stranded_runs(timestamptz, integer) TO vespid_app;
  END IF;
END $$;
