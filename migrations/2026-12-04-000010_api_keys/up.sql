-- API keys: org-scoped credentials for REST clients and CI jobs. A key is
-- `vsk_<orgId hex><keyId hex>_<secret>`; only the SHA-256 hex of the whole key is stored, and the key is
-- shown once, when it is created. The org id inside the key is what lets a request be authenticated under
-- that org's row-level-security context, so no lookup ever needs to see another tenant's rows.
--
-- `creator_role` is the creating member's role at creation: a key never acts above it (nor above the
-- creator's current role, nor above what its scopes need; see src/domain/apikeys).

CREATE TABLE api_keys (
  id uuid PRIMARY KEY,
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  name text NOT NULL,
  -- The public part of the key (everything before the secret), shown in listings.
  prefix text NOT NULL,
  secret_hash text NOT NULL,
  scopes text[] NOT NULL,
  creator_role text NOT NULL REFERENCES roles(key) ON DELETE RESTRICT,
  created_by_user_id uuid NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NULL,
  -- Written in batches (at most once per flush interval per key and instance), never per request.
  last_used_at timestamptz NULL,
  revoked_at timestamptz NULL,
  CONSTRAINT api_keys_name_length CHECK (char_length(name) BETWEEN 1 AND 120),
  CONSTRAINT api_keys_scopes_present CHECK (cardinality(scopes) >= 1)
);
CREATE UNIQUE INDEX api_keys_secret_hash_idx ON api_keys (secret_hash);
CREATE INDEX api_keys_org_created_idx ON api_keys (organization_id, created_at DESC, id DESC);

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY api_keys_tenant_isolation_all ON api_keys FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vespid_app') THEN
    -- No DELETE: a key is revoked (revoked_at), its row stays as the record of who could call the API.
    GRANT SELECT, INSERT, UPDATE ON api_keys TO vespid_app;
  ELSE
    RAISE WARNING 'role vespid_app does not exist: create it (scripts/deps.sh) and re-run the grants';
  END IF;
END $$;
