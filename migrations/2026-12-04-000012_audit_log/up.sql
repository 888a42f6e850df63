-- The audit log (issue 11): one row per mutation of an org, its members, invitations, settings, connector
-- secrets (and each decrypt of one for a run), workflow publications, API keys and executors, written in
-- the transaction of the mutation itself, so a mutation that rolls back leaves no row and one that commits
-- always has its row. Append-only for the application (no UPDATE or DELETE grant); retention is applied
-- by a definer function the continuation role calls.
CREATE TABLE audit_log (
  id uuid PRIMARY KEY DEFAULT app.uuid_v7(),
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  actor_user_id uuid NULL,
  actor_type text NOT NULL,
  action text NOT NULL,
  target_type text NOT NULL,
  target_id text NULL,
  details jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  CONSTRAINT audit_log_actor_type_check CHECK (actor_type IN ('user', 'system'))
);
CREATE INDEX audit_log_org_idx ON audit_log (organization_id, created_at DESC, id DESC);
CREATE INDEX audit_log_created_idx ON audit_log (created_at);

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_log_tenant_isolation_all ON audit_log FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());

-- Retention across orgs: deletes rows older than `before`, at most `max_rows` per call. The owner is bound
-- by the forced RLS as well; this policy, for the owner role only (the role running this migration), lets
-- it read and delete across orgs only inside this function, which sets the flag for its own transaction.
-- The application role is not the owner: the policy does not apply to it whatever it sets.
DO $$
BEGIN
  EXECUTE format(
    'CREATE POLICY audit_log_retention ON audit_log FOR ALL TO %I '
    'USING (current_setting(''app.audit_retention'', true) = ''on'')', current_user);
END $$;

CREATE OR REPLACE FUNCTION app.prune_audit_log(before timestamptz, max_rows integer) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  n integer;
BEGIN
  PERFORM set_config('app.audit_retention', 'on', true);
  DELETE FROM audit_log WHERE id IN (
    SELECT id FROM audit_log WHERE created_at < before ORDER BY created_at LIMIT max_rows);
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM set_config('app.audit_retention', 'off', true);
  RETURN n;
END $$;
REVOKE EXECUTE ON FUNCTION app.prune_audit_log(timestamptz, integer) FROM PUBLIC;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vespid_app') THEN
    GRANT SELECT, INSERT ON audit_log TO vespid_app;
    GRANT EXECUTE ON FUNCTION app.prune_audit_log(timestamptz, integer) TO vespid_app;
  END IF;
END $$;
