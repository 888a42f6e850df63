-- The reaper's index changes only when a run's status, due time, lease or blocked state changes. The
-- trigger used to fire on any UPDATE naming those columns, and the worker's one-statement writes name
-- `status` even in checkpoints that keep it: a WHEN clause skips the index write when nothing it tracks
-- changed (most checkpoints), which keeps those run updates to a single heap write.
DROP TRIGGER workflow_runs_index ON workflow_runs;

CREATE TRIGGER workflow_runs_index_insert_delete
  AFTER INSERT OR DELETE ON workflow_runs
  FOR EACH ROW EXECUTE FUNCTION app.track_run_index();

CREATE TRIGGER workflow_runs_index_update
  AFTER UPDATE ON workflow_runs
  FOR EACH ROW
  WHEN (OLD.status IS DISTINCT FROM NEW.status
        OR OLD.next_attempt_at IS DISTINCT FROM NEW.next_attempt_at
        OR OLD.lease_expires_at IS DISTINCT FROM NEW.lease_expires_at
        OR OLD.blocked_request_id IS DISTINCT FROM NEW.blocked_request_id
        OR OLD.created_at IS DISTINCT FROM NEW.created_at)
  EXECUTE FUNCTION app.track_run_index();
