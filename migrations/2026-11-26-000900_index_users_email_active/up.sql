-- Log-in lookup by e-mail among live users; also enforces one live user per address.
CREATE UNIQUE INDEX CONCURRENTLY users_email_active_key ON users (email) WHERE deleted_at IS NULL;
