DROP FUNCTION IF EXISTS app.prune_audit_log(timestamptz, integer);
DROP TABLE IF EXISTS audit_log;
