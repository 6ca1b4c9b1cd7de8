//! `pgops backup <create|list|verify|restore|prune>`: logical backups into a `file://` or
//! `s3://` repository, with checksums, restore drills into throwaway databases and retention.

use std::{io::Write, time::Duration};

use pgops_backup::{logical, manifest::Kind, repo, retention};
use pgops_pg::DatabaseUrl;

use crate::{
    db::{database_url, direct_url},
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
        /// `logical` (pg_dump of one database) or `physical` (pg_basebackup of the cluster, for
        /// point-in-time recovery with `pgops wal push` archiving).
        #[arg(long, value_parser = ["logical", "physical"], default_value = "logical")]
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
        /// Which member of the cluster to read from: the primary or a standby. With a
        /// multi-host URL (h1:p1,h2:p2,...) every member is asked [default: the primary]; with
        /// one host, that server, checked to have this role when given.
        #[arg(long, value_parser = ["primary", "standby"])]
        from: Option<String>,
    },
    /// List the backups (only complete ones: a backup exists once its manifest is written).
    List,
    /// Check every checksum; with --restore, restore into a throwaway database and compare the
    /// row counts recorded at backup time (exit 1 on any mismatch).
    Verify {
        /// The backup id, or latest, latest-logical, latest-physical.
        id: String,
        /// Also restore it into a throwaway database on DATABASE_URL's server.
        #[arg(long)]
        restore: bool,
    },
    /// Restore a logical backup into a new database (--database), or lay out a physical one
    /// for point-in-time recovery (--to-dir). Checksums are verified first.
    Restore {
        /// The backup id, or latest-logical (for --to-dir: chosen from the target when omitted).
        id: Option<String>,
        /// The database to create (logical backups).
        #[arg(long, conflicts_with = "to_dir", required_unless_present = "to_dir")]
        database: Option<String>,
        /// An empty directory to lay the data directory out in (physical backups).
        #[arg(long)]
        to_dir: Option<std::path::PathBuf>,
        /// Recover to this time, with its zone: as PostgreSQL prints it
        /// (2026-11-30 04:37:31.546185+00, 2026-11-30 04:37:31 UTC) or RFC 3339.
        #[arg(long, group = "target", requires = "to_dir")]
        target_time: Option<String>,
        /// Recover to this WAL position (e.g. 0/3000060).
        #[arg(long, group = "target", requires = "to_dir")]
        target_lsn: Option<String>,
        /// Recover to a restore point (`pgops backup restore-point NAME`).
        #[arg(long, group = "target", requires = "to_dir")]
        target_name: Option<String>,
        /// Recover through this transaction id.
        #[arg(long, group = "target", requires = "to_dir")]
        target_xid: Option<String>,
        /// Replay every archived segment.
        #[arg(long, group = "target", requires = "to_dir")]
        latest: bool,
        /// What the server does at the target.
        #[arg(long, value_parser = ["promote", "pause"], default_value = "promote", requires = "to_dir")]
        target_action: String,
        /// The timeline to recover along: a number, or latest (the newest in the archive,
        /// the default). A target written on an old primary after a failover lies on its
        /// abandoned timeline and is reached only by naming that timeline.
        #[arg(long, requires = "to_dir", value_name = "N|latest")]
        target_timeline: Option<String>,
        /// Lay it out as a standby (standby.signal, following every new timeline through the
        /// archive and, with --primary-conninfo, by streaming): a replica rebuilt from the
        /// repository alone.
        #[arg(long, requires = "to_dir", conflicts_with = "target")]
        standby: bool,
        /// For --standby: where it streams from, as a libpq connection string without a
        /// password (the server's user reads it from its ~/.pgpass); a multi-host URL with
        /// target_session_attrs=read-write follows the primary across failovers.
        #[arg(long, requires = "standby")]
        primary_conninfo: Option<String>,
        /// With --to-dir: a file of VAR=value lines (AWS_* for an s3:// repository, ...) the
        /// restored server's restore_command reads first, since a server started by systemd or
        /// pg_ctl has none of this shell's environment. Readable by the server's OS user.
        #[arg(long, requires = "to_dir", value_name = "PATH")]
        env_file: Option<std::path::PathBuf>,
        /// Parallel pg_restore jobs.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
        jobs: Option<u32>,
        /// Drop the target database first if it exists.
        #[arg(long)]
        replace: bool,
    },
    /// A restore drill: point-in-time restore into a throwaway server on a free port, a probe
    /// query, the time it took (RTO) and the point reached, recorded in the repository (exit 1
    /// when it fails).
    Drill {
        /// Recover to this time, with its zone (as PostgreSQL prints it, or RFC 3339)
        /// [default: everything archived].
        #[arg(long)]
        target_time: Option<String>,
        /// The probe query (one value).
        #[arg(long, default_value = "SELECT count(*) FROM pg_database")]
        probe: String,
        /// The role to connect as on the restored server.
        #[arg(long, default_value = "postgres")]
        user: String,
    },
    /// Create a named restore point on the server, a target for `restore --target-name`.
    RestorePoint {
        /// Its name.
        name: String,
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
        /// Prune only backups of this kind, leaving the other's as they are: a policy per
        /// kind is one run per kind [default: both, each series on its own].
        #[arg(long, value_parser = ["logical", "physical"])]
        kind: Option<String>,
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn fail(error: pgops_backup::Error) -> Failure {
    use pgops_backup::Error as E;
    match error {
        E::Corrupt { .. }
        | E::Program { .. }
        | E::Storage { .. }
        | E::Io { .. }
        | E::Database { .. } => Failure::problem(error),
        // Bad input, a repository or server that cannot be reached.
        _ => Failure::usage(error),
    }
}

struct Bar(Option<indicatif::ProgressBar>);

impl pgops_backup::progress::Progress for Bar {
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

/// The server backups read from: never through PgBouncer's transaction pooling.
fn backup_url(args: &Args) -> Result<Option<String>, Failure> {
    direct_url(
        args.database_url.as_deref(),
        "PGOPS_BACKUP_DATABASE_URL",
        "pg_dump's session settings, the backup API and the replication protocol",
    )
}

/// `--target-time`, in the forms PostgreSQL prints or RFC 3339.
fn target_time_arg(text: &str) -> Result<chrono::DateTime<chrono::Utc>, Failure> {
    pgops_backup::physical::parse_target_time(text).map_err(Failure::usage)
}

/// The names that stand for the newest backup (of one kind): `latest`, `latest-logical`,
/// `latest-physical`, so scripts and runbooks need no id.
pub const LATEST_ALIASES: &[&str] = &["latest", "latest-logical", "latest-physical"];

/// Turns an alias from [`LATEST_ALIASES`] into the id of the newest matching backup among
/// `backups` (oldest first, as `pgops_backup::list` gives them); any other id is returned
/// as it is.
pub fn pick_id(backups: &[pgops_backup::manifest::Manifest], id: &str) -> Result<String, String> {
    let kind = match id {
        "latest" => None,
        "latest-logical" => Some(Kind::Logical),
        "latest-physical" => Some(Kind::Physical),
        other => return Ok(other.to_owned()),
    };
    backups
        .iter()
        .rev()
        .find(|m| kind.is_none_or(|k| m.kind == k))
        .map(|m| m.id.clone())
        .ok_or_else(|| {
            format!(
                "`{id}`: the repository holds no {}backup yet; take one with `pgops backup create{}`",
                kind.map_or("", |k| if k == Kind::Logical { "logical " } else { "physical " }),
                if kind == Some(Kind::Physical) { " --kind physical" } else { "" }
            )
        })
}

fn resolve_id(store: &dyn repo::Store, id: &str) -> Result<String, Failure> {
    if !LATEST_ALIASES.contains(&id) {
        return Ok(id.to_owned());
    }
    let backups: Vec<_> = pgops_backup::list(store)
        .map_err(fail)?
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    pick_id(&backups, id).map_err(|e| Failure::usage(anyhow::anyhow!(e)))
}

/// The repository from `--repo` or `PGOPS_REPO`, opened; shared with `pgops wal`.
pub(crate) fn repository(
    url: Option<&str>,
    access: repo::Access,
) -> Result<(&str, Box<dyn repo::Store>), Failure> {
    let url = url.ok_or_else(|| {
        Failure::usage(anyhow::anyhow!(
            "no repository; pass --repo file:///var/backups/pgops (or s3://bucket/prefix) or set PGOPS_REPO"
        ))
    })?;
    let store = repo::open(url, access).map_err(fail)?;
    let keys = pgops_backup::crypto::Keys::from_env().map_err(Failure::usage)?;
    let store = pgops_backup::crypto::settle(store, keys, access).map_err(fail)?;
    Ok((url, store))
}

/// Runs one `pgops backup` command: opens the repository the verb needs, then hands over to
/// the verb's own function.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Exit, Failure> {
    // Only a backup writes the first object; every other verb needs a repository that exists.
    let access = match args.verb {
        Verb::Create { .. } => repo::Access::Create,
        _ => repo::Access::Existing,
    };
    let (repo_url, store) = repository(args.repo.as_deref(), access)?;
    let ctx = Ctx {
        args,
        repo_url,
        store: &*store,
        out,
    };
    match &args.verb {
        Verb::Create { kind, from, .. } if kind == "physical" => {
            create_physical(ctx, role_arg(from.as_deref()))
        }
        Verb::Drill {
            target_time,
            probe,
            user,
        } => drill(ctx, target_time.as_deref(), probe, user),
        Verb::RestorePoint { name } => restore_point(ctx, name),
        Verb::Restore {
            id,
            to_dir: Some(dir),
            target_time,
            target_lsn,
            target_name,
            target_xid,
            target_action,
            target_timeline,
            standby,
            primary_conninfo,
            env_file,
            ..
        } => restore_to_dir(
            ctx,
            dir,
            &PitrArgs {
                id: id.as_deref(),
                target_time: target_time.as_deref(),
                target_lsn: target_lsn.as_deref(),
                target_name: target_name.as_deref(),
                target_xid: target_xid.as_deref(),
                target_action,
                target_timeline: target_timeline.as_deref(),
                standby: *standby,
                primary_conninfo: primary_conninfo.as_deref(),
                env_file: env_file.as_deref(),
            },
        ),
        Verb::Create {
            database,
            jobs,
            level,
            from,
            ..
        } => create_logical(
            ctx,
            database.as_deref(),
            *jobs,
            *level,
            role_arg(from.as_deref()),
        ),
        Verb::List => list(ctx),
        Verb::Verify { id, restore } => verify(ctx, id, *restore),
        Verb::Restore {
            id,
            database,
            jobs,
            replace,
            ..
        } => restore(ctx, id.as_deref(), database.as_deref(), *jobs, *replace),
        Verb::Prune {
            keep_last,
            keep_daily,
            keep_weekly,
            kind,
            dry_run,
        } => {
            let policy = retention::Policy {
                keep_last: *keep_last,
                keep_daily: *keep_daily,
                keep_weekly: *keep_weekly,
            };
            let kind = kind.as_deref().map(|k| {
                if k == "physical" {
                    Kind::Physical
                } else {
                    Kind::Logical
                }
            });
            prune(ctx, policy, kind, *dry_run)
        }
    }
}

/// This binary, which a restored server's `restore_command` runs as `pgops wal fetch`.
fn pgops_exe() -> Result<std::path::PathBuf, Failure> {
    std::env::current_exe()
        .map_err(|e| Failure::problem(anyhow::anyhow!("locating the pgops binary: {e}")))
}

/// What every verb gets: the options, the opened repository, where to write.
struct Ctx<'a> {
    args: &'a Args,
    repo_url: &'a str,
    store: &'a dyn repo::Store,
    out: &'a mut dyn Write,
}

/// `--from`, as a role.
fn role_arg(from: Option<&str>) -> Option<pgops_backup::member::Role> {
    from.map(|f| match f {
        "standby" => pgops_backup::member::Role::Standby,
        _ => pgops_backup::member::Role::Primary,
    })
}

/// The server a command works with: the member of a multi-host URL with the role it needs.
fn member_url(
    args: &Args,
    role: Option<pgops_backup::member::Role>,
) -> Result<DatabaseUrl, Failure> {
    let url: DatabaseUrl = database_url(backup_url(args)?.as_deref())?;
    pgops_backup::member::pick(&url, role).map_err(fail)
}

/// `create --kind physical`: a base backup for point-in-time recovery.
fn create_physical(
    ctx: Ctx<'_>,
    role: Option<pgops_backup::member::Role>,
) -> Result<Exit, Failure> {
    let Ctx {
        args, store, out, ..
    } = ctx;
    let url = member_url(args, role)?;
    let manifest = pgops_backup::physical::create(store, &url, &mut pgops_backup::progress::Quiet)
        .map_err(fail)?;
    // Point-in-time recovery from this backup starts once the WAL up to its end is in the
    // archive, as pgBackRest's archive-check waits for.
    let wait = Duration::from_secs(60);
    match pgops_backup::physical::wait_until_archived(&url, &manifest, wait) {
        Ok(Some(true) | None) => {}
        Ok(Some(false)) => tracing::warn!(
            backup = %manifest.id,
            "the backup is stored and whole, but the WAL up to its end was not archived within {}s: \
             nothing after it can be recovered until it is; check archiving \
             (pg_stat_archiver, `pgops wal check`)",
            wait.as_secs()
        ),
        Err(e) => tracing::warn!(
            backup = %manifest.id,
            error = %pgops_pg::report(&e),
            "the backup is stored and whole, but whether its WAL reached the archive could not be read"
        ),
    }
    if args.json {
        json(out, &manifest)?;
    } else {
        let wal = manifest.wal.as_ref();
        emit(
            out,
            &format!(
                "backup {} of {} (timeline {}, {} to {}): {} stored in {}\n",
                manifest.id,
                manifest.server,
                wal.map_or(0, |w| w.timeline),
                wal.map_or("?", |w| w.start_lsn.as_str()),
                wal.map_or("?", |w| w.end_lsn.as_str()),
                indicatif::HumanBytes(manifest.bytes()),
                store.url()
            ),
        )?;
    }
    Ok(Exit::Ok)
}

/// `drill`: a whole restore into a throwaway server, timed.
fn drill(
    ctx: Ctx<'_>,
    target_time: Option<&str>,
    probe: &str,
    user: &str,
) -> Result<Exit, Failure> {
    let Ctx {
        args,
        repo_url,
        store,
        out,
    } = ctx;
    let target = match target_time {
        Some(t) => pgops_backup::physical::Target::Time(target_time_arg(t)?),
        None => pgops_backup::physical::Target::Latest,
    };
    let exe = pgops_exe()?;
    let drill =
        pgops_backup::drill::run(store, repo_url, &exe, &target, probe, user).map_err(fail)?;
    if args.json {
        json(out, &drill)?;
    } else if drill.ok {
        emit(
            out,
            &format!(
                "drill ok: {} restored and answering in {:.1}s (RTO), last transaction replayed {}, probe answered {}\n",
                drill.backup,
                drill.rto_seconds,
                drill.reached.as_deref().unwrap_or("none"),
                drill.answer.as_deref().unwrap_or("")
            ),
        )?;
    } else {
        emit(
            out,
            &format!(
                "drill FAILED after {:.1}s: {}\n",
                drill.rto_seconds,
                drill.error.as_deref().unwrap_or("")
            ),
        )?;
    }
    Ok(if drill.ok { Exit::Ok } else { Exit::Problem })
}

/// `restore-point NAME`: a named point to recover to.
fn restore_point(ctx: Ctx<'_>, name: &str) -> Result<Exit, Failure> {
    let Ctx { args, out, .. } = ctx;
    let lsn =
        pgops_backup::physical::restore_point(&member_url(args, None)?, name).map_err(fail)?;
    emit(out, &format!("restore point {name} at {lsn}\n"))?;
    Ok(Exit::Ok)
}

/// What `restore --to-dir` was given.
struct PitrArgs<'a> {
    id: Option<&'a str>,
    target_time: Option<&'a str>,
    target_lsn: Option<&'a str>,
    target_name: Option<&'a str>,
    target_xid: Option<&'a str>,
    target_action: &'a str,
    target_timeline: Option<&'a str>,
    standby: bool,
    primary_conninfo: Option<&'a str>,
    env_file: Option<&'a std::path::Path>,
}

/// `--target-timeline`: a positive number or `latest` (`None`). Pure.
pub fn target_timeline_arg(text: &str) -> Result<Option<u32>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("latest") {
        return Ok(None);
    }
    let number = if let Some(hex) = text.strip_prefix("0x") {
        u32::from_str_radix(hex, 16).ok()
    } else {
        text.parse::<u32>().ok()
    };
    match number {
        Some(n) if n >= 1 => Ok(Some(n)),
        _ => Err(format!(
            "--target-timeline {text:?}: give a timeline number (1, 2, ...; `pgops backup verify` \
             lists them) or latest"
        )),
    }
}

/// `restore --to-dir`: a data directory laid out for point-in-time recovery, or a standby.
fn restore_to_dir(
    ctx: Ctx<'_>,
    dir: &std::path::Path,
    given: &PitrArgs<'_>,
) -> Result<Exit, Failure> {
    let Ctx {
        args,
        repo_url,
        store,
        out,
    } = ctx;
    use pgops_backup::physical::{Recovery, Target};
    let target = if let Some(t) = given.target_time {
        Target::Time(target_time_arg(t)?)
    } else if let Some(lsn) = given.target_lsn {
        pgops_backup::physical::parse_lsn(lsn).map_err(Failure::usage)?;
        Target::Lsn(lsn.to_owned())
    } else if let Some(name) = given.target_name {
        Target::Name(name.to_owned())
    } else if let Some(xid) = given.target_xid {
        Target::Xid(xid.to_owned())
    } else {
        Target::Latest
    };
    let timeline = given
        .target_timeline
        .map(target_timeline_arg)
        .transpose()
        .map_err(|e| Failure::usage(anyhow::anyhow!(e)))?
        .flatten();
    if let Some(conninfo) = given.primary_conninfo {
        let url = DatabaseUrl::parse(conninfo)
            .map_err(|e| Failure::usage(anyhow::anyhow!("--primary-conninfo: {e}")))?;
        if url.password().is_some() {
            return Err(Failure::usage(anyhow::anyhow!(
                "--primary-conninfo holds a password, which would be written into the data \
                 directory and shown in pg_stat_wal_receiver; leave it out and put it in the \
                 server user's ~/.pgpass (or a passfile= it names)"
            )));
        }
    }
    let backup = match given.id {
        Some(id) => Some(resolve_id(store, id)?),
        None => None,
    };
    let mut recovery = if given.standby {
        Recovery::standby(given.primary_conninfo.map(str::to_owned))
    } else {
        Recovery::to(target)
    };
    recovery.promote = given.target_action == "promote";
    recovery.env_file = given.env_file.map(std::path::Path::to_path_buf);
    recovery.timeline = timeline;
    recovery.backup = backup;
    let exe = pgops_exe()?;
    let restored = pgops_backup::physical::restore_to_dir(store, repo_url, &exe, &recovery, dir)
        .map_err(fail)?;
    if args.json {
        json(out, &restored)?;
    } else if restored.standby {
        emit(
            out,
            &format!(
                "laid out {} in {} as a standby following the newest timeline (archive reaches {} on timeline {}); start PostgreSQL on it (as its owner)\n",
                restored.backup,
                restored.dir,
                restored.archive_reaches.as_deref().unwrap_or("nothing"),
                restored.timeline
            ),
        )?;
    } else {
        emit(
            out,
            &format!(
                "laid out {} in {} with recovery to {} on timeline {}; start PostgreSQL on it (as its owner) to recover\n",
                restored.backup, restored.dir, restored.target, restored.timeline
            ),
        )?;
    }
    Ok(Exit::Ok)
}

/// `create`: a logical backup of one database.
fn create_logical(
    ctx: Ctx<'_>,
    database: Option<&str>,
    jobs: Option<u32>,
    level: i32,
    role: Option<pgops_backup::member::Role>,
) -> Result<Exit, Failure> {
    let Ctx {
        args, store, out, ..
    } = ctx;
    let mut url = member_url(args, role)?;
    if let Some(database) = database {
        url = url.with_database(database).map_err(|e| fail(e.into()))?;
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
    let options = logical::CreateOptions { jobs, level };
    let result = logical::create(store, &url, &options, &mut progress);
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

/// `list`: every backup with its latest verification.
fn list(ctx: Ctx<'_>) -> Result<Exit, Failure> {
    let Ctx {
        args, store, out, ..
    } = ctx;
    let backups = pgops_backup::list(store).map_err(fail)?;
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
                match m.kind {
                    Kind::Logical => "logical",
                    Kind::Physical => "physical",
                },
                match &m.wal {
                    // A physical backup: the whole cluster, and the timeline it began on.
                    Some(w) => format!("(cluster, tl {})", w.timeline),
                    None => m.database.clone(),
                },
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

/// `verify ID [--restore]`: checksums, WAL, and optionally a restore.
fn verify(ctx: Ctx<'_>, id: &str, restore: bool) -> Result<Exit, Failure> {
    let Ctx {
        args, store, out, ..
    } = ctx;
    let id = &resolve_id(store, id)?;
    let server = if restore {
        Some(database_url(backup_url(args)?.as_deref())?)
    } else {
        None
    };
    let verification = match pgops_backup::verify::verify(store, id, server.as_ref()) {
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
        for t in &verification.timelines {
            text.push_str(&format!(
                "  timeline {}{}: {} segment{} archived, history {}, recoverable to {}\n",
                t.timeline,
                match (t.parent, &t.begins_at) {
                    (Some(parent), Some(at)) => format!(" (from timeline {parent} at {at})"),
                    _ => String::new(),
                },
                t.segments,
                if t.segments == 1 { "" } else { "s" },
                if t.history_archived {
                    "archived"
                } else {
                    "MISSING"
                },
                t.reaches.as_deref().unwrap_or("nothing")
            ));
        }
        for p in &verification.problems {
            text.push_str(&format!("  {p}\n"));
        }
        for n in &verification.notes {
            text.push_str(&format!("  note: {n}\n"));
        }
        emit(out, &text)?;
    }
    Ok(if verification.ok {
        Exit::Ok
    } else {
        Exit::Problem
    })
}

/// `restore ID --database NEW`: a logical backup into a new database.
fn restore(
    ctx: Ctx<'_>,
    id: Option<&str>,
    database: Option<&str>,
    jobs: Option<u32>,
    replace: bool,
) -> Result<Exit, Failure> {
    let Ctx {
        args, store, out, ..
    } = ctx;
    let id = id.ok_or_else(|| {
        Failure::usage(anyhow::anyhow!(
            "name the backup to restore: pgops backup restore ID --database NEW_DB"
        ))
    })?;
    let id = &resolve_id(store, id)?;
    let database = database.unwrap_or_default();
    let url = database_url(backup_url(args)?.as_deref())?;
    let seconds = logical::restore(
        store,
        id,
        &url,
        database,
        &logical::RestoreOptions { jobs, replace },
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

/// `prune`: the retention policy, per series.
fn prune(
    ctx: Ctx<'_>,
    policy: retention::Policy,
    kind: Option<Kind>,
    dry_run: bool,
) -> Result<Exit, Failure> {
    let Ctx {
        args, store, out, ..
    } = ctx;
    let decisions = pgops_backup::prune(store, policy, kind, dry_run).map_err(fail)?;
    if args.json {
        json(out, &decisions)?;
    } else {
        let mut text = String::new();
        let mut series: Vec<&str> = decisions.iter().map(|d| d.series.as_str()).collect();
        series.dedup();
        for name in series {
            let members: Vec<_> = decisions.iter().filter(|d| d.series == name).collect();
            let kept = members.iter().filter(|d| d.keep).count();
            text.push_str(&format!(
                "{name}: keeps {kept}, {} {}\n",
                if dry_run { "would delete" } else { "deletes" },
                members.len() - kept
            ));
            for d in members {
                text.push_str(&format!(
                    "  {:<12} {:<40} {}\n",
                    if d.keep {
                        "keep"
                    } else if dry_run {
                        "would delete"
                    } else {
                        "delete"
                    },
                    d.id,
                    d.reasons.join(", ")
                ));
            }
        }
        emit(out, &text)?;
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use pgops_backup::manifest::{DumpFormat, Kind, Manifest};

    use super::pick_id;

    fn backup(id: &str, kind: Kind) -> Manifest {
        let at = chrono::Utc::now();
        Manifest {
            format: 1,
            id: id.into(),
            kind,
            database: "app".into(),
            server: "127.0.0.1:5432".into(),
            server_version: "15".into(),
            tool_version: "0".into(),
            client_version: "15".into(),
            dump_format: DumpFormat::Custom,
            started_at: at,
            finished_at: at,
            files: Vec::new(),
            tables: Vec::new(),
            wal: None,
            from_standby: false,
            tables_file: None,
        }
    }

    #[test]
    fn target_timelines_are_numbers_or_latest() {
        use super::target_timeline_arg;
        assert_eq!(target_timeline_arg("3"), Ok(Some(3)));
        assert_eq!(target_timeline_arg("0x1A"), Ok(Some(26)));
        assert_eq!(target_timeline_arg("latest"), Ok(None));
        for bad in ["0", "-1", "current", "", "2.5"] {
            let err = target_timeline_arg(bad).unwrap_err();
            assert!(err.contains("give a timeline number"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn latest_aliases_pick_the_newest_backup_of_their_kind() {
        let backups = [
            backup("a-logical", Kind::Logical),
            backup("b-physical", Kind::Physical),
            backup("c-logical", Kind::Logical),
        ];
        assert_eq!(pick_id(&backups, "latest").unwrap(), "c-logical");
        assert_eq!(pick_id(&backups, "latest-logical").unwrap(), "c-logical");
        assert_eq!(pick_id(&backups, "latest-physical").unwrap(), "b-physical");
        assert_eq!(pick_id(&backups, "a-logical").unwrap(), "a-logical");
        let err = pick_id(&backups[..1], "latest-physical").unwrap_err();
        assert!(
            err.contains("no physical backup") && err.contains("--kind physical"),
            "{err}"
        );
        assert!(
            pick_id(&[], "latest")
                .unwrap_err()
                .contains("no backup yet")
        );
    }
}
