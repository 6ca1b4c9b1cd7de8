-- A user's audit trail, newest first; also serves the user_id foreign key.
CREATE INDEX CONCURRENTLY audit_logs_user_created_idx ON audit_logs (user_id, created_at DESC);
