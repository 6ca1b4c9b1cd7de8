//! Catalog queries more than one crate asks.

/// The database's `limit` largest tables (plain, materialized and partitioned), with indexes
/// and TOAST, as rows `schema`, `table`, `bytes` (bigint), largest first: exact sizes of the
/// `candidates` tables `pg_class.relpages` (kept by VACUUM and ANALYZE) ranks first, not a
/// `stat()` of every file of every table.
pub fn largest_tables(limit: usize, candidates: usize) -> String {
    format!(
        "SELECT schema, \"table\", bytes FROM (
           SELECT n.nspname::text AS schema, c.relname::text AS table,
                  pg_total_relation_size(c.oid) AS bytes
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'm', 'p')
             AND n.nspname NOT IN ('pg_catalog', 'information_schema')
             AND n.nspname NOT LIKE 'pg\\_toast%'
           ORDER BY c.relpages DESC LIMIT {candidates}) candidates
         ORDER BY bytes DESC, schema, \"table\" LIMIT {limit}"
    )
}
