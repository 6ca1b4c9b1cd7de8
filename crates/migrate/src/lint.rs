//! Migration lint: catches the statements that take long exclusive locks or rewrite big tables,
//! with PostgreSQL's own parser (`pg_query`), knowing how diesel runs migrations (each `up.sql`
//! in one transaction unless `metadata.toml` says otherwise) and which tables a migration
//! creates itself (anything may be done to those: nobody uses them yet).

use std::{collections::BTreeSet, fmt, path::PathBuf};

use pg_query::{
    NodeEnum,
    protobuf::{AlterTableType, ConstrType, ObjectType, TransactionStmtKind},
};
use serde::Serialize;

use crate::{MigrationSet, SqlMigration, check::leading_noise};

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
}

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
    pub const ALL: [Rule; 20] = [
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
        }
    }

    /// Why it matters and what to do instead.
    fn advice(self) -> (&'static str, &'static str) {
        match self {
            Rule::RequireConcurrentIndexCreation => (
                "CREATE INDEX blocks every write to the table until the index is built",
                "CREATE INDEX CONCURRENTLY, alone in a migration with run_in_transaction = false",
            ),
            Rule::RequireConcurrentIndexDeletion => (
                "DROP INDEX takes an ACCESS EXCLUSIVE lock on the table",
                "DROP INDEX CONCURRENTLY, alone in a migration with run_in_transaction = false",
            ),
            Rule::ConcurrentIndexInTransaction => (
                "CONCURRENTLY cannot run inside a transaction block, and diesel runs this migration in one",
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
                "a statement waiting for its lock queues every query on the table behind it",
                "SET lock_timeout = '5s'; first (pgops migrate run sets it for transactional migrations)",
            ),
            Rule::TransactionNesting => (
                "diesel already wraps up.sql in a transaction; BEGIN/COMMIT inside breaks its bookkeeping",
                "remove the transaction statements, or set run_in_transaction = false and manage it yourself",
            ),
            Rule::IgnoreWithoutReason => (
                "an ignore comment must say why the statement is safe",
                "write -- pgops-lint: ignore <rule> -- <reason>",
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

/// Lints every migration's `up.sql` of a set; `root` names files in findings.
pub fn lint_set(set: &MigrationSet, root: &std::path::Path) -> Report {
    let mut report = Report::default();
    for migration in set.migrations() {
        let file = root.join(migration.name()).join("up.sql");
        lint_migration(migration, &file, &mut report);
    }
    report
}

/// Lints one migration's `up.sql`.
pub fn lint_migration(migration: &SqlMigration, file: &std::path::Path, report: &mut Report) {
    let sql = migration.up_sql();
    let statements = match pg_query::parse(sql) {
        Ok(parsed) => parsed.protobuf.stmts,
        Err(e) => {
            report.errors.push(parse_error(sql, file, e));
            return;
        }
    };
    let mut created: BTreeSet<String> = BTreeSet::new();
    let mut lock_timeout_set = false;
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
        let mut found: Vec<Rule> = Vec::new();
        if is_concurrent(node) {
            if migration.run_in_transaction() {
                found.push(Rule::ConcurrentIndexInTransaction);
            }
            if statements.len() > 1 {
                found.push(Rule::MultipleStatementsWithConcurrently);
            }
        }
        check(node, &mut created, &mut lock_timeout_set, &mut found);
        let ignored = ignores(text);
        for rule in found {
            match ignored.iter().find(|(name, _)| name == rule.name()) {
                Some((_, true)) => continue,
                Some((_, false)) => push(report, file, line, column, Rule::IgnoreWithoutReason),
                None => {}
            }
            push(report, file, line, column, rule);
        }
    }
}

/// The rules that look at one statement; `created` collects tables this migration creates.
fn check(
    node: &NodeEnum,
    created: &mut BTreeSet<String>,
    lock_timeout_set: &mut bool,
    found: &mut Vec<Rule>,
) {
    match node {
        NodeEnum::VariableSetStmt(set) if set.name == "lock_timeout" => *lock_timeout_set = true,
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
                found.push(Rule::TransactionNesting);
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
                found.push(Rule::RequireConcurrentIndexCreation);
            }
        }
        NodeEnum::DropStmt(drop) => match ObjectType::try_from(drop.remove_type).ok() {
            Some(ObjectType::ObjectIndex) if !drop.concurrent => {
                found.push(Rule::RequireConcurrentIndexDeletion)
            }
            Some(ObjectType::ObjectTable) => {
                let names = drop
                    .objects
                    .iter()
                    .filter_map(last_name)
                    .collect::<Vec<_>>();
                if names.iter().any(|n| !created.contains(n)) {
                    found.push(Rule::BanDropTable);
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
                    Some(ObjectType::ObjectColumn) => found.push(Rule::RenamingColumn),
                    Some(ObjectType::ObjectTable) => found.push(Rule::RenamingTable),
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
            if existing && !*lock_timeout_set {
                found.push(Rule::RequireLockTimeout);
            }
            for cmd in &alter.cmds {
                let Some(NodeEnum::AlterTableCmd(cmd)) = cmd.node.as_ref() else {
                    continue;
                };
                alter_command(cmd, existing, found);
            }
        }
        _ => {}
    }
}

/// One `ALTER TABLE` subcommand.
fn alter_command(cmd: &pg_query::protobuf::AlterTableCmd, existing: bool, found: &mut Vec<Rule>) {
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
                found.push(Rule::AddingNotNullableField);
            }
            if default.is_some_and(is_volatile)
                || type_name(col).is_some_and(|t| t.ends_with("serial"))
            {
                found.push(Rule::AddingFieldWithVolatileDefault);
            }
            if kinds.contains(&ConstrType::ConstrForeign) {
                found.push(Rule::AddingForeignKeyWithoutNotValid);
            }
        }
        Some(AlterTableType::AtSetNotNull) if existing => found.push(Rule::AddingNotNullableField),
        Some(AlterTableType::AtAlterColumnType) if existing => found.push(Rule::ChangingColumnType),
        Some(AlterTableType::AtDropColumn) if existing => found.push(Rule::BanDropColumn),
        Some(AlterTableType::AtAddConstraint) if existing => {
            let Some(NodeEnum::Constraint(con)) = def else {
                return;
            };
            match ConstrType::try_from(con.contype).ok() {
                Some(ConstrType::ConstrForeign) if !con.skip_validation => {
                    found.push(Rule::AddingForeignKeyWithoutNotValid)
                }
                Some(ConstrType::ConstrCheck) if !con.skip_validation => {
                    found.push(Rule::ConstraintMissingNotValid)
                }
                Some(ConstrType::ConstrUnique | ConstrType::ConstrPrimary)
                    if con.indexname.is_empty() =>
                {
                    found.push(Rule::DisallowedUniqueConstraint);
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// Type rules for a column definition; `keys` are the key columns of its table.
fn column_types(
    col: &pg_query::protobuf::ColumnDef,
    keys: &BTreeSet<String>,
    found: &mut Vec<Rule>,
) {
    let Some(name) = type_name(col) else { return };
    match name.as_str() {
        "timestamp" => found.push(Rule::PreferTimestamptz),
        "varchar" => found.push(Rule::PreferTextOverVarchar),
        "int4" | "int2" | "serial" | "smallserial" | "serial4" | "serial2" | "int" | "integer"
        | "smallint"
            if keys.contains(&col.colname) =>
        {
            found.push(Rule::PreferBigintOverInt);
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

/// 1-based line and column of a byte offset.
fn position(sql: &str, offset: usize) -> (usize, usize) {
    let before = &sql[..offset.min(sql.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A parse error with the position of the statement that fails (the parser's own message has
/// no position, so statements are parsed one by one to find it).
fn parse_error(sql: &str, file: &std::path::Path, error: pg_query::Error) -> ParseError {
    let mut offset = 0;
    let mut message = error.to_string();
    if let Ok(pieces) = pg_query::split_with_scanner(sql) {
        for piece in pieces {
            let start = sql[offset..].find(piece).map_or(offset, |i| offset + i);
            offset = start + piece.len();
            if let Err(e) = pg_query::parse(piece) {
                message = e.to_string();
                let (line, column) = position(sql, start + leading_noise(piece));
                return ParseError {
                    file: file.to_path_buf(),
                    line,
                    column,
                    message,
                };
            }
        }
    }
    let (line, column) = position(sql, leading_noise(sql));
    ParseError {
        file: file.to_path_buf(),
        line,
        column,
        message,
    }
}

fn push(report: &mut Report, file: &std::path::Path, line: usize, column: usize, rule: Rule) {
    let (reason, fix) = rule.advice();
    report.findings.push(Finding {
        file: file.to_path_buf(),
        line,
        column,
        rule,
        reason: reason.to_owned(),
        fix: fix.to_owned(),
    });
}
