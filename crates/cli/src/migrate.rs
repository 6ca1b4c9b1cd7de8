//! `pgops migrate <run|revert|redo|status|validate|check|drift|lint>`: the deploy pipeline's
//! migration step, shared with `cargo xtask migrate`, and the checks a service's CI runs.

use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::Context as _;
use pgops_migrate::{Error as MigrateError, MigrationSet, Migrator, RunOptions, Severity};
use pgops_pg::DatabaseUrl;

use crate::{
    db::{connect, database_url},
    exit::{Exit, Failure},
};

/// Options of `pgops migrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
    /// Database to migrate (its password is never printed).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Directory of diesel migrations (required, unless --sample-schema).
    #[arg(long, env = "PGOPS_MIGRATIONS_DIR", global = true)]
    pub dir: Option<PathBuf>,
    /// Use pgops's sample schema, compiled into this binary, instead of a directory.
    #[arg(long, global = true, conflicts_with = "dir")]
    pub sample_schema: bool,
    /// lock_timeout for transactional migrations: a migration that cannot get its lock fails
    /// instead of queueing traffic behind it.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub lock_timeout: Duration,
    /// How long to wait for another migration run that holds the migration lock.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, global = true)]
    pub lock_wait: Duration,
    /// statement_timeout for transactional migrations (`off` for none).
    #[arg(long, default_value = "off", value_parser = parse_optional_duration, global = true)]
    pub statement_timeout: OptionalDuration,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The verbs of `pgops migrate`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Verb {
    /// Apply every pending migration, oldest first.
    Run,
    /// Revert the newest applied migrations.
    Revert {
        /// How many to revert.
        #[arg(default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
    },
    /// Revert the newest applied migration and apply it again.
    Redo,
    /// List applied and pending migrations.
    Status,
    /// Check that applied migrations still match their SQL (exit 1 if not).
    Validate,
    /// Every migration up, each down and up again from the newest, the whole history again,
    /// then validate, with the schema compared at every step (exit 1 naming the first broken
    /// migration). Runs on an empty database it creates and drops on DATABASE_URL's server, on
    /// --scratch-url, or on a throwaway cluster (the default without DATABASE_URL).
    Check {
        /// Where to build the database.
        #[command(flatten)]
        place: PlaceArgs,
    },
    /// Compare DATABASE_URL's schema with what its applied migrations make (built on a
    /// scratch database or throwaway cluster); exit 1 on drift.
    Drift {
        /// Where to build the database.
        #[command(flatten)]
        place: PlaceArgs,
    },
    /// Find statements that lock or rewrite big tables, before they ship (exit 1 on findings,
    /// 2 on unreadable or unparsable files). Does not connect.
    Lint {
        /// Migrations directories, single migration directories or .sql files
        /// [default: --dir, or the sample schema with --sample-schema].
        paths: Vec<PathBuf>,
        /// Output format (`--json` is the same as `--format json`).
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        format: String,
        /// The tool that runs the migrations: `pgops` sets lock_timeout for transactional
        /// migrations, so only the others need their own; `other` for any other tool
        /// [default: [lint] runner in pgops.toml, or pgops].
        #[arg(long, value_parser = ["pgops", "other"])]
        runner: Option<String>,
        /// The PostgreSQL major the migrations target (13 to 18), or `server` to read it from
        /// DATABASE_URL [default: [lint] pg_version in pgops.toml, or any].
        #[arg(long)]
        pg_version: Option<String>,
        /// Do not report this rule (repeatable; adds to [lint] disabled in pgops.toml).
        #[arg(long = "disable", value_name = "RULE")]
        disable: Vec<String>,
        /// The configuration file [default: PGOPS_CONFIG, or ./pgops.toml when it exists].
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Where `check` and `drift` build their database.
#[derive(Debug, Clone, clap::Args)]
pub struct PlaceArgs {
    /// An empty database to use instead of creating one (never DATABASE_URL's own database
    /// unless given here).
    #[arg(long, env = "PGOPS_SCRATCH_DATABASE_URL", hide_env_values = true)]
    pub scratch_url: Option<String>,
    /// Start a throwaway cluster from the installed PostgreSQL binaries, even when
    /// DATABASE_URL is set.
    #[arg(long, conflicts_with = "scratch_url")]
    pub throwaway_cluster: bool,
}

/// A duration that may be switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalDuration(pub Option<Duration>);

fn parse_optional_duration(text: &str) -> Result<OptionalDuration, String> {
    match text.trim() {
        "off" | "0" | "none" => Ok(OptionalDuration(None)),
        other => humantime::parse_duration(other)
            .map(|d| OptionalDuration(Some(d)))
            .map_err(|e| format!("{e}; use a duration like 30s or 5m, or off")),
    }
}

/// Runs one `pgops migrate` command, writing its report to `out`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Exit, Failure> {
    if let Verb::Lint {
        paths,
        format,
        runner,
        pg_version,
        disable,
        config,
    } = &args.verb
    {
        let source = if !paths.is_empty() {
            crate::lint::Source::Paths(paths)
        } else if let Some(dir) = &args.dir {
            crate::lint::Source::Dir(dir)
        } else if args.sample_schema {
            crate::lint::Source::SampleSchema
        } else {
            return Err(Failure::usage(anyhow::anyhow!(
                "nothing to lint: give migration directories or .sql files, --dir DIR or \
                 PGOPS_MIGRATIONS_DIR (or --sample-schema for pgops's sample schema)"
            )));
        };
        let options = crate::lint::options(crate::lint::Flags {
            config: config.as_deref(),
            runner: runner.as_deref(),
            pg_version: pg_version.as_deref(),
            disable,
            database_url: args.database_url.as_deref(),
        })?;
        return crate::lint::run(source, &options, args.json || format == "json", out);
    }
    let set = match (&args.dir, args.sample_schema) {
        (Some(dir), _) => MigrationSet::from_dir(dir),
        (None, true) => pgops_schema::migrations(),
        (None, false) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "no migrations directory: pass --dir DIR or set PGOPS_MIGRATIONS_DIR \
                 (or --sample-schema for pgops's sample schema)"
            )));
        }
    }
    .map_err(Failure::usage)?;
    let options = RunOptions {
        lock_timeout: args.lock_timeout,
        lock_wait: args.lock_wait,
        statement_timeout: args.statement_timeout.0,
    };
    // The migration lock is a session advisory lock: never through transaction pooling.
    let given = crate::db::direct_url(
        args.database_url.as_deref(),
        "PGOPS_MIGRATE_DATABASE_URL",
        "pgops migrate's session advisory lock",
    )?;
    if let Verb::Check { place } | Verb::Drift { place } = &args.verb {
        let server = given
            .as_deref()
            .map(DatabaseUrl::parse)
            .transpose()
            .map_err(Failure::usage)?;
        let place = crate::migrate_check::Where {
            scratch_url: place.scratch_url.as_deref(),
            throwaway_cluster: place.throwaway_cluster,
        };
        return if matches!(args.verb, Verb::Check { .. }) {
            crate::migrate_check::check(&set, &options, place, server.as_ref(), args.json, out)
        } else {
            let live = database_url(given.as_deref())?;
            crate::migrate_check::drift(&set, &options, &live, place, args.json, out)
        };
    }
    let url = database_url(given.as_deref())?;
    let mut conn = connect(&url)?;
    let migrator = Migrator::new(&set).with_options(options);
    let failed = |e: MigrateError| scrubbed(&url, classify(e));
    let print =
        |out: &mut dyn Write, value: &serde_json::Value, text: &str| -> Result<(), Failure> {
            let written = if args.json {
                writeln!(out, "{value:#}")
            } else {
                write!(out, "{text}")
            };
            written
                .context("writing the report")
                .map_err(Failure::problem)
        };

    match &args.verb {
        Verb::Run => {
            let applied = migrator.run(&mut conn).map_err(failed)?;
            let text = if applied.is_empty() {
                format!(
                    "nothing to apply: {url} is up to date with {}\n",
                    set.origin()
                )
            } else {
                lines("applied", &applied)
            };
            print(out, &serde_json::json!({ "applied": applied }), &text)?;
        }
        Verb::Revert { count } => {
            let reverted = migrator
                .revert(&mut conn, *count as usize)
                .map_err(failed)?;
            print(
                out,
                &serde_json::json!({ "reverted": reverted }),
                &lines("reverted", &reverted),
            )?;
        }
        Verb::Redo => {
            let name = migrator.redo(&mut conn).map_err(failed)?;
            print(
                out,
                &serde_json::json!({ "redone": name }),
                &format!("redone {name}\n"),
            )?;
        }
        Verb::Status => {
            let status = migrator.status(&mut conn).map_err(failed)?;
            let mut text = format!("migrations from {}\n", set.origin());
            for m in &status.migrations {
                let state = match m.applied_at {
                    Some(at) => format!("applied {}", at.format("%Y-%m-%d %H:%M:%S UTC")),
                    None => "pending".to_owned(),
                };
                let tx = if m.run_in_transaction {
                    ""
                } else {
                    "  (outside a transaction)"
                };
                text.push_str(&format!("  {state:<31} {}{tx}\n", m.name));
            }
            for version in &status.unknown_applied {
                text.push_str(&format!(
                    "  applied, unknown to the source: version {version}\n"
                ));
            }
            let pending = status.pending().count();
            text.push_str(&format!(
                "{} applied, {pending} pending\n",
                status.migrations.len() - pending
            ));
            let value = serde_json::to_value(&status)
                .context("encoding the status")
                .map_err(Failure::problem)?;
            print(out, &value, &text)?;
        }
        Verb::Validate => {
            let findings = migrator.validate(&mut conn).map_err(failed)?;
            let errors = findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            let mut text = String::new();
            for f in &findings {
                let severity = if f.severity == Severity::Error {
                    "error"
                } else {
                    "warning"
                };
                text.push_str(&format!("{severity}: {}\n", f.detail));
            }
            text.push_str(&format!(
                "validate: {errors} error(s), {} warning(s) against {}\n",
                findings.len() - errors,
                set.origin()
            ));
            let value = serde_json::json!({ "ok": errors == 0, "findings": findings });
            print(out, &value, &text)?;
            if errors > 0 {
                return Ok(Exit::Problem);
            }
        }
        // Linted, checked or compared above.
        Verb::Lint { .. } | Verb::Check { .. } | Verb::Drift { .. } => {}
    }
    Ok(Exit::Ok)
}

/// Input, connection and setup problems are usage errors (2): a directory that cannot be
/// read, a malformed migration, a database that cannot be reached or is not empty for a check,
/// a pooler in the way of the lock. Failures on the database are problems (1).
pub(crate) fn classify(e: MigrateError) -> Failure {
    match e {
        MigrateError::Read { .. }
        | MigrateError::InvalidMigration { .. }
        | MigrateError::DuplicateVersion { .. }
        | MigrateError::LockNotHeld
        | MigrateError::NotFresh { .. }
        | MigrateError::Connect { .. }
        | MigrateError::Url(_) => Failure::usage(e),
        other => Failure::problem(other),
    }
}

/// The failure with every occurrence of `url`'s password removed from its text.
pub(crate) fn scrubbed(url: &DatabaseUrl, failure: Failure) -> Failure {
    let message = url.scrub(&format!("{:#}", failure.error));
    Failure {
        exit: failure.exit,
        error: anyhow::anyhow!(message),
    }
}

fn lines(verb: &str, names: &[String]) -> String {
    let mut text: String = names.iter().map(|n| format!("{verb} {n}\n")).collect();
    text.push_str(&format!("{} migration(s) {verb}\n", names.len()));
    text
}
