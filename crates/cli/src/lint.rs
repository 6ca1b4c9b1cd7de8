//! `pgops migrate lint [PATHS..] [--format text|json]`: the migration linter on files, without
//! a database (unless told to read the target version from one). Its options come from
//! `[lint]` in `pgops.toml`, overridden by flags. Exit 0 clean, 1 findings, 2 unreadable input,
//! a parse error or a bad option.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use pgops_migrate::{
    MigrationSet, SqlMigration,
    lint::{Options, Report, Rule, Runner, check_version, lint_migration, lint_set},
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

/// The lint flags as given on the command line.
#[derive(Debug, Clone, Copy)]
pub struct Flags<'a> {
    /// `--config`.
    pub config: Option<&'a Path>,
    /// `--runner`.
    pub runner: Option<&'a str>,
    /// `--pg-version`: a major, or `server`.
    pub pg_version: Option<&'a str>,
    /// `--disable`.
    pub disable: &'a [String],
    /// `--database-url` or `DATABASE_URL`, for `--pg-version server`.
    pub database_url: Option<&'a str>,
}

/// The options: `[lint]` of the configuration file, then the flags.
pub fn options(flags: Flags<'_>) -> Result<Options, Failure> {
    let mut options = match pgops_pg::config_path(flags.config) {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))
                .map_err(Failure::usage)?;
            Options::from_config(&text)
                .with_context(|| format!("in {}", path.display()))
                .map_err(Failure::usage)?
        }
        None => Options::default(),
    };
    match flags.runner {
        Some("other") => options.runner = Runner::Other,
        Some(_) => options.runner = Runner::Pgops,
        None => {}
    }
    match flags.pg_version {
        Some("server") => {
            let url = crate::db::database_url(flags.database_url)?;
            let mut conn = crate::db::connect(&url)?;
            let number = pgops_pg::rows::server_version_num(&mut conn)
                .context("reading the server's version")
                .map_err(Failure::usage)?;
            options.pg_version = Some(
                check_version(number / 10_000)
                    .map_err(|e| Failure::usage(anyhow::anyhow!("{url}: {e}")))?,
            );
        }
        Some(text) => {
            let major = text.trim().parse::<u32>().map_err(|_| {
                Failure::usage(anyhow::anyhow!(
                    "--pg-version {text:?}: give a major version (13 to 18) or `server`"
                ))
            })?;
            options.pg_version = Some(
                check_version(major)
                    .map_err(|e| Failure::usage(anyhow::anyhow!("--pg-version: {e}")))?,
            );
        }
        None => {}
    }
    for name in flags.disable {
        let rule = Rule::from_name(name).ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "--disable {name}: no such rule; the rules are {}",
                Rule::ALL.map(Rule::name).join(", ")
            ))
        })?;
        options.disabled.insert(rule);
    }
    Ok(options)
}

/// Lints `source` and writes the report.
pub fn run(
    source: Source<'_>,
    options: &Options,
    json: bool,
    out: &mut dyn Write,
) -> Result<Exit, Failure> {
    let mut report = Report::default();
    match source {
        Source::Paths(paths) => {
            for path in paths {
                lint_path(path, options, &mut report)?;
            }
        }
        Source::Dir(dir) => lint_dir(dir, options, &mut report)?,
        Source::SampleSchema => {
            let set = pgops_schema::migrations().map_err(Failure::usage)?;
            report = lint_set(&set, Path::new("migrations"), options);
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
fn lint_path(path: &Path, options: &Options, report: &mut Report) -> Result<(), Failure> {
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
        lint_migration(&migration, &path.join("up.sql"), options, report);
        Ok(())
    } else if path.is_dir() {
        lint_dir(path, options, report)
    } else {
        let up = std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))
            .map_err(Failure::usage)?;
        // A lone file runs the way diesel runs an up.sql: in a transaction.
        let migration =
            SqlMigration::new("0_file", up, String::new(), None).map_err(Failure::usage)?;
        lint_migration(&migration, path, options, report);
        Ok(())
    }
}

fn lint_dir(dir: &Path, options: &Options, report: &mut Report) -> Result<(), Failure> {
    let set = MigrationSet::from_dir(dir).map_err(Failure::usage)?;
    let found = lint_set(&set, dir, options);
    report.findings.extend(found.findings);
    report.errors.extend(found.errors);
    Ok(())
}
