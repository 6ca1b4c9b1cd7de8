//! A comparable picture of a database's schema, read from the system catalogs: one sorted
//! line per object (schemas, extensions, relations, columns, constraints, indexes, views,
//! sequences, functions, triggers, types, policies, comments). The runner's own bookkeeping
//! tables and objects that belong to extensions are left out.

use std::{collections::BTreeSet, fmt};

use diesel::{PgConnection, QueryableByName, RunQueryDsl, sql_types::Text};

use crate::{DIESEL_TABLE, Error, LEDGER_TABLE, Result};

/// The schema of one database, as sorted lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    lines: BTreeSet<String>,
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

/// Schemas that hold user objects.
const USER_SCHEMA: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

/// Objects of `pg_class` that are not the runner's bookkeeping and not part of an extension.
fn own_class(alias: &str) -> String {
    format!(
        "{alias}.relname NOT IN ('{DIESEL_TABLE}', '{LEDGER_TABLE}', '{DIESEL_TABLE}_pkey', '{LEDGER_TABLE}_pkey') \
         AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                         AND d.objid = {alias}.oid AND d.deptype = 'e')"
    )
}

fn queries() -> Vec<(&'static str, String)> {
    let own_c = own_class("c");
    vec![
        ("schemas", format!("SELECT 'schema ' || n.nspname || ' owner=' || pg_get_userbyid(n.nspowner) AS line FROM pg_namespace n WHERE {USER_SCHEMA}")),
        ("extensions", "SELECT format('extension %s schema=%s', extname, extnamespace::regnamespace) AS line FROM pg_extension".into()),
        ("relations", format!(
            "SELECT format('relation %I.%I kind=%s persistence=%s owner=%s acl=%s rls=%s', n.nspname, c.relname, c.relkind,
                     c.relpersistence, pg_get_userbyid(c.relowner), coalesce(c.relacl::text, ''), c.relrowsecurity) AS line
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMA} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {own_c}")),
        ("columns", format!(
            "SELECT format('column %I.%I #%s %I %s not_null=%s default=%s identity=%s generated=%s collation=%s',
                     n.nspname, c.relname, row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname,
                     format_type(a.atttypid, a.atttypmod), a.attnotnull, coalesce(pg_get_expr(ad.adbin, ad.adrelid), ''),
                     a.attidentity, a.attgenerated, coalesce(co.collname, '')) AS line
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
             LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100
             WHERE a.attnum > 0 AND NOT a.attisdropped AND {USER_SCHEMA}
               AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c') AND {own_c}")),
        ("constraints", format!(
            "SELECT format('constraint %I.%I %I %s validated=%s deferrable=%s deferred=%s', n.nspname,
                     coalesce(c.relname, t.typname), con.conname, pg_get_constraintdef(con.oid, true),
                     con.convalidated, con.condeferrable, con.condeferred) AS line
             FROM pg_constraint con
             JOIN pg_namespace n ON n.oid = con.connamespace
             LEFT JOIN pg_class c ON c.oid = con.conrelid
             LEFT JOIN pg_type t ON t.oid = con.contypid
             WHERE {USER_SCHEMA} AND (c.oid IS NULL OR ({own_c}))")),
        ("indexes", format!(
            "SELECT format('index %s valid=%s clustered=%s', pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisclustered) AS line
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMA} AND {own_c}")),
        ("views", format!(
            "SELECT format('view %I.%I %s', n.nspname, c.relname, pg_get_viewdef(c.oid, true)) AS line
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMA} AND c.relkind IN ('v', 'm') AND {own_c}")),
        ("sequences", format!(
            "SELECT format('sequence %I.%I type=%s start=%s increment=%s min=%s max=%s cache=%s cycle=%s owned_by=%s',
                     n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
                     s.seqcache, s.seqcycle,
                     coalesce((SELECT format('%s.%s', d.refobjid::regclass, a.attname) FROM pg_depend d
                               JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                               WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
                               LIMIT 1), '')) AS line
             FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMA} AND {own_c}")),
        ("functions", format!(
            "SELECT format('function %I.%I(%s) kind=%s %s', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
                     p.prokind, CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) ELSE '' END) AS line
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE {USER_SCHEMA}
               AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')")),
        ("triggers", format!(
            "SELECT format('trigger %s enabled=%s', pg_get_triggerdef(t.oid, true), t.tgenabled) AS line
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE NOT t.tgisinternal AND {USER_SCHEMA} AND {own_c}")),
        ("types", format!(
            "SELECT format('type %I.%I kind=%s %s', n.nspname, t.typname, t.typtype,
                     CASE t.typtype
                       WHEN 'e' THEN (SELECT string_agg(quote_literal(e.enumlabel), ',' ORDER BY e.enumsortorder)
                                      FROM pg_enum e WHERE e.enumtypid = t.oid)
                       WHEN 'd' THEN format_type(t.typbasetype, t.typtypmod) || ' not_null=' || t.typnotnull
                                     || ' default=' || coalesce(t.typdefault, '')
                       ELSE '' END) AS line
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE {USER_SCHEMA} AND t.typtype IN ('e', 'd', 'r', 'm')
               AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')")),
        ("policies", format!(
            "SELECT format('policy %I on %I.%I cmd=%s permissive=%s roles=%s using=%s check=%s', p.polname, n.nspname, c.relname,
                     p.polcmd, p.polpermissive, p.polroles::text, coalesce(pg_get_expr(p.polqual, p.polrelid), ''),
                     coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')) AS line
             FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMA}")),
        ("comments", format!(
            "SELECT format('comment %s: %s', pg_describe_object(ds.classoid, ds.objoid, ds.objsubid), ds.description) AS line
             FROM pg_description ds
             JOIN pg_class c ON ds.classoid = 'pg_class'::regclass AND c.oid = ds.objoid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMA} AND {own_c}
             UNION ALL
             SELECT format('comment %s: %s', pg_describe_object(ds.classoid, ds.objoid, ds.objsubid), ds.description)
             FROM pg_description ds
             JOIN pg_proc p ON ds.classoid = 'pg_proc'::regclass AND p.oid = ds.objoid
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE {USER_SCHEMA}
               AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')")),
    ]
}

/// Reads the schema of the connected database.
pub fn snapshot(conn: &mut PgConnection) -> Result<Snapshot> {
    let mut lines = BTreeSet::new();
    for (what, query) in queries() {
        let rows = diesel::sql_query(query)
            .load::<Line>(conn)
            .map_err(Error::db(format!("reading the schema ({what})")))?;
        lines.extend(rows.into_iter().map(|r| r.line));
    }
    Ok(Snapshot { lines })
}

impl Snapshot {
    /// The lines, sorted.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    /// Lines only in `self` (prefixed `-`) and only in `other` (prefixed `+`); empty when equal.
    pub fn diff(&self, other: &Snapshot) -> String {
        let mut out = String::new();
        for line in self.lines.difference(&other.lines) {
            out.push_str(&format!("  - {line}\n"));
        }
        for line in other.lines.difference(&self.lines) {
            out.push_str(&format!("  + {line}\n"));
        }
        out
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}
