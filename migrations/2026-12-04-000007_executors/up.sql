-- Executors (node agents): the org's paired machines, their single-use pairing tokens, and the operator's
-- managed executors. Tokens are stored only as SHA-256 hex of the full `<prefix>.<secret>` string.
--
-- Improve over the original: strict row-level security on the org tables (no context, no rows; the
-- original let a connection without org context read every tenant's executors). Every lookup here knows
-- its org: a pairing or executor token starts with the org id, so the gateway looks a BYON token up under
-- that org's context.

CREATE TABLE organization_executors (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  name text NOT NULL,
  token_hash text NOT NULL,
  revoked_at timestamptz NULL,
  last_seen_at timestamptz NULL,
  capabilities jsonb NULL,
  labels text[] NOT NULL DEFAULT '{}',
  created_by_user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX organization_executors_token_hash_idx ON organization_executors (token_hash);
CREATE INDEX organization_executors_org_created_idx ON organization_executors (organization_id, created_at);
CREATE INDEX organization_executors_labels_idx ON organization_executors USING gin (labels);

CREATE TABLE executor_pairing_tokens (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  token_hash text NOT NULL,
  -- Chosen by the admin who made the token; they become the executor's routing labels at pairing.
  labels text[] NOT NULL DEFAULT '{}',
  expires_at timestamptz NOT NULL,
  used_at timestamptz NULL,
  created_by_user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX executor_pairing_tokens_token_hash_idx ON executor_pairing_tokens (token_hash);
CREATE INDEX executor_pairing_tokens_org_created_idx ON executor_pairing_tokens (organization_id, created_at);

-- Operator-run executors shared by every org (no tenant data, no RLS). No API creates them: operators
-- insert rows (the token prefix is the executor id).
CREATE TABLE managed_executors (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL DEFAULT '',
  labels text[] NOT NULL DEFAULT '{}',
  capabilities jsonb NULL,
  token_hash text NULL,
  revoked_at timestamptz NULL,
  last_seen_at timestamptz NULL,
  max_in_flight integer NOT NULL DEFAULT 50,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX managed_executors_token_hash_idx ON managed_executors (token_hash) WHERE token_hash IS NOT NULL;
CREATE INDEX managed_executors_list_idx ON managed_executors (created_at DESC, id DESC);
CREATE INDEX managed_executors_labels_idx ON managed_executors USING gin (labels);

ALTER TABLE organization_executors ENABLE ROW LEVEL SECURITY;
ALTER TABLE organization_executors FORCE ROW LEVEL SECURITY;
CREATE POLICY organization_executors_tenant_isolation_all ON organization_executors FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());
ALTER TABLE executor_pairing_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE executor_pairing_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY executor_pairing_tokens_tenant_isolation_all ON executor_pairing_tokens FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vespid_app') THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON organization_executors, executor_pairing_tokens TO vespid_app;
    -- The gateway reads managed executors by token and touches last_seen_at; only operators add them.
    GRANT SELECT, UPDATE (last_seen_at) ON managed_executors TO vespid_app;
  ELSE
    RAISE WARNING 'role vespid_app does not exist: create it (scripts/deps.sh) and re-run the grants';
  END IF;
END $$;
