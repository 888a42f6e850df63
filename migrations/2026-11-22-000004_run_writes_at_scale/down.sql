ALTER TABLE workflow_run_events ALTER COLUMN id SET DEFAULT gen_random_uuid();
DROP FUNCTION app.uuid_v7();
DROP INDEX workflow_runs_list_idx;
CREATE INDEX workflow_runs_list_idx ON workflow_runs (organization_id, workflow_id, created_at DESC, id DESC);
CREATE INDEX workflow_runs_workflow_id_idx ON workflow_runs (workflow_id);
ALTER TABLE workflow_runs RESET (fillfactor);
DROP TRIGGER workflow_runs_index_insert ON workflow_runs;
DROP TRIGGER workflow_runs_index_update ON workflow_runs;
DROP TRIGGER workflow_runs_index_delete ON workflow_runs;
DROP FUNCTION app.track_run_index_insert();
DROP FUNCTION app.track_run_index_update();
DROP FUNCTION app.track_run_index_delete();
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
