DROP TABLE IF EXISTS managed_executors;
DROP TABLE IF EXISTS executor_pairing_tokens;
DROP TABLE IF EXISTS organization_executors;
