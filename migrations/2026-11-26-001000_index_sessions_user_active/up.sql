-- A user's active (not revoked) sessions, newest expiry first.
CREATE INDEX CONCURRENTLY sessions_user_active_idx ON sessions (user_id, expires_at DESC) WHERE revoked_at IS NULL;
