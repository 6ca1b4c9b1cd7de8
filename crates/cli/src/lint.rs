//! `pgops migrate lint [PATHS..] [--format text|json]`: the migration linter on files, without
//! a database. Exit 0 clean, 1 findings, 2 unreadable input or a parse error.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use pgops_migrate::{
    MigrationSet, SqlMigration,
    lint::{Report, lint_migration, lint_set},
};

use crate::exit::{Exit, Failure};

/// What to lint.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Migrations directories, single migration directories or `.sql` files.
    Paths(&'a [PathBuf]),
    /// One migrations directory (`--dir`).
    Dir(&'a Path),
    /// The sample schema compiled into the binary (`--sample-schema`).
    SampleSchema,
}

/// Lints `source` and writes the report.
pub fn run(source: Source<'_>, json: bool, out: &mut dyn Write) -> Result<Exit, Failure> {
    let mut report = Report::default();
    match source {
        Source::Paths(paths) => {
            for path in paths {
                lint_path(path, &mut report)?;
            }
        }
        Source::Dir(dir) => lint_dir(dir, &mut report)?,
        Source::SampleSchema => {
            let set = pgops_schema::migrations().map_err(Failure::usage)?;
            report = lint_set(&set, Path::new("migrations"));
        }
    }
    let exit = if !report.errors.is_empty() {
        Exit::Usage
    } else if report.findings.is_empty() {
        Exit::Ok
    } else {
        Exit::Problem
    };
    let written = if json {
        let value = serde_json::json!({
            "findings": report.findings,
            "errors": report.errors.iter().map(|e| serde_json::json!({
                "file": e.file, "line": e.line, "column": e.column, "message": e.message,
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{value:#}")
    } else {
        let mut text = String::new();
        for error in &report.errors {
            text.push_str(&format!("{error}\n"));
        }
        for finding in &report.findings {
            text.push_str(&format!("{finding}\n"));
        }
        text.push_str(&format!(
            "lint: {} finding(s), {} unparsable file(s)\n",
            report.findings.len(),
            report.errors.len()
        ));
        write!(out, "{text}")
    };
    written
        .context("writing the report")
        .map_err(Failure::problem)?;
    Ok(exit)
}

/// A migrations root, one migration directory, or one .sql file.
fn lint_path(path: &Path, report: &mut Report) -> Result<(), Failure> {
    if path.is_dir() && path.join("up.sql").is_file() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "migration".into());
        let read = |file: &str| std::fs::read_to_string(path.join(file));
        let up = read("up.sql")
            .with_context(|| format!("reading {}", path.join("up.sql").display()))
            .map_err(Failure::usage)?;
        let down = read("down.sql").unwrap_or_default();
        let metadata = read("metadata.toml").ok();
        let migration =
            SqlMigration::new(&name, up, down, metadata.as_deref()).map_err(Failure::usage)?;
        lint_migration(&migration, &path.join("up.sql"), report);
        Ok(())
    } else if path.is_dir() {
        lint_dir(path, report)
    } else {
        let up = std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))
            .map_err(Failure::usage)?;
        // A lone file runs the way diesel runs an up.sql: in a transaction.
        let migration =
            SqlMigration::new("0_file", up, String::new(), None).map_err(Failure::usage)?;
        lint_migration(&migration, path, report);
        Ok(())
    }
}

fn lint_dir(dir: &Path, report: &mut Report) -> Result<(), Failure> {
    let set = MigrationSet::from_dir(dir).map_err(Failure::usage)?;
    let found = lint_set(&set, dir);
    report.findings.extend(found.findings);
    report.errors.extend(found.errors);
    Ok(())
}
