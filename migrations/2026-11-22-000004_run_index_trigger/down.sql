DROP TRIGGER workflow_runs_index_update ON workflow_runs;
DROP TRIGGER workflow_runs_index_insert_delete ON workflow_runs;
CREATE TRIGGER workflow_runs_index
  AFTER INSERT OR DELETE OR UPDATE OF status, next_attempt_at, lease_expires_at, blocked_request_id
  ON workflow_runs FOR EACH ROW EXECUTE FUNCTION app.track_run_index();
