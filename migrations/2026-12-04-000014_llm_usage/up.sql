-- LLM usage (issue 10): one row per call to a language model, by a session turn or a workflow's
-- `agent.run` node: who paid (the org), what for (session, or run and node), which provider and model, the
-- tokens in and out as the provider reported them, the call's latency and its estimated cost in micro-USD
-- (from the price table in config). Owners and admins read the aggregates at `GET /v1/orgs/{orgId}/usage`;
-- the org's monthly token budget is checked against the current month's rows. Append-only for the
-- application (no UPDATE or DELETE grant).
--
-- `session_id` has no foreign key: the sessions table arrives in migration 000013 on another branch, and a
-- usage row outliving its session is fine (it is still what the org spent). `run_id` has none either, for
-- the same reason as runs' own history: usage is accounting, not a child of the run.
CREATE TABLE llm_usage (
  id uuid PRIMARY KEY DEFAULT app.uuid_v7(),
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  session_id uuid NULL,
  run_id uuid NULL,
  node_id text NULL,
  provider text NOT NULL,
  model text NOT NULL,
  input_tokens bigint NOT NULL,
  output_tokens bigint NOT NULL,
  latency_ms bigint NOT NULL,
  cost_micros bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT llm_usage_counts_check CHECK (
    input_tokens >= 0 AND output_tokens >= 0 AND latency_ms >= 0 AND cost_micros >= 0)
);
-- The month's token sum for the budget check reads this index alone (the token columns are included).
CREATE INDEX llm_usage_org_created_idx ON llm_usage (organization_id, created_at)
  INCLUDE (input_tokens, output_tokens);
CREATE INDEX llm_usage_org_session_idx ON llm_usage (organization_id, session_id)
  WHERE session_id IS NOT NULL;

ALTER TABLE llm_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE llm_usage FORCE ROW LEVEL SECURITY;
CREATE POLICY llm_usage_tenant_isolation_all ON llm_usage FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vespid_app') THEN
    GRANT SELECT, INSERT ON llm_usage TO vespid_app;
  ELSE
    RAISE WARNING 'role vespid_app does not exist: create it (scripts/deps.sh) and re-run the grants';
  END IF;
END $$;
