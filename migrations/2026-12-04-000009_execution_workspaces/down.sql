DROP TABLE IF EXISTS execution_workspaces;
