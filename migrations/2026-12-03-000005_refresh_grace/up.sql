-- Two browser tabs refreshing with the same cookie at once must not look like token theft. The rotation
-- remembers the token it replaced and when, plus the new token sealed under a key derived from the old
-- one (only a holder of the old token can open it), so a sibling request within a short grace window
-- gets the same rotated session instead of revoking it.
ALTER TABLE auth_sessions
  ADD COLUMN previous_refresh_token_hash text NULL,
  ADD COLUMN rotated_at timestamptz NULL,
  ADD COLUMN grace_refresh_token bytea NULL;
