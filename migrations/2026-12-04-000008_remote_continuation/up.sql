-- Remote execution: a run blocked on an executor keeps its block in `blocked_*` (written before the
-- dispatch is sent); the continuation writes the result that came back into `remote_result` as it clears
-- the block (compare-and-set on `blocked_request_id`), and the resumed attempt consumes it.
ALTER TABLE workflow_runs ADD COLUMN remote_result jsonb NULL;

-- Blocked runs across orgs (ids only), for the continuation's sweep: lost pushes, timeouts, dispatches
-- that a crash kept from being sent. Reads the owner-only index, like `app.stranded_runs`.
CREATE OR REPLACE FUNCTION app.blocked_runs(max_rows integer)
  RETURNS TABLE (run_id uuid, organization_id uuid)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT i.run_id, i.organization_id FROM workflow_run_index i
  WHERE i.status = 'running' AND i.blocked
  ORDER BY i.due_at
  LIMIT max_rows
$$;
REVOKE EXECUTE ON FUNCTION app.blocked_runs(integer) FROM PUBLIC;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vespid_app') THEN
    GRANT EXECUTE ON FUNCTION app.blocked_runs(integer) TO vespid_app;
  END IF;
END $$;
