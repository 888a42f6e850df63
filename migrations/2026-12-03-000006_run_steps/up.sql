-- Steps recorded by checkpoints between full writes of a run's `output`. A long run (thousands of nodes)
-- cannot rewrite its whole step list after every node: each checkpoint appends its new steps here, the
-- run's `output` is rewritten at most about once a second (and at the end), and a resumed attempt reads
-- `output.steps` plus the rows here. Only the worker reads and writes them.
CREATE TABLE workflow_run_steps (
  id bigserial PRIMARY KEY,
  -- As for events: only the run is a foreign key (a key to the org row would share-lock it per insert).
  organization_id uuid NOT NULL,
  run_id uuid NOT NULL REFERENCES workflow_runs(id) ON DELETE CASCADE,
  node_id text NOT NULL,
  -- The step as it appears in `output.steps`.
  step jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workflow_run_steps_run_idx ON workflow_run_steps (run_id, id);

ALTER TABLE workflow_run_steps ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_run_steps FORCE ROW LEVEL SECURITY;
CREATE POLICY workflow_run_steps_tenant_isolation_all ON workflow_run_steps FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vespid_app') THEN
    GRANT SELECT, INSERT, DELETE ON workflow_run_steps TO vespid_app;
    GRANT USAGE, SELECT ON SEQUENCE workflow_run_steps_id_seq TO vespid_app;
  END IF;
END $$;
