-- Puts back the earlier slow_queries (mean above 100 ms, *_ms columns, top 50) with the
-- comment that says whether pgops created pg_stat_statements, and drops the function.
DO $migration$
DECLARE
    ext_schema text;
    created text;
BEGIN
    IF to_regclass('slow_queries') IS NULL THEN
        RETURN;
    END IF;
    SELECT extnamespace::regnamespace::text INTO ext_schema
    FROM pg_extension WHERE extname = 'pg_stat_statements';
    created := CASE
        WHEN obj_description(to_regclass('slow_queries'), 'pg_class') LIKE '%pgops created pg_stat_statements: yes%'
        THEN 'yes' ELSE 'no' END;

    DROP VIEW slow_queries;
    DROP FUNCTION slow_queries(double precision);

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
        || 'pgops created pg_stat_statements: ' || created);
END
$migration$;
