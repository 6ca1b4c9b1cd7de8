DROP INDEX CONCURRENTLY users_email_active_key;
