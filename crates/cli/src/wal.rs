//! `pgops wal push %p` (archive_command), `pgops wal fetch %f %p` (restore_command) and
//! `pgops wal setup [--apply]`.

use std::{io::Write, path::PathBuf};

use diesel::{RunQueryDsl, connection::SimpleConnection as _};
use pgops_backup::wal;
use serde::Deserialize;

use crate::{
    db::{connect, database_url},
    exit::{Exit, Failure},
};

/// Options of `pgops wal`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
    /// The repository: file:///var/backups/pgops or s3://bucket/prefix.
    #[arg(long, env = "PGOPS_REPO", global = true)]
    pub repo: Option<String>,
    /// The server to configure (setup only); its password is never printed.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
}

/// The verbs of `pgops wal`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Verb {
    /// Archive one WAL file (archive_command = 'pgops wal push --repo URL %p'). Pushing the
    /// same content twice succeeds; different content under the same name fails.
    Push {
        /// The file, as PostgreSQL passes %p.
        path: PathBuf,
    },
    /// Restore one WAL file after checking its checksums (restore_command =
    /// 'pgops wal fetch --repo URL %f %p'); exits 1 without a word when the archive lacks it.
    Fetch {
        /// The file name, as PostgreSQL passes %f.
        name: String,
        /// Where to write it, as PostgreSQL passes %p.
        path: PathBuf,
    },
    /// Print (or with --apply, apply through ALTER SYSTEM) the archiving settings, and say
    /// whether a restart is needed.
    Setup {
        /// Apply them.
        #[arg(long)]
        apply: bool,
        /// Switch to a new segment at least this often when there is WAL to archive
        /// (archive_timeout), so a quiet database still reaches the archive within it: the
        /// most a restore can lose. 1m to 5m is usual; each switch stores a segment.
        #[arg(long, value_parser = humantime::parse_duration)]
        archive_timeout: Option<std::time::Duration>,
        /// A file of VAR=value lines (AWS_*, PGOPS_REPO_RECIPIENTS_FILE, ...) that
        /// archive_command and restore_command read first: the server's environment does
        /// not have them. It must be readable by the server's OS user.
        #[arg(long, value_name = "PATH")]
        env_file: Option<PathBuf>,
    },
    /// List archived files and name any gap in the sequence (exit 1 on gaps).
    Check,
}

/// What is missing from the archive, one line per run: along the newest timeline's history
/// (what a restore follows) from the oldest physical backup's start, or from the first
/// archived segment without one; and holes inside any other timeline. Also one line that
/// describes the timelines.
fn archive_gaps(
    store: &dyn pgops_backup::repo::Store,
) -> pgops_backup::Result<(Vec<String>, String)> {
    use pgops_backup::timeline::{Archive, Until};
    let archive = Archive::read(store)?;
    let mut missing: Vec<String> = archive
        .unreadable
        .iter()
        .map(|why| format!("history: {why}"))
        .collect();
    let mut covered = std::collections::BTreeSet::new();
    if let Some(newest) = archive.newest_timeline() {
        match archive.path(newest) {
            Ok(path) => {
                let backups = pgops_backup::list(store)?;
                let from_backup = backups
                    .iter()
                    .filter_map(|(m, _)| m.wal.as_ref())
                    .filter_map(|w| Some((w.timeline, w.start_lsn.parse::<pgops_pg::Lsn>().ok()?)))
                    .filter(|(tli, start)| Archive::on_path(&path, *tli, *start))
                    .map(|(_, start)| start)
                    .min();
                let first_archived = archive
                    .segments
                    .iter()
                    .find(|s| pgops_backup::timeline::provider(&path, s.number) == s.timeline)
                    .map(|s| s.start());
                if let Some(start) = from_backup.or(first_archived) {
                    for gap in archive.plan(&path, start, Until::End).gaps {
                        covered.extend(gap.segments.iter().cloned());
                        missing.push(gap.to_string());
                    }
                }
            }
            Err(e) => missing.push(pgops_pg::report(&e)),
        }
    }
    let names: Vec<String> = archive.segments.iter().map(|s| s.name()).collect();
    for name in wal::gaps(&names) {
        if !covered.contains(&name) {
            missing.push(name);
        }
    }
    let timelines = if archive.timelines().len() > 1 {
        format!("timelines: {}", archive.describe())
    } else {
        String::new()
    };
    Ok((missing, timelines))
}

/// Runs one `pgops wal` command.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Exit, Failure> {
    // Archiving (and setting archiving up) may create the repository; reading needs one.
    let access = match args.verb {
        Verb::Push { .. } | Verb::Setup { .. } => pgops_backup::repo::Access::Create,
        Verb::Fetch { .. } | Verb::Check => pgops_backup::repo::Access::Existing,
    };
    let (repo_url, store) = crate::backup::repository(args.repo.as_deref(), access)?;
    match &args.verb {
        Verb::Push { path } => match wal::push(&*store, path) {
            Ok(wal::Pushed::Stored) => Ok(Exit::Ok),
            Ok(wal::Pushed::AlreadyArchived) => {
                tracing::info!(file = %path.display(), "already archived with the same content");
                Ok(Exit::Ok)
            }
            Err(e) => Err(Failure::problem(e)),
        },
        Verb::Fetch { name, path } => {
            wal::check_name(name).map_err(Failure::usage)?;
            match wal::fetch(&*store, name, path) {
                Ok(true) => Ok(Exit::Ok),
                // PostgreSQL asks for files that may not exist (the next timeline's history,
                // the segment after the last): not finding one is not worth a log line.
                Ok(false) => Ok(Exit::Problem),
                Err(e) => Err(Failure::problem(e)),
            }
        }
        Verb::Check => {
            let names = wal::archived(&*store).map_err(Failure::problem)?;
            let (files, foreign) = wal::classify(&names);
            let segments: Vec<&String> = files
                .iter()
                .filter(|(_, f)| matches!(f, pgops_pg::WalFile::Segment(_)))
                .map(|(name, _)| name)
                .collect();
            let _ = writeln!(
                out,
                "{} files archived; segments {} to {}",
                files.len(),
                segments.first().map_or("-", |s| s.as_str()),
                segments.last().map_or("-", |s| s.as_str())
            );
            let (missing, timelines) = archive_gaps(&*store).map_err(Failure::problem)?;
            if !timelines.is_empty() {
                let _ = writeln!(out, "{timelines}");
            }
            for gap in &missing {
                let _ = writeln!(out, "missing {gap}");
            }
            let conflicts = wal::conflicts(&*store).map_err(Failure::problem)?;
            for c in &conflicts {
                let _ = writeln!(
                    out,
                    "refused {} from {} at {}: the archive holds other content (SHA-256 {} there, {} refused); two servers archived one timeline (split brain)",
                    c.name,
                    if c.host.is_empty() {
                        "a server"
                    } else {
                        c.host.as_str()
                    },
                    c.refused_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    c.archived_sha256,
                    c.refused_sha256
                );
            }
            for name in &foreign {
                let _ = writeln!(out, "ignored wal/{name}: not a WAL file name");
            }
            if segments.is_empty() {
                let _ = writeln!(
                    out,
                    "no WAL segment is archived: check that archive_mode is on and archive_command \
                     runs `pgops wal push` into this repository (`pgops wal setup`)"
                );
                return Ok(Exit::Problem);
            }
            Ok(if missing.is_empty() && conflicts.is_empty() {
                Exit::Ok
            } else {
                Exit::Problem
            })
        }
        Verb::Setup {
            apply,
            archive_timeout,
            env_file,
        } => {
            let exe = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "pgops".into());
            let prefix = match env_file {
                Some(path) => format!(
                    "{}exec ",
                    wal::env_file_prefix(path).map_err(Failure::usage)?
                ),
                None => String::new(),
            };
            let command = format!(
                "{prefix}{exe} wal push --repo {} %p",
                wal::shell_quote(repo_url)
            );
            let restore = format!(
                "{prefix}{exe} wal fetch --repo {} %f %p",
                wal::shell_quote(repo_url)
            );
            let mut statements = vec![
                "ALTER SYSTEM SET wal_level = 'replica'".to_owned(),
                "ALTER SYSTEM SET archive_mode = 'on'".to_owned(),
                format!(
                    "ALTER SYSTEM SET archive_command = {}",
                    pgops_pg::quote_literal(&command)
                ),
            ];
            if let Some(timeout) = archive_timeout {
                let seconds = timeout.as_secs();
                if seconds == 0 || seconds > i32::MAX as u64 {
                    return Err(Failure::usage(anyhow::anyhow!(
                        "--archive-timeout {}: give at least one second (1m to 5m is usual)",
                        humantime::format_duration(*timeout)
                    )));
                }
                statements.push(format!("ALTER SYSTEM SET archive_timeout = '{seconds}s'"));
            }
            statements.push("SELECT pg_reload_conf()".to_owned());
            if !*apply {
                let _ = writeln!(out, "{};", statements.join(";\n"));
                let _ = writeln!(out, "-- restore_command for recovery: {restore}");
                let _ = writeln!(
                    out,
                    "-- wal_level and archive_mode take effect after a restart; archive_command after the reload"
                );
                return Ok(Exit::Ok);
            }
            let given = crate::db::direct_url(
                args.database_url.as_deref(),
                "PGOPS_BACKUP_DATABASE_URL",
                "the archive settings and checks",
            )?;
            let url = database_url(given.as_deref())?;
            // ALTER SYSTEM on the primary of a multi-host URL.
            let url = pgops_backup::member::pick(&url, None).map_err(Failure::usage)?;
            let mut conn = connect(&url)?;
            #[derive(Deserialize)]
            struct Level {
                wal_level: String,
            }
            let level: Level = pgops_pg::rows::row(
                &mut conn,
                "SELECT current_setting('wal_level') AS wal_level",
                "reading wal_level",
            )
            .map_err(Failure::usage)?;
            #[derive(Deserialize, PartialEq)]
            struct LoadTime {
                at: String,
            }
            let load_time = |conn: &mut diesel::PgConnection| -> Result<LoadTime, Failure> {
                pgops_pg::rows::row(
                    conn,
                    "SELECT pg_conf_load_time()::text AS at",
                    "reading pg_conf_load_time()",
                )
                .map_err(Failure::problem)
            };
            let loaded = load_time(&mut conn)?;
            for statement in &statements {
                if statement.contains("wal_level") && level.wal_level != "minimal" {
                    continue; // replica or logical already archive enough
                }
                diesel::sql_query(statement)
                    .execute(&mut conn)
                    .map_err(|e| {
                        Failure::usage(anyhow::anyhow!(
                            "{statement}: {e}; ALTER SYSTEM needs a superuser"
                        ))
                    })?;
            }
            // The reload is asynchronous: wait until this session has read the configuration
            // again (pg_conf_load_time moves; archive_command itself reads "(disabled)" while
            // archive_mode is off).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                if load_time(&mut conn)? != loaded {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(Failure::problem(anyhow::anyhow!(
                        "the server did not reload its configuration within 10 s of \
                         pg_reload_conf(); check the server log for a configuration error"
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            #[derive(Deserialize)]
            struct Pending {
                name: String,
            }
            let pending: Vec<Pending> = pgops_pg::rows::rows(
                &mut conn,
                "SELECT name FROM pg_settings WHERE pending_restart",
                "reading pending_restart",
            )
            .map_err(Failure::problem)?;
            let _ = conn.batch_execute("SELECT 1");
            let _ = writeln!(out, "archive_command = {command}");
            if pending.is_empty() {
                let _ = writeln!(out, "applied; no restart needed");
            } else {
                let names: Vec<&str> = pending.iter().map(|p| p.name.as_str()).collect();
                let _ = writeln!(
                    out,
                    "applied; restart the server for {} to take effect",
                    names.join(", ")
                );
            }
            Ok(Exit::Ok)
        }
    }
}
