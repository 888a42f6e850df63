-- Interactive agent sessions (issue 10; gateway spec §4 and §6, merged into their final shape).
--
-- `agent_sessions` holds a session's configuration, the brain's bookkeeping (`runtime`, `answered_seq`,
-- `last_user_seq`), the sequence counter of its events (`last_seq`, bumped under `SELECT … FOR UPDATE`)
-- and its LLM usage totals. `agent_session_events` is the append-only log, numbered per session from 0;
-- a user message sent with an idempotency key keeps the key so a retry returns the first event.
-- No legacy foreign keys: there are no toolsets or v1 agents in this implementation (`toolset_id` and
-- `pinned_agent_id` are plain uuid columns).
CREATE TABLE agent_sessions (
  id uuid PRIMARY KEY DEFAULT app.uuid_v7(),
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  created_by_user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  title text NOT NULL DEFAULT '',
  status text NOT NULL DEFAULT 'active',
  pinned_agent_id uuid NULL,
  executor_selector jsonb NULL,
  selector_tag text NULL,
  selector_group text NULL,
  engine_id text NOT NULL DEFAULT 'gateway.loop.v2',
  toolset_id uuid NULL,
  llm_provider text NOT NULL DEFAULT 'openai',
  llm_model text NOT NULL DEFAULT 'gpt-4.1-mini',
  llm_secret_id uuid NULL REFERENCES connector_secrets(id) ON DELETE SET NULL,
  tool_calling text NOT NULL DEFAULT 'native',
  tools_allow jsonb NOT NULL DEFAULT '[]'::jsonb,
  limits jsonb NOT NULL DEFAULT '{}'::jsonb,
  prompt_system text NULL,
  prompt_instructions text NOT NULL DEFAULT '',
  runtime jsonb NOT NULL DEFAULT '{}'::jsonb,
  last_seq integer NOT NULL DEFAULT -1,
  answered_seq integer NOT NULL DEFAULT 0,
  last_user_seq integer NOT NULL DEFAULT -1,
  llm_calls bigint NOT NULL DEFAULT 0,
  input_tokens bigint NOT NULL DEFAULT 0,
  output_tokens bigint NOT NULL DEFAULT 0,
  cost_micros bigint NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  last_activity_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  CONSTRAINT agent_sessions_status_check CHECK (status IN ('active', 'archived')),
  CONSTRAINT agent_sessions_engine_check
    CHECK (engine_id IN ('gateway.loop.v2', 'gateway.codex.v2', 'gateway.claude.v2')),
  CONSTRAINT agent_sessions_provider_check CHECK (llm_provider IN ('openai', 'anthropic', 'gemini')),
  CONSTRAINT agent_sessions_tool_calling_check CHECK (tool_calling IN ('native', 'json'))
);
CREATE INDEX agent_sessions_org_updated_idx ON agent_sessions (organization_id, updated_at DESC, id DESC);

ALTER TABLE agent_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY agent_sessions_tenant_isolation ON agent_sessions FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());

CREATE TABLE agent_session_events (
  id uuid PRIMARY KEY DEFAULT app.uuid_v7(),
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  session_id uuid NOT NULL REFERENCES agent_sessions(id) ON DELETE CASCADE,
  seq integer NOT NULL,
  event_type text NOT NULL,
  level text NOT NULL DEFAULT 'info',
  payload jsonb NULL,
  idempotency_key text NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  CONSTRAINT agent_session_events_level_check CHECK (level IN ('info', 'warn', 'error')),
  CONSTRAINT agent_session_events_key_length CHECK (char_length(idempotency_key) BETWEEN 1 AND 200)
);
CREATE UNIQUE INDEX agent_session_events_seq_idx ON agent_session_events (session_id, seq);
CREATE INDEX agent_session_events_org_idx ON agent_session_events (organization_id, session_id, seq);
-- `session_send` dedupe (Improve of §4.2): one event per key and session.
CREATE UNIQUE INDEX agent_session_events_key_idx ON agent_session_events (session_id, idempotency_key)
  WHERE idempotency_key IS NOT NULL;

ALTER TABLE agent_session_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_session_events FORCE ROW LEVEL SECURITY;
CREATE POLICY agent_session_events_tenant_isolation ON agent_session_events FOR ALL
  USING (organization_id = app.current_org_uuid()) WITH CHECK (organization_id = app.current_org_uuid());

-- Sessions with a user message not answered yet, across orgs, for the brain's sweeper (crash recovery).
-- As for runs and triggers: an index table the application role cannot read, kept by a trigger, read
-- through one definer function.
CREATE TABLE agent_session_pending (
  session_id uuid PRIMARY KEY,
  organization_id uuid NOT NULL
);

CREATE OR REPLACE FUNCTION app.track_session_pending() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    DELETE FROM agent_session_pending WHERE session_id = OLD.id;
    RETURN NULL;
  END IF;
  IF NEW.last_user_seq > NEW.answered_seq THEN
    INSERT INTO agent_session_pending (session_id, organization_id) VALUES (NEW.id, NEW.organization_id)
    ON CONFLICT (session_id) DO NOTHING;
  ELSE
    DELETE FROM agent_session_pending WHERE session_id = NEW.id;
  END IF;
  RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION app.track_session_pending() FROM PUBLIC;
CREATE TRIGGER agent_sessions_track_pending
  AFTER INSERT OR UPDATE OF last_user_seq, answered_seq OR DELETE ON agent_sessions
  FOR EACH ROW EXECUTE FUNCTION app.track_session_pending();

CREATE OR REPLACE FUNCTION app.pending_sessions()
  RETURNS TABLE (organization_id uuid, session_id uuid)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT organization_id, session_id FROM agent_session_pending ORDER BY session_id
$$;
REVOKE EXECUTE ON FUNCTION app.pending_sessions() FROM PUBLIC;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vespid_app') THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON agent_sessions TO vespid_app;
    GRANT SELECT, INSERT ON agent_session_events TO vespid_app;
    GRANT EXECUTE ON FUNCTION app.pending_sessions() TO vespid_app;
  END IF;
END $$;
