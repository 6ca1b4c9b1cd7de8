//! Migration lint: catches the statements that take long exclusive locks or rewrite big tables,
//! with PostgreSQL's own parser (`pg_query`), knowing how diesel runs migrations (each `up.sql`
//! in one transaction unless `metadata.toml` says otherwise) and which tables a migration
//! creates itself (anything may be done to those: nobody uses them yet), which tool runs them
//! (`pgops migrate run` sets `lock_timeout` on transactional migrations, so they need no `SET`),
//! and which PostgreSQL major they target. Reviewed statements are accepted under pgops's own
//! ignore comments and under the conventions projects already use: diesel-guard's
//! `-- safety-assured:start` / `-- safety-assured:end` blocks and squawk's `-- squawk-ignore`.

use std::{collections::BTreeSet, fmt, path::PathBuf};

use serde::Deserialize;

use pg_query::{
    NodeEnum,
    protobuf::{AlterTableType, ConstrType, ObjectType, TransactionStmtKind},
};
use serde::Serialize;

use crate::{
    MigrationSet, SqlMigration,
    text::{leading_noise, position, statements},
};

/// The rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// `CREATE INDEX` without `CONCURRENTLY` on an existing table.
    RequireConcurrentIndexCreation,
    /// `DROP INDEX` without `CONCURRENTLY`.
    RequireConcurrentIndexDeletion,
    /// A `CONCURRENTLY` statement in a migration that runs in a transaction.
    ConcurrentIndexInTransaction,
    /// A `CONCURRENTLY` statement sharing its file with other statements.
    MultipleStatementsWithConcurrently,
    /// A `NOT NULL` column without a default, or `SET NOT NULL`, on an existing table.
    AddingNotNullableField,
    /// A column whose default is volatile (rewrites the table).
    AddingFieldWithVolatileDefault,
    /// A foreign key validated while it is added.
    AddingForeignKeyWithoutNotValid,
    /// A check constraint validated while it is added.
    ConstraintMissingNotValid,
    /// `ALTER COLUMN .. TYPE`.
    ChangingColumnType,
    /// `RENAME COLUMN`.
    RenamingColumn,
    /// `RENAME TO` of a table.
    RenamingTable,
    /// `DROP COLUMN`.
    BanDropColumn,
    /// `DROP TABLE` of an existing table.
    BanDropTable,
    /// `ADD CONSTRAINT .. UNIQUE` on an existing table.
    DisallowedUniqueConstraint,
    /// A key column of type `int`/`smallint`/`serial`.
    PreferBigintOverInt,
    /// `timestamp` without time zone.
    PreferTimestamptz,
    /// `varchar(n)`.
    PreferTextOverVarchar,
    /// A lock-taking statement on an existing table with no `SET lock_timeout` before it.
    RequireLockTimeout,
    /// `BEGIN`/`COMMIT`/`ROLLBACK` inside a migration.
    TransactionNesting,
    /// A `pgops-lint: ignore` comment without a reason.
    IgnoreWithoutReason,
    /// `DETACH PARTITION` without `CONCURRENTLY`.
    RequireConcurrentDetachPartition,
    /// `REINDEX` without `CONCURRENTLY` on an existing table or index.
    RequireConcurrentReindex,
    /// `VACUUM FULL` or `CLUSTER`: the whole table rewritten under an exclusive lock.
    BanTableRewrite,
    /// A stored generated column added to an existing table (rewrites it).
    AddingStoredGeneratedColumn,
    /// Syntax the target PostgreSQL major does not have yet.
    RequiresNewerPostgres,
}

/// How the migrations are run, and what to report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The tool that runs the migrations.
    pub runner: Runner,
    /// The PostgreSQL major the migrations target (`None`: any supported one). Decides the
    /// advice of rules whose safe form changed between versions, and `requires-newer-postgres`.
    pub pg_version: Option<u32>,
    /// Rules not reported.
    pub disabled: BTreeSet<Rule>,
}

/// The tool that runs the migrations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runner {
    /// `pgops migrate run`, which sets `lock_timeout` for transactional migrations.
    #[default]
    Pgops,
    /// Another tool (diesel's CLI, psql, ...), which sets no timeout of its own.
    Other,
}

/// The keys of `pgops.toml`'s `[lint]` table and what each sets, for the configuration
/// reference; a test holds it to the table's fields.
pub const CONFIG_KEYS: [(&str, &str); 3] = [
    (
        "runner",
        "The tool that runs the migrations: `pgops` (sets lock_timeout itself) or `other` (default `pgops`; flag `--runner`).",
    ),
    (
        "pg_version",
        "The oldest PostgreSQL major the migrations must run on, 13 to 18 (default: any; flag `--pg-version`).",
    ),
    (
        "disabled",
        "Rule names not to report, as a list (flag `--disable`, which adds to it).",
    ),
];

/// The `[lint]` table of `pgops.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigTable {
    runner: Option<Runner>,
    pg_version: Option<u32>,
    #[serde(default)]
    disabled: Vec<String>,
}

/// The PostgreSQL majors the linter knows.
pub const VERSIONS: std::ops::RangeInclusive<u32> = 13..=18;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The file.
    pub file: PathBuf,
    /// 1-based line of the statement.
    pub line: usize,
    /// 1-based column of the statement.
    pub column: usize,
    /// The rule.
    pub rule: Rule,
    /// Why it is dangerous, in one line.
    pub reason: String,
    /// The safe way.
    pub fix: String,
}

/// A file that could not be linted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line of the statement that does not parse.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The parser's message.
    pub message: String,
}

/// What a lint run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Findings, in file and position order.
    pub findings: Vec<Finding>,
    /// Files that did not parse.
    pub errors: Vec<ParseError>,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 25] = [
        Rule::RequireConcurrentIndexCreation,
        Rule::RequireConcurrentIndexDeletion,
        Rule::ConcurrentIndexInTransaction,
        Rule::MultipleStatementsWithConcurrently,
        Rule::AddingNotNullableField,
        Rule::AddingFieldWithVolatileDefault,
        Rule::AddingForeignKeyWithoutNotValid,
        Rule::ConstraintMissingNotValid,
        Rule::ChangingColumnType,
        Rule::RenamingColumn,
        Rule::RenamingTable,
        Rule::BanDropColumn,
        Rule::BanDropTable,
        Rule::DisallowedUniqueConstraint,
        Rule::PreferBigintOverInt,
        Rule::PreferTimestamptz,
        Rule::PreferTextOverVarchar,
        Rule::RequireLockTimeout,
        Rule::TransactionNesting,
        Rule::IgnoreWithoutReason,
        Rule::RequireConcurrentDetachPartition,
        Rule::RequireConcurrentReindex,
        Rule::BanTableRewrite,
        Rule::AddingStoredGeneratedColumn,
        Rule::RequiresNewerPostgres,
    ];

    /// The rule's kebab-case name, as in ignore comments.
    pub fn name(self) -> &'static str {
        match self {
            Rule::RequireConcurrentIndexCreation => "require-concurrent-index-creation",
            Rule::RequireConcurrentIndexDeletion => "require-concurrent-index-deletion",
            Rule::ConcurrentIndexInTransaction => "concurrent-index-in-transaction",
            Rule::MultipleStatementsWithConcurrently => "multiple-statements-with-concurrently",
            Rule::AddingNotNullableField => "adding-not-nullable-field",
            Rule::AddingFieldWithVolatileDefault => "adding-field-with-volatile-default",
            Rule::AddingForeignKeyWithoutNotValid => "adding-foreign-key-without-not-valid",
            Rule::ConstraintMissingNotValid => "constraint-missing-not-valid",
            Rule::ChangingColumnType => "changing-column-type",
            Rule::RenamingColumn => "renaming-column",
            Rule::RenamingTable => "renaming-table",
            Rule::BanDropColumn => "ban-drop-column",
            Rule::BanDropTable => "ban-drop-table",
            Rule::DisallowedUniqueConstraint => "disallowed-unique-constraint",
            Rule::PreferBigintOverInt => "prefer-bigint-over-int",
            Rule::PreferTimestamptz => "prefer-timestamptz",
            Rule::PreferTextOverVarchar => "prefer-text-over-varchar",
            Rule::RequireLockTimeout => "require-lock-timeout",
            Rule::TransactionNesting => "transaction-nesting",
            Rule::IgnoreWithoutReason => "ignore-without-reason",
            Rule::RequireConcurrentDetachPartition => "require-concurrent-detach-partition",
            Rule::RequireConcurrentReindex => "require-concurrent-reindex",
            Rule::BanTableRewrite => "ban-table-rewrite",
            Rule::AddingStoredGeneratedColumn => "adding-stored-generated-column",
            Rule::RequiresNewerPostgres => "requires-newer-postgres",
        }
    }

    /// The rule with this kebab-case name.
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Our rules that squawk's rule `name` stands for in a `-- squawk-ignore` comment.
    pub fn from_squawk(name: &str) -> Vec<Rule> {
        match name {
            "adding-field-with-default" => vec![Rule::AddingFieldWithVolatileDefault],
            "adding-foreign-key-constraint" => vec![Rule::AddingForeignKeyWithoutNotValid],
            "adding-required-field" => vec![Rule::AddingNotNullableField],
            "adding-serial-primary-key-field" => {
                vec![
                    Rule::DisallowedUniqueConstraint,
                    Rule::AddingFieldWithVolatileDefault,
                ]
            }
            "ban-concurrent-index-creation-in-transaction" => {
                vec![Rule::ConcurrentIndexInTransaction]
            }
            "prefer-big-int" | "prefer-bigint-over-int" | "prefer-bigint-over-smallint" => {
                vec![Rule::PreferBigintOverInt]
            }
            "prefer-text-field" => vec![Rule::PreferTextOverVarchar],
            "require-timeout-settings" => vec![Rule::RequireLockTimeout],
            other => Rule::from_name(other).into_iter().collect(),
        }
    }

    /// Why it matters and what to do instead, for the target major (`None`: any).
    fn advice(self, version: Option<u32>) -> (&'static str, &'static str) {
        match self {
            Rule::AddingNotNullableField if version.is_some_and(|v| v >= 18) => (
                "a NOT NULL column without default fails on existing rows; SET NOT NULL scans the table under an ACCESS EXCLUSIVE lock",
                "add the column nullable (or with a constant default), backfill, ADD CONSTRAINT .. NOT NULL col NOT VALID, then VALIDATE CONSTRAINT (PostgreSQL 18)",
            ),
            Rule::RequireConcurrentDetachPartition if version.is_some_and(|v| v < 14) => (
                "DETACH PARTITION takes an ACCESS EXCLUSIVE lock on the partitioned table, blocking every query on it",
                "PostgreSQL 13 has no DETACH .. CONCURRENTLY: detach in a quiet window with a short lock_timeout, or upgrade to 14",
            ),
            Rule::RequireConcurrentIndexCreation => (
                "CREATE INDEX blocks every write to the table until the index is built",
                "CREATE INDEX CONCURRENTLY, alone in a migration with run_in_transaction = false",
            ),
            Rule::RequireConcurrentIndexDeletion => (
                "DROP INDEX takes an ACCESS EXCLUSIVE lock on the table",
                "DROP INDEX CONCURRENTLY, alone in a migration with run_in_transaction = false",
            ),
            Rule::ConcurrentIndexInTransaction => (
                "CONCURRENTLY (index builds, drops, REINDEX, DETACH PARTITION) cannot run inside a transaction block, and diesel runs this migration in one",
                "add metadata.toml with run_in_transaction = false",
            ),
            Rule::MultipleStatementsWithConcurrently => (
                "diesel sends up.sql as one batch, which PostgreSQL runs as one implicit transaction: CONCURRENTLY fails",
                "put the CONCURRENTLY statement alone in its own migration",
            ),
            Rule::AddingNotNullableField => (
                "a NOT NULL column without default fails on existing rows; SET NOT NULL scans the table under an ACCESS EXCLUSIVE lock",
                "add the column nullable (or with a constant default), backfill, add CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL",
            ),
            Rule::AddingFieldWithVolatileDefault => (
                "a volatile default (random(), gen_random_uuid(), clock_timestamp(), serial) rewrites the whole table under an ACCESS EXCLUSIVE lock",
                "add the column without default, set the default for new rows, backfill existing rows in batches",
            ),
            Rule::AddingForeignKeyWithoutNotValid => (
                "adding a foreign key scans the table while locking both tables against writes",
                "ADD CONSTRAINT .. FOREIGN KEY .. NOT VALID, then VALIDATE CONSTRAINT in a later migration",
            ),
            Rule::ConstraintMissingNotValid => (
                "adding a CHECK constraint scans the table under an ACCESS EXCLUSIVE lock",
                "ADD CONSTRAINT .. CHECK (..) NOT VALID, then VALIDATE CONSTRAINT in a later migration",
            ),
            Rule::ChangingColumnType => (
                "changing a column's type usually rewrites the table and its indexes under an ACCESS EXCLUSIVE lock",
                "add a new column, backfill it in batches, switch readers and writers, then drop the old one",
            ),
            Rule::RenamingColumn => (
                "running application code still uses the old name and breaks at once",
                "add the new column, write both, backfill, move readers, then drop the old column",
            ),
            Rule::RenamingTable => (
                "running application code still uses the old name and breaks at once",
                "create the new table (or a view with the old name) and migrate callers first",
            ),
            Rule::BanDropColumn => (
                "running application code may still read or write the column",
                "stop using the column in a deploy first; then drop it, or mark it ignored with a reason",
            ),
            Rule::BanDropTable => (
                "running application code may still use the table, and its data is gone",
                "stop using the table in a deploy first; then drop it with an ignore comment giving the reason",
            ),
            Rule::DisallowedUniqueConstraint => (
                "ADD CONSTRAINT .. UNIQUE builds its index while blocking writes",
                "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT .. UNIQUE USING INDEX",
            ),
            Rule::PreferBigintOverInt => (
                "a 32-bit key runs out at 2.1 billion, and widening it later rewrites the table",
                "use bigint (bigint GENERATED .. AS IDENTITY for generated keys)",
            ),
            Rule::PreferTimestamptz => (
                "timestamp without time zone stores wall-clock time that depends on the writer's zone",
                "use timestamptz",
            ),
            Rule::PreferTextOverVarchar => (
                "varchar(n) adds nothing over text but a limit that needs a table lock to change",
                "use text, with a CHECK (length(col) <= n) if the limit matters",
            ),
            Rule::RequireLockTimeout => (
                "a statement waiting for its lock queues every query on the table behind it, and nothing sets lock_timeout for this migration",
                "SET lock_timeout = '5s'; first (pgops migrate run sets it for transactional migrations, not for run_in_transaction = false ones)",
            ),
            Rule::TransactionNesting => (
                "diesel already wraps up.sql in a transaction; BEGIN/COMMIT inside breaks its bookkeeping",
                "remove the transaction statements, or set run_in_transaction = false and manage it yourself",
            ),
            Rule::IgnoreWithoutReason => (
                "an ignore comment must say why the statement is safe",
                "write -- pgops-lint: ignore <rule> -- <reason>",
            ),
            Rule::RequireConcurrentDetachPartition => (
                "DETACH PARTITION takes an ACCESS EXCLUSIVE lock on the partitioned table, blocking every query on it",
                "ALTER TABLE .. DETACH PARTITION .. CONCURRENTLY (PostgreSQL 14+), alone in a migration with run_in_transaction = false",
            ),
            Rule::RequireConcurrentReindex => (
                "REINDEX blocks writes to the table (and reads that use the index) until it ends",
                "REINDEX .. CONCURRENTLY, alone in a migration with run_in_transaction = false",
            ),
            Rule::BanTableRewrite => (
                "VACUUM FULL and CLUSTER rewrite the whole table under an ACCESS EXCLUSIVE lock",
                "leave it to autovacuum, or rebuild online with pg_repack outside migrations",
            ),
            Rule::AddingStoredGeneratedColumn => (
                "adding a stored generated column rewrites the whole table under an ACCESS EXCLUSIVE lock",
                "add a plain column, fill it in batches and keep it current with a trigger (or a virtual generated column on PostgreSQL 18)",
            ),
            Rule::RequiresNewerPostgres => (
                "this syntax does not exist on the target PostgreSQL version, so the migration fails there",
                "write it the way the target version allows, or raise the target (--pg-version, [lint] pg_version) when every server is upgraded",
            ),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}; instead: {}",
            self.file.display(),
            self.line,
            self.column,
            self.rule.name(),
            self.reason,
            self.fix
        )
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: cannot parse: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl Options {
    /// The `[lint]` table of a `pgops.toml` text (absent: the defaults), validated: unknown
    /// keys, rule names and versions are errors that name the key and what is allowed.
    pub fn from_config(text: &str) -> crate::Result<Options> {
        let invalid = |message: String| crate::Error::LintConfig(message);
        let table: toml::Table =
            toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        let Some(lint) = table.get("lint") else {
            return Ok(Options::default());
        };
        let config: ConfigTable = lint.clone().try_into().map_err(|e: toml::de::Error| {
            invalid(format!(
                "[lint]: {}; the keys are runner (\"pgops\" or \"other\"), pg_version ({}..={}) and disabled (rule names)",
                e.message(),
                VERSIONS.start(),
                VERSIONS.end()
            ))
        })?;
        let mut options = Options {
            runner: config.runner.unwrap_or_default(),
            pg_version: None,
            disabled: BTreeSet::new(),
        };
        if let Some(version) = config.pg_version {
            options.pg_version = Some(
                check_version(version).map_err(|e| invalid(format!("[lint] pg_version: {e}")))?,
            );
        }
        for name in &config.disabled {
            let rule = Rule::from_name(name).ok_or_else(|| {
                invalid(format!(
                    "[lint] disabled: no rule `{name}`; the rules are {}",
                    Rule::ALL.map(Rule::name).join(", ")
                ))
            })?;
            options.disabled.insert(rule);
        }
        Ok(options)
    }
}

/// A supported PostgreSQL major, or an error that names the range.
pub fn check_version(version: u32) -> Result<u32, String> {
    if VERSIONS.contains(&version) {
        Ok(version)
    } else {
        Err(format!(
            "PostgreSQL {version} is not one the linter knows; give a major from {} to {}",
            VERSIONS.start(),
            VERSIONS.end()
        ))
    }
}

/// Lints every migration's `up.sql` of a set; `root` names files in findings.
pub fn lint_set(set: &MigrationSet, root: &std::path::Path, options: &Options) -> Report {
    let mut report = Report::default();
    for migration in set.migrations() {
        let file = root.join(migration.name()).join("up.sql");
        lint_migration(migration, &file, options, &mut report);
    }
    report
}

/// What the rules of one statement need to know about the migration so far.
struct State<'a> {
    options: &'a Options,
    /// Whether a lock-taking statement needs its own `SET lock_timeout`: the runner sets none
    /// for this migration.
    needs_timeout: bool,
    /// Tables this migration creates.
    created: BTreeSet<String>,
    /// Whether the migration has set `lock_timeout` itself.
    lock_timeout_set: bool,
}

/// A rule broken by a statement, with a reason that replaces the rule's own when given.
type Hit = (Rule, Option<String>);

/// Lints one migration's `up.sql`.
pub fn lint_migration(
    migration: &SqlMigration,
    file: &std::path::Path,
    options: &Options,
    report: &mut Report,
) {
    let sql = migration.up_sql();
    let statements = match pg_query::parse(sql) {
        Ok(parsed) => parsed.protobuf.stmts,
        Err(e) => {
            report.errors.push(parse_error(sql, file, e));
            return;
        }
    };
    let assured = safety_assured(sql);
    let file_ignores = squawk_file_ignores(sql);
    let mut state = State {
        options,
        needs_timeout: options.runner == Runner::Other || !migration.run_in_transaction(),
        created: BTreeSet::new(),
        lock_timeout_set: false,
    };
    for raw in &statements {
        let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) else {
            continue;
        };
        let start = raw.stmt_location.max(0) as usize;
        let end = if raw.stmt_len > 0 {
            start + raw.stmt_len as usize
        } else {
            sql.len()
        };
        let text = sql.get(start..end.min(sql.len())).unwrap_or("");
        let (line, column) = position(sql, start + leading_noise(text));
        let mut found: Vec<Hit> = Vec::new();
        if is_concurrent(node) {
            if migration.run_in_transaction() {
                found.push((Rule::ConcurrentIndexInTransaction, None));
            }
            if statements.len() > 1 {
                found.push((Rule::MultipleStatementsWithConcurrently, None));
            }
        }
        check(node, &mut state, &mut found);
        // Reviewed under another tool's convention: a diesel-guard block or squawk's comments.
        if assured
            .iter()
            .any(|(from, to)| (*from..=*to).contains(&line))
        {
            continue;
        }
        let ignored = ignores(text);
        let squawk = squawk_ignores(text);
        for (rule, reason) in found {
            if options.disabled.contains(&rule)
                || squawk.contains(&rule)
                || file_ignores.all
                || file_ignores.rules.contains(&rule)
            {
                continue;
            }
            match ignored.iter().find(|(name, _)| name == rule.name()) {
                Some((_, true)) => continue,
                Some((_, false)) if !options.disabled.contains(&Rule::IgnoreWithoutReason) => push(
                    report,
                    file,
                    (line, column),
                    options,
                    (Rule::IgnoreWithoutReason, None),
                ),
                _ => {}
            }
            push(report, file, (line, column), options, (rule, reason));
        }
    }
}

/// The rules that look at one statement; `state.created` collects tables this migration
/// creates.
fn check(node: &NodeEnum, state: &mut State<'_>, found: &mut Vec<Hit>) {
    let created = &mut state.created;
    let version = state.options.pg_version;
    match node {
        NodeEnum::VariableSetStmt(set) if set.name == "lock_timeout" => {
            state.lock_timeout_set = true
        }
        NodeEnum::TransactionStmt(tx) => {
            let kind = TransactionStmtKind::try_from(tx.kind).ok();
            if !matches!(
                kind,
                Some(
                    TransactionStmtKind::TransStmtSavepoint
                        | TransactionStmtKind::TransStmtRelease
                        | TransactionStmtKind::TransStmtRollbackTo
                )
            ) {
                found.push((Rule::TransactionNesting, None));
            }
        }
        NodeEnum::CreateStmt(create) => {
            if let Some(rel) = &create.relation {
                created.insert(rel.relname.clone());
            }
            let key_columns = key_columns(&create.table_elts);
            for elt in &create.table_elts {
                if let Some(NodeEnum::ColumnDef(col)) = elt.node.as_ref() {
                    column_types(col, &key_columns, found);
                }
            }
        }
        NodeEnum::CreateTableAsStmt(create) => {
            if let Some(rel) = create.into.as_ref().and_then(|i| i.rel.as_ref()) {
                created.insert(rel.relname.clone());
            }
        }
        NodeEnum::IndexStmt(index) => {
            let table = index
                .relation
                .as_ref()
                .map(|r| r.relname.as_str())
                .unwrap_or_default();
            if !index.concurrent && !created.contains(table) {
                found.push((Rule::RequireConcurrentIndexCreation, None));
            }
        }
        NodeEnum::DropStmt(drop) => match ObjectType::try_from(drop.remove_type).ok() {
            Some(ObjectType::ObjectIndex) if !drop.concurrent => {
                found.push((Rule::RequireConcurrentIndexDeletion, None))
            }
            Some(ObjectType::ObjectTable) => {
                let names = drop
                    .objects
                    .iter()
                    .filter_map(last_name)
                    .collect::<Vec<_>>();
                if names.iter().any(|n| !created.contains(n)) {
                    found.push((Rule::BanDropTable, None));
                }
            }
            _ => {}
        },
        NodeEnum::RenameStmt(rename) => {
            let table = rename
                .relation
                .as_ref()
                .map(|r| r.relname.as_str())
                .unwrap_or_default();
            if !created.contains(table) {
                match ObjectType::try_from(rename.rename_type).ok() {
                    Some(ObjectType::ObjectColumn) => found.push((Rule::RenamingColumn, None)),
                    Some(ObjectType::ObjectTable) => found.push((Rule::RenamingTable, None)),
                    _ => {}
                }
            }
        }
        NodeEnum::AlterTableStmt(alter) => {
            let table = alter
                .relation
                .as_ref()
                .map(|r| r.relname.as_str())
                .unwrap_or_default();
            let existing = !created.contains(table);
            if existing && state.needs_timeout && !state.lock_timeout_set && !is_concurrent(node) {
                found.push((Rule::RequireLockTimeout, None));
            }
            for cmd in &alter.cmds {
                let Some(NodeEnum::AlterTableCmd(cmd)) = cmd.node.as_ref() else {
                    continue;
                };
                alter_command(cmd, existing, version, found);
            }
        }
        NodeEnum::ReindexStmt(reindex) => {
            let table = reindex.relation.as_ref().map(|r| r.relname.as_str());
            if !is_concurrent(node) && !table.is_some_and(|t| created.contains(t)) {
                found.push((Rule::RequireConcurrentReindex, None));
            }
        }
        NodeEnum::VacuumStmt(vacuum) if vacuum.is_vacuumcmd => {
            let full = vacuum.options.iter().any(
                |o| matches!(o.node.as_ref(), Some(NodeEnum::DefElem(d)) if d.defname == "full"),
            );
            if full {
                found.push((Rule::BanTableRewrite, None));
            }
        }
        NodeEnum::ClusterStmt(_) => found.push((Rule::BanTableRewrite, None)),
        NodeEnum::MergeStmt(_) => newer(version, 15, "MERGE", found),
        _ => {}
    }
    if let NodeEnum::IndexStmt(index) = node
        && index.nulls_not_distinct
    {
        newer(version, 15, "UNIQUE NULLS NOT DISTINCT", found);
    }
}

/// `requires-newer-postgres` when the target is older than `since`.
fn newer(version: Option<u32>, since: u32, feature: &str, found: &mut Vec<Hit>) {
    if let Some(target) = version.filter(|v| *v < since) {
        found.push((
            Rule::RequiresNewerPostgres,
            Some(format!(
                "{feature} needs PostgreSQL {since}, and the target is {target}: the migration fails there"
            )),
        ));
    }
}

/// One `ALTER TABLE` subcommand.
fn alter_command(
    cmd: &pg_query::protobuf::AlterTableCmd,
    existing: bool,
    version: Option<u32>,
    found: &mut Vec<Hit>,
) {
    let def = cmd.def.as_ref().and_then(|d| d.node.as_ref());
    match AlterTableType::try_from(cmd.subtype).ok() {
        Some(AlterTableType::AtAddColumn) => {
            let Some(NodeEnum::ColumnDef(col)) = def else {
                return;
            };
            let keys = if constraint_types(col).contains(&ConstrType::ConstrPrimary)
                || is_key_name(&col.colname)
            {
                BTreeSet::from([col.colname.clone()])
            } else {
                BTreeSet::new()
            };
            column_types(col, &keys, found);
            if !existing {
                return;
            }
            let kinds = constraint_types(col);
            let default = col.constraints.iter().find_map(|c| match c.node.as_ref() {
                Some(NodeEnum::Constraint(con))
                    if con.contype == ConstrType::ConstrDefault as i32 =>
                {
                    con.raw_expr.as_deref()
                }
                _ => None,
            });
            if (col.is_not_null || kinds.contains(&ConstrType::ConstrNotnull))
                && default.is_none()
                && !kinds.contains(&ConstrType::ConstrIdentity)
            {
                found.push((Rule::AddingNotNullableField, None));
            }
            if default.is_some_and(is_volatile)
                || type_name(col).is_some_and(|t| t.ends_with("serial"))
            {
                found.push((Rule::AddingFieldWithVolatileDefault, None));
            }
            if kinds.contains(&ConstrType::ConstrForeign) {
                found.push((Rule::AddingForeignKeyWithoutNotValid, None));
            }
            if kinds.contains(&ConstrType::ConstrGenerated) {
                found.push((Rule::AddingStoredGeneratedColumn, None));
            }
        }
        Some(AlterTableType::AtDetachPartition) => {
            let concurrent = matches!(def, Some(NodeEnum::PartitionCmd(p)) if p.concurrent);
            if concurrent {
                newer(version, 14, "DETACH PARTITION .. CONCURRENTLY", found);
            } else {
                found.push((Rule::RequireConcurrentDetachPartition, None));
            }
        }
        Some(AlterTableType::AtSetNotNull) if existing => {
            found.push((Rule::AddingNotNullableField, None))
        }
        Some(AlterTableType::AtAlterColumnType) if existing => {
            found.push((Rule::ChangingColumnType, None))
        }
        Some(AlterTableType::AtDropColumn) if existing => found.push((Rule::BanDropColumn, None)),
        Some(AlterTableType::AtAddConstraint) if existing => {
            let Some(NodeEnum::Constraint(con)) = def else {
                return;
            };
            match ConstrType::try_from(con.contype).ok() {
                Some(ConstrType::ConstrForeign) if !con.skip_validation => {
                    found.push((Rule::AddingForeignKeyWithoutNotValid, None))
                }
                Some(ConstrType::ConstrCheck) if !con.skip_validation => {
                    found.push((Rule::ConstraintMissingNotValid, None))
                }
                Some(ConstrType::ConstrUnique | ConstrType::ConstrPrimary)
                    if con.indexname.is_empty() =>
                {
                    found.push((Rule::DisallowedUniqueConstraint, None));
                }
                _ => {}
            }
            if con.nulls_not_distinct {
                newer(version, 15, "UNIQUE NULLS NOT DISTINCT", found);
            }
        }
        _ => {}
    }
}

/// Type rules for a column definition; `keys` are the key columns of its table.
fn column_types(
    col: &pg_query::protobuf::ColumnDef,
    keys: &BTreeSet<String>,
    found: &mut Vec<Hit>,
) {
    let Some(name) = type_name(col) else { return };
    match name.as_str() {
        "timestamp" => found.push((Rule::PreferTimestamptz, None)),
        "varchar" => found.push((Rule::PreferTextOverVarchar, None)),
        "int4" | "int2" | "serial" | "smallserial" | "serial4" | "serial2" | "int" | "integer"
        | "smallint"
            if keys.contains(&col.colname) =>
        {
            found.push((Rule::PreferBigintOverInt, None));
        }
        _ => {}
    }
}

/// Primary-key columns (column or table constraint) and columns that look like keys (`id`,
/// `*_id`, or a foreign key).
fn key_columns(elements: &[pg_query::protobuf::Node]) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for elt in elements {
        match elt.node.as_ref() {
            Some(NodeEnum::ColumnDef(col)) => {
                let kinds = constraint_types(col);
                if is_key_name(&col.colname)
                    || kinds.contains(&ConstrType::ConstrPrimary)
                    || kinds.contains(&ConstrType::ConstrForeign)
                {
                    keys.insert(col.colname.clone());
                }
            }
            Some(NodeEnum::Constraint(con))
                if matches!(
                    ConstrType::try_from(con.contype).ok(),
                    Some(ConstrType::ConstrPrimary | ConstrType::ConstrForeign)
                ) =>
            {
                for key in con.keys.iter().chain(&con.fk_attrs) {
                    if let Some(NodeEnum::String(s)) = key.node.as_ref() {
                        keys.insert(s.sval.clone());
                    }
                }
            }
            _ => {}
        }
    }
    keys
}

fn is_key_name(name: &str) -> bool {
    name == "id" || name.ends_with("_id")
}

fn constraint_types(col: &pg_query::protobuf::ColumnDef) -> Vec<ConstrType> {
    col.constraints
        .iter()
        .filter_map(|c| match c.node.as_ref() {
            Some(NodeEnum::Constraint(con)) => ConstrType::try_from(con.contype).ok(),
            _ => None,
        })
        .collect()
}

/// The last part of a column's type name (`int4`, `varchar`, `timestamptz`, `serial`).
fn type_name(col: &pg_query::protobuf::ColumnDef) -> Option<String> {
    col.type_name
        .as_ref()?
        .names
        .iter()
        .rev()
        .find_map(|n| match n.node.as_ref() {
            Some(NodeEnum::String(s)) => Some(s.sval.to_ascii_lowercase()),
            _ => None,
        })
}

/// A default expression calling a volatile function.
fn is_volatile(expr: &pg_query::protobuf::Node) -> bool {
    const VOLATILE: [&str; 8] = [
        "random",
        "gen_random_uuid",
        "uuid_generate_v1",
        "uuid_generate_v4",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "txid_current",
    ];
    match expr.node.as_ref() {
        Some(NodeEnum::FuncCall(call)) => {
            call.funcname
                .iter()
                .rev()
                .find_map(|n| match n.node.as_ref() {
                    Some(NodeEnum::String(s)) => {
                        Some(VOLATILE.contains(&s.sval.to_ascii_lowercase().as_str()))
                    }
                    _ => None,
                })
                == Some(true)
        }
        Some(NodeEnum::TypeCast(cast)) => cast.arg.as_deref().is_some_and(is_volatile),
        _ => false,
    }
}

/// `CREATE INDEX CONCURRENTLY`, `DROP INDEX CONCURRENTLY`, `REINDEX .. CONCURRENTLY`,
/// `DETACH PARTITION .. CONCURRENTLY`.
fn is_concurrent(node: &NodeEnum) -> bool {
    match node {
        NodeEnum::IndexStmt(index) => index.concurrent,
        NodeEnum::DropStmt(drop) => drop.concurrent,
        NodeEnum::ReindexStmt(reindex) => reindex.params.iter().any(|p| matches!(p.node.as_ref(), Some(NodeEnum::DefElem(d)) if d.defname == "concurrently")),
        NodeEnum::AlterTableStmt(alter) => alter.cmds.iter().any(|cmd| {
            matches!(cmd.node.as_ref(), Some(NodeEnum::AlterTableCmd(c))
                if matches!(c.def.as_ref().and_then(|d| d.node.as_ref()), Some(NodeEnum::PartitionCmd(p)) if p.concurrent))
        }),
        _ => false,
    }
}

/// The last name of a qualified name list (`DROP TABLE public.t` gives `t`).
fn last_name(node: &pg_query::protobuf::Node) -> Option<String> {
    match node.node.as_ref() {
        Some(NodeEnum::List(list)) => list.items.iter().rev().find_map(|n| match n.node.as_ref() {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        }),
        _ => None,
    }
}

/// `-- pgops-lint: ignore <rule> -- <reason>` comments in a statement's text: the rule and
/// whether a reason was given.
fn ignores(text: &str) -> Vec<(String, bool)> {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix("--"))
        .filter_map(|comment| comment.trim_start().strip_prefix("pgops-lint:"))
        .filter_map(|rest| rest.trim_start().strip_prefix("ignore"))
        .map(|rest| {
            let (rule, reason) = rest.split_once("--").unwrap_or((rest, ""));
            (rule.trim().to_owned(), !reason.trim().is_empty())
        })
        .collect()
}

/// A parse error with the position of the statement that fails (the parser's own message has
/// no position, so statements are parsed one by one to find it).
fn parse_error(sql: &str, file: &std::path::Path, error: pg_query::Error) -> ParseError {
    let (offset, message) = statements(sql)
        .into_iter()
        .flatten()
        .find_map(|s| {
            pg_query::parse(s.text)
                .err()
                .map(|e| (s.first_token, e.to_string()))
        })
        .unwrap_or_else(|| (leading_noise(sql), error.to_string()));
    let (line, column) = position(sql, offset);
    ParseError {
        file: file.to_path_buf(),
        line,
        column,
        message,
    }
}

fn push(
    report: &mut Report,
    file: &std::path::Path,
    (line, column): (usize, usize),
    options: &Options,
    (rule, reason): Hit,
) {
    let (default_reason, fix) = rule.advice(options.pg_version);
    report.findings.push(Finding {
        file: file.to_path_buf(),
        line,
        column,
        rule,
        reason: reason.unwrap_or_else(|| default_reason.to_owned()),
        fix: fix.to_owned(),
    });
}

/// Line ranges inside diesel-guard's `-- safety-assured:start` .. `-- safety-assured:end`
/// blocks (case-insensitive; an unclosed block runs to the end of the file).
fn safety_assured(sql: &str) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut open: Option<usize> = None;
    for (i, line) in sql.lines().enumerate() {
        let directive = line
            .trim()
            .strip_prefix("--")
            .map(|c| c.trim().to_ascii_lowercase());
        match directive.as_deref() {
            Some("safety-assured:start") => open = open.or(Some(i + 1)),
            Some("safety-assured:end") => {
                if let Some(from) = open.take() {
                    ranges.push((from, i + 1));
                }
            }
            _ => {}
        }
    }
    if let Some(from) = open {
        ranges.push((from, usize::MAX));
    }
    ranges
}

/// The rules a statement's `-- squawk-ignore rule, rule` comments name (squawk's names mapped
/// onto ours).
fn squawk_ignores(text: &str) -> BTreeSet<Rule> {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix("--"))
        .filter_map(|comment| comment.trim_start().strip_prefix("squawk-ignore"))
        .filter(|rest| rest.starts_with(char::is_whitespace))
        .flat_map(|rest| rest.split(',').map(str::trim).collect::<Vec<_>>())
        .flat_map(Rule::from_squawk)
        .collect()
}

/// What squawk's `-- squawk-ignore-file [rule, ..]` comments of a file accept.
#[derive(Debug, Default)]
struct FileIgnores {
    /// A comment without rules: every rule.
    all: bool,
    /// The rules named.
    rules: BTreeSet<Rule>,
}

fn squawk_file_ignores(sql: &str) -> FileIgnores {
    let mut ignores = FileIgnores::default();
    for rest in sql
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("--"))
        .filter_map(|comment| comment.trim_start().strip_prefix("squawk-ignore-file"))
    {
        if rest.trim().is_empty() {
            ignores.all = true;
        }
        ignores
            .rules
            .extend(rest.split(',').map(str::trim).flat_map(Rule::from_squawk));
    }
    ignores
}
