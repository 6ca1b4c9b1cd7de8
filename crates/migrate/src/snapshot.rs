//! A comparable picture of a database's schema, read from the system catalogs in one query:
//! one entry per object (schemas, extensions, tables and views, columns, constraints, indexes,
//! sequences, functions, triggers, types, policies, comments), keyed by what the object is
//! (`column public.users.email`) with what it is like as the value. What pgops keeps for
//! itself (the migration ledgers, `pgops insights` snapshots) and objects that belong to
//! extensions are left out.

use std::{collections::BTreeMap, fmt};

use diesel::{PgConnection, QueryableByName, RunQueryDsl, sql_types::Text};
use serde::Serialize;

use crate::{DIESEL_TABLE, Error, LEDGER_TABLE, Result};

/// The schema of one database: object -> its definition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    objects: BTreeMap<String, String>,
}

/// One object that differs between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// What the object is: `table public.users`, `column public.users.email`,
    /// `index public.users_email_idx`, `constraint public.users.users_org_fk`.
    pub object: String,
    /// Its definition where it was expected (`None`: it should not exist).
    pub expected: Option<String>,
    /// Its definition as found (`None`: it is missing).
    pub found: Option<String>,
}

/// Tables pgops creates for itself in an application's database.
pub const PGOPS_TABLES: [&str; 5] = [
    DIESEL_TABLE,
    LEDGER_TABLE,
    "pgops_stat_snapshots",
    "pgops_stat_snapshot_entries",
    "pgops_stat_snapshot_tables",
];

#[derive(QueryableByName)]
struct Entry {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Text)]
    detail: String,
}

/// Schemas that hold user objects.
const USER_SCHEMA: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

/// Relations of `pg_class` that are not pgops's own (nor owned by one of its tables, like an
/// identity sequence) and not part of an extension.
fn own_class(alias: &str) -> String {
    let ours = PGOPS_TABLES
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{alias}.relname NOT IN ({ours}) \
         AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                         AND d.objid = {alias}.oid AND d.deptype = 'e') \
         AND NOT EXISTS (SELECT FROM pg_depend d JOIN pg_class o ON o.oid = d.refobjid \
                         WHERE d.classid = 'pg_class'::regclass AND d.objid = {alias}.oid \
                           AND d.deptype IN ('a', 'i') AND o.relname IN ({ours}))"
    )
}

/// Functions and types that are not part of an extension.
fn not_extension(catalog: &str, alias: &str) -> String {
    format!(
        "NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = '{catalog}'::regclass \
         AND d.objid = {alias}.oid AND d.deptype = 'e')"
    )
}

fn query() -> String {
    let own_c = own_class("c");
    let parts = [
        format!(
            "SELECT format('schema %I', n.nspname) AS key, 'owner=' || pg_get_userbyid(n.nspowner) AS detail
             FROM pg_namespace n WHERE {USER_SCHEMA}"
        ),
        "SELECT format('extension %I', extname), 'schema=' || extnamespace::regnamespace::text FROM pg_extension"
            .to_owned(),
        format!(
            "SELECT format('%s %I.%I', CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table'
                         WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' ELSE 'foreign table' END,
                         n.nspname, c.relname),
                    format('persistence=%s owner=%s acl=%s rls=%s%s', c.relpersistence, pg_get_userbyid(c.relowner),
                           coalesce(c.relacl::text, ''), c.relrowsecurity,
                           CASE WHEN c.relkind IN ('v', 'm') THEN ' as ' || pg_get_viewdef(c.oid, true) ELSE '' END)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMA} AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {own_c}"
        ),
        format!(
            "SELECT format('column %I.%I.%I', n.nspname, c.relname, a.attname),
                    format('%s not_null=%s default=%s identity=%s generated=%s collation=%s position=%s',
                           format_type(a.atttypid, a.atttypmod), a.attnotnull, coalesce(pg_get_expr(ad.adbin, ad.adrelid), ''),
                           a.attidentity, a.attgenerated, coalesce(co.collname, ''),
                           row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum))
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
             LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100
             WHERE a.attnum > 0 AND NOT a.attisdropped AND {USER_SCHEMA}
               AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c') AND {own_c}"
        ),
        format!(
            "SELECT format('constraint %I.%I.%I', n.nspname, coalesce(c.relname, t.typname), con.conname),
                    format('%s validated=%s deferrable=%s deferred=%s', pg_get_constraintdef(con.oid, true),
                           con.convalidated, con.condeferrable, con.condeferred)
             FROM pg_constraint con
             JOIN pg_namespace n ON n.oid = con.connamespace
             LEFT JOIN pg_class c ON c.oid = con.conrelid
             LEFT JOIN pg_type t ON t.oid = con.contypid
             WHERE {USER_SCHEMA} AND (c.oid IS NULL OR ({own_c}))"
        ),
        format!(
            "SELECT format('index %I.%I', n.nspname, ic.relname),
                    format('%s valid=%s clustered=%s', pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisclustered)
             FROM pg_index i
             JOIN pg_class ic ON ic.oid = i.indexrelid
             JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMA} AND {own_c}"
        ),
        format!(
            "SELECT format('sequence %I.%I', n.nspname, c.relname),
                    format('type=%s start=%s increment=%s min=%s max=%s cache=%s cycle=%s owner=%s acl=%s owned_by=%s',
                           format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
                           s.seqcycle, pg_get_userbyid(c.relowner), coalesce(c.relacl::text, ''),
                           coalesce((SELECT format('%s.%s', d.refobjid::regclass, a.attname) FROM pg_depend d
                                     JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                                     WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
                                     LIMIT 1), ''))
             FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMA} AND {own_c}"
        ),
        format!(
            "SELECT format('function %I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
                    format('kind=%s %s', p.prokind, CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) ELSE '' END)
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE {USER_SCHEMA} AND {}",
            not_extension("pg_proc", "p")
        ),
        format!(
            "SELECT format('trigger %I.%I.%I', n.nspname, c.relname, t.tgname),
                    format('%s enabled=%s', pg_get_triggerdef(t.oid, true), t.tgenabled)
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE NOT t.tgisinternal AND {USER_SCHEMA} AND {own_c}"
        ),
        format!(
            "SELECT format('type %I.%I', n.nspname, t.typname),
                    format('kind=%s %s', t.typtype,
                           CASE t.typtype
                             WHEN 'e' THEN (SELECT string_agg(quote_literal(e.enumlabel), ',' ORDER BY e.enumsortorder)
                                            FROM pg_enum e WHERE e.enumtypid = t.oid)
                             WHEN 'd' THEN format_type(t.typbasetype, t.typtypmod) || ' not_null=' || t.typnotnull
                                           || ' default=' || coalesce(t.typdefault, '')
                             ELSE '' END)
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE {USER_SCHEMA} AND t.typtype IN ('e', 'd', 'r', 'm') AND {}",
            not_extension("pg_type", "t")
        ),
        format!(
            "SELECT format('policy %I.%I.%I', n.nspname, c.relname, p.polname),
                    format('cmd=%s permissive=%s roles=%s using=%s check=%s', p.polcmd, p.polpermissive, p.polroles::text,
                           coalesce(pg_get_expr(p.polqual, p.polrelid), ''), coalesce(pg_get_expr(p.polwithcheck, p.polrelid), ''))
             FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMA}"
        ),
        format!(
            "SELECT 'comment on ' || pg_describe_object(ds.classoid, ds.objoid, ds.objsubid), ds.description
             FROM pg_description ds
             JOIN pg_class c ON ds.classoid = 'pg_class'::regclass AND c.oid = ds.objoid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMA} AND {own_c}"
        ),
        format!(
            "SELECT 'comment on ' || pg_describe_object(ds.classoid, ds.objoid, ds.objsubid), ds.description
             FROM pg_description ds
             JOIN pg_proc p ON ds.classoid = 'pg_proc'::regclass AND p.oid = ds.objoid
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE {USER_SCHEMA} AND {}",
            not_extension("pg_proc", "p")
        ),
    ];
    parts
        .iter()
        .map(|part| format!("({part})"))
        .collect::<Vec<_>>()
        .join("\nUNION ALL\n")
}

/// Reads the schema of the connected database (one query).
pub fn snapshot(conn: &mut PgConnection) -> Result<Snapshot> {
    let entries = diesel::sql_query(query())
        .load::<Entry>(conn)
        .map_err(Error::db("reading the schema from the catalogs"))?;
    Ok(Snapshot {
        objects: entries.into_iter().map(|e| (e.key, e.detail)).collect(),
    })
}

impl Snapshot {
    /// The objects, sorted, with their definitions.
    pub fn objects(&self) -> impl Iterator<Item = (&str, &str)> {
        self.objects.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many objects it holds.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether it holds no object.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The same snapshot without objects for which `drop` is true (by their name).
    pub fn without(mut self, drop: impl Fn(&str) -> bool) -> Snapshot {
        self.objects.retain(|key, _| !drop(key));
        self
    }

    /// The same snapshot with who owns what and who may do what left out: for comparing
    /// databases built by different roles.
    pub fn without_ownership(mut self) -> Snapshot {
        for detail in self.objects.values_mut() {
            *detail = detail
                .split(' ')
                .filter(|word| !word.starts_with("owner=") && !word.starts_with("acl="))
                .collect::<Vec<_>>()
                .join(" ");
        }
        self
    }

    /// What differs, taking `self` as expected: missing, extra and changed objects, by name.
    pub fn differences(&self, found: &Snapshot) -> Vec<Difference> {
        let mut names: Vec<&String> = self.objects.keys().chain(found.objects.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|name| {
                let expected = self.objects.get(name);
                let now = found.objects.get(name);
                (expected != now).then(|| Difference {
                    object: name.clone(),
                    expected: expected.cloned(),
                    found: now.cloned(),
                })
            })
            .collect()
    }

    /// [`Snapshot::differences`] as readable text; empty when equal.
    pub fn diff(&self, found: &Snapshot) -> String {
        self.differences(found)
            .iter()
            .map(|d| format!("{d}\n"))
            .collect()
    }
}

impl fmt::Display for Difference {
    /// `  missing  index public.users_email_idx: CREATE INDEX ...`, `  extra    column ...`,
    /// or `  changed  column ...` with the expected and found definitions under it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.expected, &self.found) {
            (Some(expected), None) => write!(f, "  missing  {}: {expected}", self.object),
            (None, Some(found)) => write!(f, "  extra    {}: {found}", self.object),
            (Some(expected), Some(found)) => write!(
                f,
                "  changed  {}\n             expected: {expected}\n             found:    {found}",
                self.object
            ),
            (None, None) => write!(f, "  same     {}", self.object),
        }
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (object, detail) in &self.objects {
            writeln!(f, "{object}: {detail}")?;
        }
        Ok(())
    }
}
