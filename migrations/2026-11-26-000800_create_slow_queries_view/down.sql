-- Drops slow_queries, and pg_stat_statements only if up.sql created it.
DO $migration$
DECLARE
    created boolean;
BEGIN
    created := coalesce(
        obj_description(to_regclass('slow_queries'), 'pg_class') LIKE '%pgops created pg_stat_statements: yes%',
        false);
    DROP VIEW IF EXISTS slow_queries;
    IF created THEN
        DROP EXTENSION pg_stat_statements;
    END IF;
END
$migration$;
