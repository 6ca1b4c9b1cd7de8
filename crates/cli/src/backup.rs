//! `pgops backup <create|list|verify|restore|prune>`: logical backups into a `file://` or
//! `s3://` repository, with checksums, restore drills into throwaway databases and retention.

use std::{io::Write, time::Duration};

use pgops_backup::{logical, repo, retention};
use pgops_pool::DatabaseUrl;

use crate::{
    db::database_url,
    exit::{Exit, Failure},
};

/// Options of `pgops backup`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
    /// The repository: file:///var/backups/pgops or s3://bucket/prefix (AWS_* variables for S3).
    #[arg(long, env = "PGOPS_REPO", global = true)]
    pub repo: Option<String>,
    /// The server (and, for create, the database) to work with; its password is never printed.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The verbs of `pgops backup`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Verb {
    /// Take a backup.
    Create {
        /// Only `logical` (pg_dump) for now.
        #[arg(long, value_parser = ["logical"], default_value = "logical")]
        kind: String,
        /// The database to dump [default: the one DATABASE_URL names].
        #[arg(long)]
        database: Option<String>,
        /// Dump with N parallel jobs (directory format).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
        jobs: Option<u32>,
        /// zstd level, 1 (fast) to 19 (small).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
        level: i32,
    },
    /// List the backups (only complete ones: a backup exists once its manifest is written).
    List,
    /// Check every checksum; with --restore, restore into a throwaway database and compare the
    /// row counts recorded at backup time (exit 1 on any mismatch).
    Verify {
        /// The backup id.
        id: String,
        /// Also restore it into a throwaway database on DATABASE_URL's server.
        #[arg(long)]
        restore: bool,
    },
    /// Restore a backup into a new database (checksums are verified first).
    Restore {
        /// The backup id.
        id: String,
        /// The database to create.
        #[arg(long)]
        database: String,
        /// Parallel pg_restore jobs.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
        jobs: Option<u32>,
        /// Drop the target database first if it exists.
        #[arg(long)]
        replace: bool,
    },
    /// Delete backups the retention policy does not keep (the newest is always kept).
    Prune {
        /// Keep the newest N backups.
        #[arg(long, default_value_t = 0)]
        keep_last: usize,
        /// Keep the newest backup of each of the last D days.
        #[arg(long, default_value_t = 0)]
        keep_daily: usize,
        /// Keep the newest backup of each of the last W weeks.
        #[arg(long, default_value_t = 0)]
        keep_weekly: usize,
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn fail(error: pgops_backup::Error) -> Failure {
    use pgops_backup::Error as E;
    match error {
        E::Corrupt { .. } | E::Program { .. } | E::Storage { .. } | E::Io { .. } => {
            Failure::problem(error)
        }
        E::Database { .. } => Failure::usage(error),
        _ => Failure::usage(error),
    }
}

struct Bar(Option<indicatif::ProgressBar>);

impl logical::Progress for Bar {
    fn bytes(&mut self, raw: u64, stored: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(raw);
            bar.set_message(format!("{} stored", indicatif::HumanBytes(stored)));
        }
    }
}

fn emit(out: &mut dyn Write, text: &str) -> Result<(), Failure> {
    out.write_all(text.as_bytes())
        .map_err(|e| Failure::problem(anyhow::anyhow!("writing output: {e}")))
}

fn json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::problem(anyhow::anyhow!("encoding JSON: {e}")))?;
    emit(out, &format!("{text}\n"))
}

/// Runs one `pgops backup` command.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Exit, Failure> {
    let repo_url = args.repo.as_deref().ok_or_else(|| {
        Failure::usage(anyhow::anyhow!("no repository; pass --repo file:///var/backups/pgops (or s3://bucket/prefix) or set PGOPS_REPO"))
    })?;
    let store = repo::open(repo_url).map_err(fail)?;
    let url = || database_url(args.database_url.as_deref());
    match &args.verb {
        Verb::Create {
            database,
            jobs,
            level,
            ..
        } => {
            let mut url: DatabaseUrl = url()?;
            if let Some(database) = database {
                url = pgops_backup::programs::with_database(&url, database).map_err(fail)?;
            }
            let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
                let bar = indicatif::ProgressBar::no_length();
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {bytes} dumped at {binary_bytes_per_sec}, {msg} [{elapsed}]",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            });
            let mut progress = Bar(bar);
            let options = logical::CreateOptions {
                jobs: *jobs,
                level: *level,
            };
            let result = logical::create(&*store, &url, &options, &mut progress);
            if let Some(bar) = &progress.0 {
                bar.finish_and_clear();
            }
            let manifest = result.map_err(fail)?;
            if args.json {
                json(out, &manifest)?;
            } else {
                emit(
                    out,
                    &format!(
                        "backup {} of {}: {} dumped, {} stored ({} tables) in {}\n",
                        manifest.id,
                        manifest.database,
                        indicatif::HumanBytes(manifest.raw_bytes()),
                        indicatif::HumanBytes(manifest.bytes()),
                        manifest.tables.len(),
                        store.url()
                    ),
                )?;
            }
            Ok(Exit::Ok)
        }
        Verb::List => {
            let backups = pgops_backup::list(&*store).map_err(fail)?;
            if args.json {
                let rows: Vec<_> = backups
                    .iter()
                    .map(|(m, v)| serde_json::json!({ "manifest": m, "last_verification": v }))
                    .collect();
                json(out, &rows)?;
            } else {
                let mut text = format!(
                    "{:<40} {:<8} {:<16} {:<20} {:>10} {:>10}  verified\n",
                    "id", "kind", "database", "finished", "stored", "raw"
                );
                for (m, v) in &backups {
                    text.push_str(&format!(
                        "{:<40} {:<8} {:<16} {:<20} {:>10} {:>10}  {}\n",
                        m.id,
                        "logical",
                        m.database,
                        m.finished_at.format("%Y-%m-%d %H:%M:%S"),
                        indicatif::HumanBytes(m.bytes()).to_string(),
                        indicatif::HumanBytes(m.raw_bytes()).to_string(),
                        match v {
                            Some(v) if v.ok => format!("ok {}", v.at.format("%Y-%m-%d %H:%M")),
                            Some(v) => format!("FAILED {}", v.at.format("%Y-%m-%d %H:%M")),
                            None => "never".into(),
                        }
                    ));
                }
                emit(out, &text)?;
            }
            Ok(Exit::Ok)
        }
        Verb::Verify { id, restore } => {
            let server = if *restore { Some(url()?) } else { None };
            let verification = match logical::verify(&*store, id, server.as_ref()) {
                Ok(v) => v,
                Err(e @ pgops_backup::Error::Corrupt { .. }) => return Err(Failure::problem(e)),
                Err(e) => return Err(fail(e)),
            };
            if args.json {
                json(out, &verification)?;
            } else {
                let mut text = format!(
                    "backup {id}: checksums {}",
                    if verification.checksums_ok {
                        "ok"
                    } else {
                        "FAILED"
                    }
                );
                if let Some(seconds) = verification.restore_seconds {
                    text.push_str(&format!(", restored in {seconds:.1}s"));
                }
                text.push_str(if verification.ok { ", ok\n" } else { "\n" });
                for p in &verification.problems {
                    text.push_str(&format!("  {p}\n"));
                }
                emit(out, &text)?;
            }
            Ok(if verification.ok {
                Exit::Ok
            } else {
                Exit::Problem
            })
        }
        Verb::Restore {
            id,
            database,
            jobs,
            replace,
        } => {
            let url = url()?;
            let seconds = logical::restore(
                &*store,
                id,
                &url,
                database,
                &logical::RestoreOptions {
                    jobs: *jobs,
                    replace: *replace,
                },
            )
            .map_err(fail)?;
            if args.json {
                json(
                    out,
                    &serde_json::json!({ "id": id, "database": database, "seconds": seconds }),
                )?;
            } else {
                emit(
                    out,
                    &format!("restored {id} into database {database} in {seconds:.1}s\n"),
                )?;
            }
            Ok(Exit::Ok)
        }
        Verb::Prune {
            keep_last,
            keep_daily,
            keep_weekly,
            dry_run,
        } => {
            let policy = retention::Policy {
                keep_last: *keep_last,
                keep_daily: *keep_daily,
                keep_weekly: *keep_weekly,
            };
            let decisions = pgops_backup::prune(&*store, policy, *dry_run).map_err(fail)?;
            if args.json {
                json(out, &decisions)?;
            } else {
                let mut text = String::new();
                for d in &decisions {
                    text.push_str(&format!(
                        "{:<6} {:<40} {}\n",
                        if d.keep {
                            "keep"
                        } else if *dry_run {
                            "would delete"
                        } else {
                            "delete"
                        },
                        d.id,
                        d.reasons.join(", ")
                    ));
                }
                emit(out, &text)?;
            }
            Ok(Exit::Ok)
        }
    }
}
