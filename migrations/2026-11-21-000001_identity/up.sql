-- Identity and tenancy: users, organizations, memberships, invitations, auth sessions, OAuth state,
-- connector secrets and credit balances, with strict row-level security.
--
-- Runs as the owner role. The application connects as `vespid_app` (created by scripts/deps.sh), which owns
-- nothing, is not superuser and has no BYPASSRLS; FORCE ROW LEVEL SECURITY makes policies bind the owner too.

CREATE SCHEMA IF NOT EXISTS app;

-- Empty or unset context means NULL, and NULL never equals a row's id: no context, no rows.
CREATE OR REPLACE FUNCTION app.current_org_uuid() RETURNS uuid
  LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('app.current_org_id', true), '')::uuid $$;
CREATE OR REPLACE FUNCTION app.current_user_uuid() RETURNS uuid
  LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('app.current_user_id', true), '')::uuid $$;

CREATE TABLE roles (
  key text PRIMARY KEY,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO roles (key, name) VALUES ('owner', 'Owner'), ('admin', 'Admin'), ('member', 'Member')
  ON CONFLICT DO NOTHING;

CREATE TABLE users (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email text NOT NULL,
  password_hash text NOT NULL,
  display_name text NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_unique ON users (lower(email));

CREATE TABLE organizations (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  slug text NOT NULL UNIQUE,
  name text NOT NULL,
  settings jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  role_key text NOT NULL REFERENCES roles(key) ON DELETE RESTRICT,
  created_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT memberships_org_user_unique UNIQUE (organization_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE organization_invitations (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  email text NOT NULL,
  role_key text NOT NULL REFERENCES roles(key) ON DELETE RESTRICT,
  invited_by_user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
  -- SHA-256 hex of the full invitation token; the plaintext is shown to the inviter once.
  token text NOT NULL UNIQUE,
  status text NOT NULL DEFAULT 'pending',
  expires_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT invitations_status_check CHECK (status IN ('pending', 'accepted', 'expired', 'revoked')),
  CONSTRAINT invitations_role_not_owner CHECK (role_key <> 'owner')
);
CREATE UNIQUE INDEX invites_org_email_pending_unique
  ON organization_invitations (organization_id, email) WHERE status = 'pending';

CREATE TABLE auth_sessions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  refresh_token_hash text NOT NULL,
  expires_at timestamptz NOT NULL,
  -- A session never outlives this, however often it is refreshed.
  absolute_expires_at timestamptz NOT NULL,
  revoked_at timestamptz NULL,
  user_agent text NULL,
  ip text NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_sessions_user_id_idx ON auth_sessions (user_id);
CREATE UNIQUE INDEX auth_sessions_refresh_token_hash_unique ON auth_sessions (refresh_token_hash);

-- OAuth state, PKCE verifier and nonce, keyed by the SHA-256 of the state; single use, short-lived.
CREATE TABLE oauth_states (
  state_hash text PRIMARY KEY,
  provider text NOT NULL,
  code_verifier text NOT NULL,
  nonce text NOT NULL,
  expires_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_states_expires_idx ON oauth_states (expires_at);

CREATE TABLE connector_secrets (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  connector_id text NOT NULL,
  name text NOT NULL,
  kek_id text NOT NULL,
  enc_alg text NOT NULL DEFAULT 'aes-256-gcm',
  dek_ciphertext bytea NOT NULL,
  dek_iv bytea NOT NULL,
  dek_tag bytea NOT NULL,
  secret_ciphertext bytea NOT NULL,
  secret_iv bytea NOT NULL,
  secret_tag bytea NOT NULL,
  created_by_user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
  updated_by_user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT connector_secrets_org_connector_name_unique UNIQUE (organization_id, connector_id, name)
);
CREATE INDEX connector_secrets_org_connector_idx ON connector_secrets (organization_id, connector_id);

CREATE TABLE organization_credit_balances (
  organization_id uuid PRIMARY KEY REFERENCES organizations(id) ON DELETE CASCADE,
  balance_credits bigint NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE organization_credit_ledger (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  delta_credits bigint NOT NULL,
  reason text NOT NULL,
  stripe_event_id text NULL,
  workflow_run_id uuid NULL,
  created_by_user_id uuid NULL REFERENCES users(id) ON DELETE SET NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX organization_credit_ledger_org_idx ON organization_credit_ledger (organization_id, created_at);

-- Row-level security. Tenant rows need org context; the user-discovery policies (a user sees their own
-- memberships and orgs) apply only when NO org context is set, so org context is a real isolation boundary.
ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE organizations FORCE ROW LEVEL SECURITY;
CREATE POLICY organizations_tenant_isolation_all ON organizations FOR ALL
  USING (id = app.current_org_uuid()) WITH CHECK (id = app.current_org_uuid());
CREATE POLICY organizations_user_membership_select ON organizations FOR SELECT
  USING (app.current_org_uuid() IS NULL AND EXISTS (
    SELECT 1 FROM memberships m
    WHERE m.organization_id = organizations.id AND m.user_id = app.current_user_uuid()));

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY memberships_tenant_isolation_all ON memberships FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());
CREATE POLICY memberships_user_self_select ON memberships FOR SELECT
  USING (app.current_org_uuid() IS NULL AND user_id = app.current_user_uuid());

ALTER TABLE organization_invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE organization_invitations FORCE ROW LEVEL SECURITY;
CREATE POLICY invitations_tenant_isolation_all ON organization_invitations FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());

ALTER TABLE auth_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY auth_sessions_user_isolation_all ON auth_sessions FOR ALL
  USING (user_id = app.current_user_uuid()) WITH CHECK (user_id = app.current_user_uuid());

ALTER TABLE connector_secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE connector_secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY connector_secrets_tenant_isolation_all ON connector_secrets FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());

ALTER TABLE organization_credit_balances ENABLE ROW LEVEL SECURITY;
ALTER TABLE organization_credit_balances FORCE ROW LEVEL SECURITY;
CREATE POLICY organization_credit_balances_tenant_isolation_all ON organization_credit_balances FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());

ALTER TABLE organization_credit_ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE organization_credit_ledger FORCE ROW LEVEL SECURITY;
CREATE POLICY organization_credit_ledger_tenant_isolation_all ON organization_credit_ledger FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());

-- Grants for the application role: DML only, nothing it could use to step around the policies.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vespid_app') THEN
    GRANT USAGE ON SCHEMA public TO vespid_app;
    GRANT USAGE ON SCHEMA app TO vespid_app;
    GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA app TO vespid_app;
    GRANT SELECT ON roles TO vespid_app;
    GRANT SELECT, INSERT, UPDATE ON users TO vespid_app;
    GRANT SELECT, INSERT, UPDATE, DELETE ON organizations, memberships, organization_invitations,
      auth_sessions, oauth_states, connector_secrets, organization_credit_balances,
      organization_credit_ledger TO vespid_app;
  ELSE
    RAISE WARNING 'role vespid_app does not exist: create it (scripts/deps.sh) and re-run the grants';
  END IF;
END $$;
