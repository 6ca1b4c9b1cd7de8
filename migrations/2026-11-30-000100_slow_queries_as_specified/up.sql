-- slow_queries as the service specifies it: query, calls, total_exec_time, mean_exec_time,
-- max_exec_time, stddev_exec_time and rows (pg_stat_statements' own names and units,
-- milliseconds), then queryid, role_name, database_name and cache_hit_pct. The view lists
-- statements averaging over one second, slowest first; slow_queries(threshold_ms) takes
-- another threshold. Skipped where the earlier migration found no pg_stat_statements. The
-- view keeps the earlier one's comment, which says whether pgops created the extension.
DO $migration$
DECLARE
    ext_schema text;
    created text;
BEGIN
    IF to_regclass('slow_queries') IS NULL THEN
        RAISE NOTICE 'slow_queries does not exist (no pg_stat_statements when it was created); nothing to change';
        RETURN;
    END IF;
    SELECT extnamespace::regnamespace::text INTO ext_schema
    FROM pg_extension WHERE extname = 'pg_stat_statements';
    created := CASE
        WHEN obj_description(to_regclass('slow_queries'), 'pg_class') LIKE '%pgops created pg_stat_statements: yes%'
        THEN 'yes' ELSE 'no' END;

    DROP VIEW slow_queries;

    EXECUTE format($function$
        CREATE FUNCTION slow_queries(threshold_ms double precision DEFAULT 1000)
        RETURNS TABLE (
            query text,
            calls bigint,
            total_exec_time double precision,
            mean_exec_time double precision,
            max_exec_time double precision,
            stddev_exec_time double precision,
            rows bigint,
            queryid bigint,
            role_name name,
            database_name name,
            cache_hit_pct numeric
        )
        LANGUAGE sql STABLE
        AS $body$
            SELECT s.query,
                   s.calls,
                   s.total_exec_time,
                   s.mean_exec_time,
                   s.max_exec_time,
                   s.stddev_exec_time,
                   s.rows,
                   s.queryid,
                   r.rolname,
                   d.datname,
                   round(100.0 * s.shared_blks_hit / nullif(s.shared_blks_hit + s.shared_blks_read, 0), 2)
            FROM %I.pg_stat_statements s
            LEFT JOIN pg_roles r ON r.oid = s.userid
            LEFT JOIN pg_database d ON d.oid = s.dbid
            WHERE s.mean_exec_time > $1
            ORDER BY s.mean_exec_time DESC
        $body$
    $function$, ext_schema);

    CREATE VIEW slow_queries AS SELECT * FROM slow_queries();

    COMMENT ON FUNCTION slow_queries(double precision) IS
        'Statements whose mean execution time is above threshold_ms (default 1000), slowest first.';
    EXECUTE format('COMMENT ON VIEW slow_queries IS %L',
        'Statements with a mean execution time above 1 s, slowest first; slow_queries(threshold_ms) for another threshold. '
        || 'pgops created pg_stat_statements: ' || created);
END
$migration$;
