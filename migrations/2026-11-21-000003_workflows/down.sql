DROP TRIGGER IF EXISTS workflow_runs_index ON workflow_runs;
DROP FUNCTION IF EXISTS app.track_run_index();
DROP TABLE IF EXISTS workflow_run_index;
DROP FUNCTION IF EXISTS app.stranded_runs(timestamptz, integer);
DROP TABLE IF EXISTS workflow_run_events, workflow_runs, workflows CASCADE;
