-- Enables pg_stat_statements where the server has it (Debian: postgresql-contrib) and the
-- migrating role may create it, and adds slow_queries: statements whose mean execution time
-- is above 100 ms, slowest first, top 50. Querying the view also needs
-- shared_preload_libraries = 'pg_stat_statements'. The view's comment records whether this
-- migration created the extension, so down.sql removes only what up.sql added.
DO $migration$
DECLARE
    created boolean := false;
    ext_schema text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_stat_statements') THEN
        IF NOT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pg_stat_statements') THEN
            RAISE NOTICE 'pg_stat_statements is not installed on this server (Debian: postgresql-contrib); slow_queries not created';
            RETURN;
        END IF;
        BEGIN
            CREATE EXTENSION pg_stat_statements;
            created := true;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'this role may not create pg_stat_statements (a superuser must run CREATE EXTENSION pg_stat_statements); slow_queries not created';
            RETURN;
        END;
    END IF;

    SELECT extnamespace::regnamespace::text INTO ext_schema
    FROM pg_extension WHERE extname = 'pg_stat_statements';

    EXECUTE format($view$
        CREATE VIEW slow_queries AS
        SELECT s.queryid,
               r.rolname AS role_name,
               d.datname AS database_name,
               s.calls,
               round(s.total_exec_time::numeric, 2) AS total_ms,
               round(s.mean_exec_time::numeric, 2) AS mean_ms,
               round(s.max_exec_time::numeric, 2) AS max_ms,
               s.rows,
               round(100.0 * s.shared_blks_hit / nullif(s.shared_blks_hit + s.shared_blks_read, 0), 2) AS cache_hit_pct,
               s.query
        FROM %I.pg_stat_statements s
        LEFT JOIN pg_roles r ON r.oid = s.userid
        LEFT JOIN pg_database d ON d.oid = s.dbid
        WHERE s.mean_exec_time > 100
        ORDER BY s.mean_exec_time DESC
        LIMIT 50
    $view$, ext_schema);

    EXECUTE format('COMMENT ON VIEW slow_queries IS %L',
        'Statements with a mean execution time above 100 ms, slowest first (top 50). '
        || 'pgops created pg_stat_statements: ' || CASE WHEN created THEN 'yes' ELSE 'no' END);
END
$migration$;
