DROP FUNCTION IF EXISTS app.webhook_target(uuid);
DROP FUNCTION IF EXISTS app.cron_workflows();
DROP TRIGGER IF EXISTS workflows_track_trigger ON workflows;
DROP FUNCTION IF EXISTS app.track_workflow_trigger();
DROP TABLE IF EXISTS workflow_trigger_index;
DROP TABLE IF EXISTS webhook_deliveries;
DROP TABLE IF EXISTS workflow_cron_ticks;
