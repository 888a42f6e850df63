DROP FUNCTION IF EXISTS app.pending_sessions();
DROP TABLE IF EXISTS agent_session_events;
DROP TABLE IF EXISTS agent_sessions;
DROP FUNCTION IF EXISTS app.track_session_pending();
DROP TABLE IF EXISTS agent_session_pending;
