-- Execution workspaces (gateway spec 2.8): the files of a run (or, later, a session) that persist from one
-- tool call to the next, as versioned snapshot objects. A tool call locks the workspace (with an expiry,
-- released on every exit path), the executor uploads version N+1, and the gateway commits it with a
-- compare-and-set on the version.
--
-- Improve over the original: strict row-level security (the original's policy let a connection without
-- org context read and write every tenant's rows).
CREATE TABLE execution_workspaces (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  owner_type text NOT NULL,
  owner_id uuid NOT NULL,
  current_version bigint NOT NULL DEFAULT 0,
  current_object_key text NOT NULL DEFAULT '',
  current_etag text NULL,
  lock_token text NULL,
  lock_expires_at timestamptz NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT execution_workspaces_owner_type_check CHECK (owner_type IN ('session', 'workflow_run', 'adhoc'))
);
CREATE UNIQUE INDEX execution_workspaces_owner_idx ON execution_workspaces (organization_id, owner_type, owner_id);
CREATE INDEX execution_workspaces_version_idx ON execution_workspaces (organization_id, current_version);

ALTER TABLE execution_workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE execution_workspaces FORCE ROW LEVEL SECURITY;
CREATE POLICY execution_workspaces_tenant_isolation_all ON execution_workspaces FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vespid_app') THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON execution_workspaces TO vespid_app;
  END IF;
END $$;
