//! Index advice: unused, duplicate, overlapping and invalid indexes, foreign keys without a
//! supporting index, and tables read mostly by sequential scans. The catalog is read once;
//! the judgements are pure functions over it.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use pgops_pg::{quote_ident, rows::rows};

use crate::Result;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look; does not fail the command.
    Warn,
    /// Wrong or wasteful for certain; `pgops insights indexes` exits 1.
    Fail,
}

/// What kind of index problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexIssue {
    /// Never scanned since statistics began (primary keys and unique indexes excluded).
    Unused,
    /// Same table, columns, operator classes, expressions and predicate as another index.
    Duplicate,
    /// Its columns are a leading prefix of another index's: the other serves its queries.
    Overlapping,
    /// Left invalid by a failed `CREATE INDEX CONCURRENTLY`: maintained on writes, never used.
    Invalid,
    /// A foreign key whose columns lead no index: deletes on the parent scan the child.
    MissingFkIndex,
    /// A large table read mostly by sequential scans.
    SeqScanHeavy,
}

/// One piece of advice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexFinding {
    /// What kind.
    pub issue: IndexIssue,
    /// How bad.
    pub severity: Severity,
    /// The table, schema-qualified.
    pub table: String,
    /// The index, schema-qualified, when the finding is about one.
    pub index: Option<String>,
    /// What was found, in a sentence.
    pub detail: String,
    /// The statement or action that fixes it.
    pub fix: String,
    /// Bytes the index takes (what dropping it gives back).
    pub bytes: Option<i64>,
}

/// An index as read from the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexInfo {
    /// Schema of the table.
    pub schema: String,
    /// The table.
    pub table: String,
    /// The index.
    pub name: String,
    /// Access method (`btree`, `gin`, ...).
    pub method: String,
    /// Column numbers, key columns first, then INCLUDE columns (0 for an expression).
    pub columns: Vec<i32>,
    /// How many of `columns` are key columns.
    pub key_columns: i32,
    /// Operator classes of the key columns.
    pub opclasses: Vec<i64>,
    /// Index expressions, as `pg_get_expr` prints them.
    pub expressions: Option<String>,
    /// Partial-index predicate.
    pub predicate: Option<String>,
    /// Unique index.
    pub is_unique: bool,
    /// Primary key.
    pub is_primary: bool,
    /// Valid (usable by queries).
    pub is_valid: bool,
    /// Backs a primary key, unique or exclusion constraint.
    pub backs_constraint: bool,
    /// Size in bytes.
    pub bytes: i64,
    /// Index scans since statistics began.
    pub scans: i64,
}

/// A foreign key as read from the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForeignKey {
    /// Schema of the referencing table.
    pub schema: String,
    /// The referencing table.
    pub table: String,
    /// The constraint.
    pub name: String,
    /// Referencing column numbers.
    pub columns: Vec<i32>,
    /// Referencing column names, same order.
    pub column_names: Vec<String>,
    /// The referenced table.
    pub referenced: String,
}

/// A table's scan statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableScans {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Sequential scans started.
    pub seq_scan: i64,
    /// Index scans started.
    pub idx_scan: i64,
    /// Estimated live rows.
    pub live_rows: i64,
}

/// Thresholds of the advice.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// A table with at least this many live rows is large enough to matter.
    pub large_table_rows: i64,
    /// Below this share of index scans a large table is "read mostly by sequential scans".
    pub min_index_scan_share: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            large_table_rows: 10_000,
            min_index_scan_share: 0.95,
        }
    }
}

/// What the catalog says, read once.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Catalog {
    /// Every index outside the system schemas.
    pub indexes: Vec<IndexInfo>,
    /// Every foreign key outside the system schemas.
    pub foreign_keys: Vec<ForeignKey>,
    /// Scan statistics of user tables.
    pub tables: Vec<TableScans>,
    /// When this database's statistics were last reset, or the server started if never.
    pub stats_since: Option<String>,
}

/// The whole advice: findings, worst first.
#[derive(Debug, Clone, Serialize)]
pub struct Advice {
    /// Since when scans are counted (on this server only: replicas count their own).
    pub stats_since: Option<String>,
    /// The findings.
    pub findings: Vec<IndexFinding>,
}

/// Reads the catalog of the connected database.
pub fn read_catalog(conn: &mut diesel::PgConnection) -> Result<Catalog> {
    let indexes = rows(
        conn,
        // Index scans from the statistics function, not pg_stat_all_indexes, which computes
        // every counter of every index (and of the catalog's) to give one; the constraints
        // as one hashed set (pg_constraint has no index on conindid: a correlated lookup
        // reads the whole catalog once per index).
        "SELECT n.nspname AS schema, t.relname AS table, c.relname AS name, am.amname AS method,
                i.indkey::int2[]::int4[] AS columns, i.indnkeyatts::int4 AS key_columns,
                i.indclass::oid[]::int8[] AS opclasses,
                pg_get_expr(i.indexprs, i.indrelid) AS expressions,
                pg_get_expr(i.indpred, i.indrelid) AS predicate,
                i.indisunique AS is_unique, i.indisprimary AS is_primary, i.indisvalid AS is_valid,
                i.indexrelid IN (SELECT k.conindid FROM pg_constraint k
                                 WHERE k.contype IN ('p', 'u', 'x')) AS backs_constraint,
                pg_relation_size(i.indexrelid) AS bytes,
                pg_stat_get_numscans(i.indexrelid) AS scans
         FROM pg_index i
         JOIN pg_class c ON c.oid = i.indexrelid
         JOIN pg_class t ON t.oid = i.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         JOIN pg_am am ON am.oid = c.relam
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%'
         ORDER BY 1, 2, 3",
        "reading indexes",
    )?;
    let foreign_keys = rows(
        conn,
        "SELECT n.nspname AS schema, t.relname AS table, k.conname AS name,
                k.conkey::int4[] AS columns,
                ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY AS x(num, ord)
                      JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = x.num
                      ORDER BY x.ord) AS column_names,
                k.confrelid::regclass::text AS referenced
         FROM pg_constraint k
         JOIN pg_class t ON t.oid = k.conrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE k.contype = 'f' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
         ORDER BY 1, 2, 3",
        "reading foreign keys",
    )?;
    let tables = rows(
        conn,
        // The three counters pg_stat_user_tables would give, asked of the statistics
        // functions directly: the view computes twenty per table, which at 10,000 tables is
        // most of the time.
        "SELECT n.nspname AS schema, c.relname AS table,
                pg_stat_get_numscans(c.oid) AS seq_scan,
                coalesce((SELECT sum(pg_stat_get_numscans(i.indexrelid)) FROM pg_index i
                          WHERE i.indrelid = c.oid), 0)::int8 AS idx_scan,
                pg_stat_get_live_tuples(c.oid) AS live_rows
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 't', 'm', 'p')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname !~ '^pg_toast'
         ORDER BY 1, 2",
        "reading table statistics",
    )?;
    #[derive(Deserialize)]
    struct Since {
        since: Option<String>,
    }
    let since: Vec<Since> = rows(
        conn,
        "SELECT coalesce(stats_reset, pg_postmaster_start_time())::text AS since
         FROM pg_stat_database WHERE datname = current_database()",
        "reading the statistics age",
    )?;
    Ok(Catalog {
        indexes,
        foreign_keys,
        tables,
        stats_since: since.into_iter().next().and_then(|s| s.since),
    })
}

/// Reads the catalog and judges it.
pub fn advise(conn: &mut diesel::PgConnection, thresholds: Thresholds) -> Result<Advice> {
    let catalog = read_catalog(conn)?;
    Ok(judge(&catalog, thresholds))
}

/// All findings for a catalog, failures first, then by size. Pure.
pub fn judge(catalog: &Catalog, thresholds: Thresholds) -> Advice {
    let mut findings = Vec::new();
    findings.extend(invalid(&catalog.indexes));
    findings.extend(redundant(&catalog.indexes));
    findings.extend(unused(&catalog.indexes));
    findings.extend(missing_fk_indexes(&catalog.foreign_keys, &catalog.indexes));
    findings.extend(seq_scan_heavy(&catalog.tables, thresholds));
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.bytes.unwrap_or(0).cmp(&a.bytes.unwrap_or(0)))
    });
    Advice {
        stats_since: catalog.stats_since.clone(),
        findings,
    }
}

fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

fn drop_fix(index: &IndexInfo) -> String {
    if index.backs_constraint {
        format!(
            "it backs a constraint: ALTER TABLE {} DROP CONSTRAINT ... (check what depends on it first)",
            qualified(&index.schema, &index.table)
        )
    } else {
        format!(
            "DROP INDEX CONCURRENTLY {};",
            qualified(&index.schema, &index.name)
        )
    }
}

/// Invalid indexes.
pub fn invalid(indexes: &[IndexInfo]) -> Vec<IndexFinding> {
    indexes
        .iter()
        .filter(|i| !i.is_valid)
        .map(|i| IndexFinding {
            issue: IndexIssue::Invalid,
            severity: Severity::Fail,
            table: qualified(&i.schema, &i.table),
            index: Some(qualified(&i.schema, &i.name)),
            detail: format!(
                "index {} is invalid (a failed CREATE INDEX CONCURRENTLY?): every write maintains it, no query uses it",
                i.name
            ),
            fix: format!(
                "REINDEX INDEX CONCURRENTLY {} (or drop it with DROP INDEX CONCURRENTLY and create it again)",
                qualified(&i.schema, &i.name)
            ),
            bytes: Some(i.bytes),
        })
        .collect()
}

/// Exact duplicates and indexes whose key columns lead another index. For a duplicate pair,
/// the one that backs a constraint is kept.
pub fn redundant(indexes: &[IndexInfo]) -> Vec<IndexFinding> {
    let mut out = Vec::new();
    let mut reported: HashSet<(&str, &str)> = HashSet::new();
    // Only indexes of one table can be redundant with each other: compare within tables, not
    // every pair of the database (10,000 tables, 100 million pairs).
    for table in by_table(indexes.iter().filter(|i| i.is_valid)) {
        for (a, b) in table
            .iter()
            .flat_map(|a| table.iter().map(move |b| (*a, *b)))
        {
            if std::ptr::eq(a, b)
                || a.method != b.method
                || a.expressions != b.expressions
                || a.predicate != b.predicate
            {
                continue;
            }
            let keys =
                |i: &IndexInfo| i.columns[..(i.key_columns as usize).min(i.columns.len())].to_vec();
            let (ka, kb) = (keys(a), keys(b));
            let ops_a = &a.opclasses[..ka.len().min(a.opclasses.len())];
            let ops_b = &b.opclasses[..kb.len().min(b.opclasses.len())];
            let same = ka == kb && ops_a == ops_b && a.columns == b.columns;
            if same {
                // Report the pair once: drop the one that does not back a constraint, else the
                // later name.
                let drop_a = match (
                    a.backs_constraint || a.is_unique,
                    b.backs_constraint || b.is_unique,
                ) {
                    (false, true) => true,
                    (true, false) => false,
                    _ => a.name > b.name,
                };
                if drop_a && reported.insert((&a.schema, &a.name)) {
                    out.push(IndexFinding {
                        issue: IndexIssue::Duplicate,
                        severity: Severity::Fail,
                        table: qualified(&a.schema, &a.table),
                        index: Some(qualified(&a.schema, &a.name)),
                        detail: format!("index {} duplicates {}", a.name, b.name),
                        fix: drop_fix(a),
                        bytes: Some(a.bytes),
                    });
                }
                continue;
            }
            // Overlap: a's key columns are a strict prefix of b's, a enforces nothing.
            let prefix = ka.len() < kb.len()
                && kb.starts_with(&ka)
                && ops_b.starts_with(ops_a)
                && !ka.contains(&0)
                && a.method == "btree";
            if prefix
                && !a.is_unique
                && !a.backs_constraint
                && reported.insert((&a.schema, &a.name))
            {
                out.push(IndexFinding {
                    issue: IndexIssue::Overlapping,
                    severity: Severity::Warn,
                    table: qualified(&a.schema, &a.table),
                    index: Some(qualified(&a.schema, &a.name)),
                    detail: format!(
                        "the columns of {} lead {}, which can serve the same queries",
                        a.name, b.name
                    ),
                    fix: drop_fix(a),
                    bytes: Some(a.bytes),
                });
            }
        }
    }
    out
}

/// Indexes grouped by their table, the tables in the order they first appear.
fn by_table<'a>(indexes: impl Iterator<Item = &'a IndexInfo>) -> Vec<Vec<&'a IndexInfo>> {
    let mut groups: Vec<Vec<&IndexInfo>> = Vec::new();
    let mut at: HashMap<(&str, &str), usize> = HashMap::new();
    for i in indexes {
        let g = *at.entry((&i.schema, &i.table)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
}

/// Valid indexes never scanned that enforce nothing.
pub fn unused(indexes: &[IndexInfo]) -> Vec<IndexFinding> {
    indexes
        .iter()
        .filter(|i| i.is_valid && i.scans == 0 && !i.is_unique && !i.is_primary && !i.backs_constraint)
        .map(|i| IndexFinding {
            issue: IndexIssue::Unused,
            severity: Severity::Warn,
            table: qualified(&i.schema, &i.table),
            index: Some(qualified(&i.schema, &i.name)),
            detail: format!(
                "index {} has not been scanned since statistics began on this server (check replicas too: they count their own scans)",
                i.name
            ),
            fix: drop_fix(i),
            bytes: Some(i.bytes),
        })
        .collect()
}

/// Foreign keys whose columns (in any order) do not lead a valid, non-partial btree index.
pub fn missing_fk_indexes(keys: &[ForeignKey], indexes: &[IndexInfo]) -> Vec<IndexFinding> {
    let tables: HashMap<(&str, &str), Vec<&IndexInfo>> = by_table(indexes.iter())
        .into_iter()
        .map(|g| ((g[0].schema.as_str(), g[0].table.as_str()), g))
        .collect();
    keys.iter()
        .filter(|fk| {
            let on_table = tables
                .get(&(fk.schema.as_str(), fk.table.as_str()))
                .map_or(&[][..], Vec::as_slice);
            !on_table.iter().any(|i| {
                i.is_valid
                    && i.method == "btree"
                    && i.predicate.is_none()
                    && (i.key_columns as usize) >= fk.columns.len()
                    && {
                        let mut lead = i.columns[..fk.columns.len()].to_vec();
                        let mut want = fk.columns.clone();
                        lead.sort_unstable();
                        want.sort_unstable();
                        lead == want
                    }
            })
        })
        .map(|fk| {
            let columns = fk
                .column_names
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ");
            IndexFinding {
                issue: IndexIssue::MissingFkIndex,
                severity: Severity::Warn,
                table: qualified(&fk.schema, &fk.table),
                index: None,
                detail: format!(
                    "foreign key {} ({columns}) -> {} has no index leading with its columns: deleting or updating a {} row scans {}",
                    fk.name, fk.referenced, fk.referenced, fk.table
                ),
                fix: format!(
                    "CREATE INDEX CONCURRENTLY ON {} ({columns});",
                    qualified(&fk.schema, &fk.table)
                ),
                bytes: None,
            }
        })
        .collect()
}

/// Large tables whose reads are mostly sequential scans.
pub fn seq_scan_heavy(tables: &[TableScans], thresholds: Thresholds) -> Vec<IndexFinding> {
    tables
        .iter()
        .filter(|t| t.live_rows >= thresholds.large_table_rows && t.seq_scan > 0)
        .filter(|t| {
            let share = t.idx_scan as f64 / (t.idx_scan + t.seq_scan) as f64;
            share < thresholds.min_index_scan_share
        })
        .map(|t| IndexFinding {
            issue: IndexIssue::SeqScanHeavy,
            severity: Severity::Warn,
            table: qualified(&t.schema, &t.table),
            index: None,
            detail: format!(
                "{} ({} rows) had {} sequential and {} index scans",
                t.table, t.live_rows, t.seq_scan, t.idx_scan
            ),
            fix: "find its queries with `pgops insights top --by io`, then test an index with `pgops insights what-if`".into(),
            bytes: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(name: &str, columns: &[i32]) -> IndexInfo {
        IndexInfo {
            schema: "public".into(),
            table: "notes".into(),
            name: name.into(),
            method: "btree".into(),
            columns: columns.to_vec(),
            key_columns: columns.len() as i32,
            opclasses: columns.iter().map(|_| 3124).collect(),
            expressions: None,
            predicate: None,
            is_unique: false,
            is_primary: false,
            is_valid: true,
            backs_constraint: false,
            bytes: 8192,
            scans: 5,
        }
    }

    #[test]
    fn duplicates_keep_the_constraint_and_report_once() {
        let mut pkey = index("notes_pkey", &[1]);
        pkey.is_primary = true;
        pkey.is_unique = true;
        pkey.backs_constraint = true;
        let dup = index("notes_id_idx", &[1]);
        let found = redundant(&[pkey, dup]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].issue, IndexIssue::Duplicate);
        assert_eq!(found[0].index.as_deref(), Some("public.notes_id_idx"));
        assert_eq!(found[0].fix, "DROP INDEX CONCURRENTLY public.notes_id_idx;");

        let twins = redundant(&[index("a", &[2, 3]), index("b", &[2, 3])]);
        assert_eq!(twins.len(), 1);
        assert_eq!(twins[0].index.as_deref(), Some("public.b"));
    }

    #[test]
    fn same_names_in_two_schemas_are_two_findings_and_tables_never_mix() {
        let in_schema = |schema: &str, table: &str, name: &str| IndexInfo {
            schema: schema.into(),
            table: table.into(),
            ..index(name, &[2, 3])
        };
        let found = redundant(&[
            in_schema("tenant_a", "notes", "a"),
            in_schema("tenant_a", "notes", "b"),
            in_schema("tenant_b", "notes", "a"),
            in_schema("tenant_b", "notes", "b"),
            // Same columns, another table: not a duplicate of anything.
            in_schema("tenant_a", "other", "c"),
        ]);
        let dropped: Vec<_> = found.iter().filter_map(|f| f.index.as_deref()).collect();
        assert_eq!(dropped, ["tenant_a.b", "tenant_b.b"], "{found:?}");
    }

    #[test]
    fn a_prefix_overlaps_but_different_predicates_or_order_do_not() {
        let found = redundant(&[index("by_author", &[2]), index("by_author_time", &[2, 4])]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].issue, IndexIssue::Overlapping);
        assert_eq!(found[0].index.as_deref(), Some("public.by_author"));

        assert!(redundant(&[index("x", &[4]), index("y", &[2, 4])]).is_empty());
        let mut partial = index("recent", &[2]);
        partial.predicate = Some("(created_at > '2020-01-01')".into());
        assert!(redundant(&[partial, index("y", &[2, 4])]).is_empty());
        let mut unique = index("uniq", &[2]);
        unique.is_unique = true;
        assert!(redundant(&[unique, index("y", &[2, 4])]).is_empty());
        let mut gin = index("g", &[2]);
        gin.method = "gin".into();
        assert!(redundant(&[gin, index("y", &[2, 4])]).is_empty());
    }

    #[test]
    fn unused_skips_keys_and_constraints() {
        let mut idle = index("idle", &[3]);
        idle.scans = 0;
        let mut unique = index("uniq", &[4]);
        unique.scans = 0;
        unique.is_unique = true;
        let found = unused(&[idle, unique, index("busy", &[5])]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].index.as_deref(), Some("public.idle"));
    }

    #[test]
    fn foreign_keys_need_an_index_leading_with_their_columns_in_any_order() {
        let fk = ForeignKey {
            schema: "public".into(),
            table: "notes".into(),
            name: "notes_author_fk".into(),
            columns: vec![2, 3],
            column_names: vec!["org_id".into(), "author_id".into()],
            referenced: "users".into(),
        };
        let found = missing_fk_indexes(std::slice::from_ref(&fk), &[index("other", &[3])]);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].fix,
            "CREATE INDEX CONCURRENTLY ON public.notes (org_id, author_id);"
        );
        assert!(
            missing_fk_indexes(std::slice::from_ref(&fk), &[index("swapped", &[3, 2, 7])])
                .is_empty()
        );
        let mut invalid = index("broken", &[2, 3]);
        invalid.is_valid = false;
        assert_eq!(missing_fk_indexes(&[fk], &[invalid]).len(), 1);
    }

    #[test]
    fn seq_scan_heavy_needs_size_and_a_low_index_share() {
        let t = |rows, seq, idx| TableScans {
            schema: "public".into(),
            table: "t".into(),
            seq_scan: seq,
            idx_scan: idx,
            live_rows: rows,
        };
        let th = Thresholds::default();
        assert_eq!(seq_scan_heavy(&[t(50_000, 40, 60)], th).len(), 1);
        assert!(seq_scan_heavy(&[t(50_000, 1, 999)], th).is_empty());
        assert!(seq_scan_heavy(&[t(500, 40, 0)], th).is_empty());
    }

    #[test]
    fn failures_sort_first() {
        let mut bad = index("bad", &[9]);
        bad.is_valid = false;
        let mut idle = index("idle", &[3]);
        idle.scans = 0;
        idle.bytes = 1 << 30;
        let advice = judge(
            &Catalog {
                indexes: vec![idle, bad],
                ..Catalog::default()
            },
            Thresholds::default(),
        );
        assert_eq!(advice.findings[0].issue, IndexIssue::Invalid);
        assert_eq!(advice.findings[1].issue, IndexIssue::Unused);
    }
}
