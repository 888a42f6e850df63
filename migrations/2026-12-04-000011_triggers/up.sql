-- Triggers that fire (issue 11): cron schedules and webhook deliveries.
--
-- `workflow_cron_ticks` holds, per workflow family, the last schedule tick that started a run. A tick is
-- claimed by a compare-and-set on that row in the same transaction that inserts its run, so however many
-- scheduler instances run, each tick starts exactly one run (or none, if that transaction rolls back).
-- `webhook_deliveries` remembers a caller's `Idempotency-Key` with the run it started, under a unique
-- index, so the retries of one delivery start one run.
CREATE TABLE workflow_cron_ticks (
  family_id uuid PRIMARY KEY,
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  last_tick_at timestamptz NOT NULL,
  last_run_id uuid NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE workflow_cron_ticks ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_cron_ticks FORCE ROW LEVEL SECURITY;
CREATE POLICY workflow_cron_ticks_tenant_isolation_all ON workflow_cron_ticks FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());

CREATE TABLE webhook_deliveries (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  family_id uuid NOT NULL,
  idempotency_key text NOT NULL,
  run_id uuid NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT webhook_deliveries_key_length CHECK (char_length(idempotency_key) BETWEEN 1 AND 200)
);
CREATE UNIQUE INDEX webhook_deliveries_key_idx ON webhook_deliveries (organization_id, family_id, idempotency_key);
CREATE INDEX webhook_deliveries_created_idx ON webhook_deliveries (created_at);

ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_deliveries_tenant_isolation_all ON webhook_deliveries FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());

-- The cross-org reads (the scheduler's scan, the webhook route's lookup before it knows the org) cannot go
-- through `workflows`, whose row-level security binds its owner too. As for runs (`workflow_run_index`), a
-- trigger keeps an index of published revisions and their triggers in a table the application role cannot
-- read, and two definer functions expose just what is needed.
CREATE TABLE workflow_trigger_index (
  workflow_id uuid PRIMARY KEY,
  organization_id uuid NOT NULL,
  family_id uuid NOT NULL,
  revision integer NOT NULL,
  created_by_user_id uuid NOT NULL,
  trigger jsonb NULL,
  published_at timestamptz NULL
);
CREATE INDEX workflow_trigger_index_family_idx ON workflow_trigger_index (family_id, revision DESC);
CREATE INDEX workflow_trigger_index_cron_idx ON workflow_trigger_index ((trigger ->> 'type'));

CREATE OR REPLACE FUNCTION app.track_workflow_trigger() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    DELETE FROM workflow_trigger_index WHERE workflow_id = OLD.id;
    RETURN NULL;
  END IF;
  IF NEW.status <> 'published' THEN
    DELETE FROM workflow_trigger_index WHERE workflow_id = NEW.id;
    RETURN NULL;
  END IF;
  INSERT INTO workflow_trigger_index (workflow_id, organization_id, family_id, revision, created_by_user_id,
                                      trigger, published_at)
  VALUES (NEW.id, NEW.organization_id, NEW.family_id, NEW.revision, NEW.created_by_user_id,
          NEW.dsl -> 'trigger', NEW.published_at)
  ON CONFLICT (workflow_id) DO UPDATE SET trigger = EXCLUDED.trigger, published_at = EXCLUDED.published_at,
    revision = EXCLUDED.revision;
  RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION app.track_workflow_trigger() FROM PUBLIC;
CREATE TRIGGER workflows_track_trigger AFTER INSERT OR UPDATE OR DELETE ON workflows
  FOR EACH ROW EXECUTE FUNCTION app.track_workflow_trigger();

-- Published revisions that exist already (the owner lifts its own forced RLS for this one statement).
ALTER TABLE workflows NO FORCE ROW LEVEL SECURITY;
INSERT INTO workflow_trigger_index (workflow_id, organization_id, family_id, revision, created_by_user_id,
                                    trigger, published_at)
SELECT id, organization_id, family_id, revision, created_by_user_id, dsl -> 'trigger', published_at
FROM workflows WHERE status = 'published'
ON CONFLICT (workflow_id) DO NOTHING;
ALTER TABLE workflows FORCE ROW LEVEL SECURITY;

-- The scheduler's scan: the latest published revision of every family whose trigger is cron.
CREATE OR REPLACE FUNCTION app.cron_workflows()
  RETURNS TABLE (workflow_id uuid, organization_id uuid, family_id uuid, created_by_user_id uuid,
                 trigger jsonb, published_at timestamptz)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT l.workflow_id, l.organization_id, l.family_id, l.created_by_user_id, l.trigger, l.published_at
  FROM (
    SELECT DISTINCT ON (family_id) * FROM workflow_trigger_index ORDER BY family_id, revision DESC
  ) l
  WHERE l.trigger ->> 'type' = 'trigger.cron'
$$;
REVOKE EXECUTE ON FUNCTION app.cron_workflows() FROM PUBLIC;

-- The webhook route's lookup: a published revision's id names its family, whose latest published
-- revision runs. The caller then proves knowledge of that revision's trigger token before anything else.
CREATE OR REPLACE FUNCTION app.webhook_target(wanted uuid)
  RETURNS TABLE (workflow_id uuid, organization_id uuid, family_id uuid, created_by_user_id uuid,
                 trigger jsonb)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT p.workflow_id, p.organization_id, p.family_id, p.created_by_user_id, p.trigger
  FROM workflow_trigger_index named
  JOIN LATERAL (
    SELECT * FROM workflow_trigger_index
    WHERE family_id = named.family_id AND organization_id = named.organization_id
    ORDER BY revision DESC LIMIT 1
  ) p ON true
  WHERE named.workflow_id = wanted
$$;
REVOKE EXECUTE ON FUNCTION app.webhook_target(uuid) FROM PUBLIC;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vespid_app') THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON workflow_cron_ticks TO vespid_app;
    GRANT SELECT, INSERT, DELETE ON webhook_deliveries TO vespid_app;
    GRANT EXECUTE ON FUNCTION app.cron_workflows() TO vespid_app;
    GRANT EXECUTE ON FUNCTION app.webhook_target(uuid) TO vespid_app;
  END IF;
END $$;
