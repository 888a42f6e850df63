ALTER TABLE auth_sessions
  DROP COLUMN IF EXISTS grace_refresh_token,
  DROP COLUMN IF EXISTS rotated_at,
  DROP COLUMN IF EXISTS previous_refresh_token_hash;
