DROP FUNCTION IF EXISTS app.blocked_runs(integer);
ALTER TABLE workflow_runs DROP COLUMN IF EXISTS remote_result;
