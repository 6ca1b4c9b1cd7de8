//! `cargo xtask dev`: the local stack. A primary and a streaming replica kept under
//! `target/pgops-dev`, archiving WAL into a local repository, with `pg_stat_statements`
//! preloaded; migrated, seeded with the development dataset, backed up once (physical), and
//! watched by the health endpoint on 127.0.0.1:9187 until Ctrl-C or SIGTERM.
//!
//! Nothing outlives the command: the servers belong to kept test-kit clusters whose watchdogs
//! stop them (fast shutdown) when this process ends, however it ends; a server an earlier,
//! killed run left behind is stopped before anything starts.

use std::{
    fs,
    io::Write as _,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::{Context, bail};
use pgops::Exit;
use pgops_testkit::{Archive, Cluster, ClusterOptions, Error as KitError, PgBinaries};

use crate::stack::{ENV_FILE, default_dir, write_env};

/// The database the stack migrates and seeds.
pub const DATABASE: &str = "pgops_dev";

/// Options of `cargo xtask dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Delete the stack's data (clusters, repository) and start over.
    #[arg(long)]
    pub fresh: bool,
    /// Where the stack lives [default: target/pgops-dev].
    #[arg(long, env = "PGOPS_DEV_DIR")]
    pub dir: Option<PathBuf>,
    /// The primary's port on 127.0.0.1; the replica listens on the next one.
    #[arg(long, default_value_t = 54320, value_parser = clap::value_parser!(u16).range(1024..65535))]
    pub port: u16,
    /// Where the health endpoint listens.
    #[arg(long, default_value = "127.0.0.1:9187")]
    pub metrics_listen: SocketAddr,
}

/// Runs the stack until Ctrl-C or SIGTERM.
pub fn run(args: &Args) -> ExitCode {
    let stop = match StopSignal::install() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match up(args, &stop) {
        Ok(exit) => exit.into(),
        // A terminal's Ctrl-C also reaches the step's own programs (pg_basebackup, say), so
        // the step may fail of it: that is the interruption too.
        Err(e) if e.is::<Interrupted>() || stop.requested() => {
            println!("interrupted: stopped the replica and the primary");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            // Our own clusters are dropped (and stopped) by now; what is left is the message.
            ExitCode::from(2)
        }
    }
}

/// Ctrl-C or SIGTERM during the setup steps: the stack stops after the step it was in.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Ctrl-C and SIGTERM, caught from the first moment, so that no signal ever kills the stack
/// half-way: during setup it stops after the current step; while serving, the health server
/// (which listens for the same signals) returns and the stack stops.
struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the signal listener")?;
        let (mut interrupt, mut terminate) = rt
            .block_on(async {
                Ok::<_, std::io::Error>((
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                ))
            })
            .context("installing the Ctrl-C and SIGTERM handlers")?;
        let flag = Arc::new(AtomicBool::new(false));
        let seen = flag.clone();
        std::thread::spawn(move || {
            rt.block_on(async move {
                loop {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                    seen.store(true, Ordering::SeqCst);
                }
            });
        });
        Ok(StopSignal(flag))
    }

    /// Whether a stop was asked for.
    fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Fails with [`Interrupted`] once a stop was asked for.
    fn check(&self) -> anyhow::Result<()> {
        if self.requested() {
            return Err(Interrupted.into());
        }
        Ok(())
    }
}

fn up(args: &Args, stop: &StopSignal) -> anyhow::Result<Exit> {
    let dir = std::path::absolute(args.dir.clone().unwrap_or_else(default_dir))
        .context("resolving the stack directory")?;
    let replica_port = args
        .port
        .checked_add(1)
        .context("--port leaves no room for the replica's port (port + 1)")?;

    // One stack per directory: a second run would otherwise take the first one's servers for
    // leftovers and stop them. The lock sits beside the directory (so --fresh keeps it) and
    // goes with the process, however it ends.
    let _lock = lock(&dir)?;

    // Check what can be checked before anything starts.
    let bins = PgBinaries::discover()?;
    let major = bins.major_version()?;
    for name in ["primary", "replica"] {
        if Cluster::stop_left_over(&dir.join(name))? {
            println!("stopped the {name} server an earlier run left behind");
        }
    }
    if args.fresh && dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        println!("removed {} (--fresh)", dir.display());
    }
    if TcpListener::bind(args.metrics_listen).is_err() {
        bail!(
            "{} is already in use (another `cargo xtask dev`, `pgops health serve` or postgres_exporter?); \
             stop that process or pass --metrics-listen ADDR",
            args.metrics_listen
        );
    }
    for (port, what) in [(args.port, "primary"), (replica_port, "replica")] {
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!(
                "port {port} on 127.0.0.1 (for the {what}) is already in use by another process; \
                 stop it or pass --port N (the primary takes N, the replica N+1)"
            );
        }
    }

    fs::create_dir_all(dir.join("bin")).with_context(|| format!("creating {}", dir.display()))?;
    let pgops_bin = install_pgops(&dir)?;
    // The servers run as the server's OS user and exec bin/pgops for every WAL segment: a
    // stack under a directory that user cannot enter (a checkout in root's 0700 home) would
    // start and then never archive. Refuse now, naming the fix.
    pgops_pg::ServerUser::detect()?
        .check_can_run(&pgops_bin)
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\nhint: put the stack where it can: `cargo xtask dev --dir /var/tmp/pgops-dev` (or PGOPS_DEV_DIR)"
            )
        })?;
    let repo_dir = dir.join("repo");
    let repo = format!("file://{}", repo_dir.display());
    let options = ClusterOptions::default()
        .fsync(true)
        // Trust for the superuser on loopback; every other role logs in with a password.
        .require_passwords(true)
        .preload("pg_stat_statements")
        .setting("pg_stat_statements.track", "all")
        .setting("track_io_timing", "on")
        .setting("archive_timeout", "5min")
        .archive(Archive::Command(format!(
            "'{}' wal push --repo '{repo}' %p",
            pgops_bin.display()
        )));

    println!(
        "starting the pgops dev stack in {} (PostgreSQL {major})",
        dir.display()
    );
    let primary = Cluster::start(options.clone().keep_in(dir.join("primary")).port(args.port))
        .map_err(|e| explain(e, &dir))?;
    stop.check()?;
    primary.make_server_dir(&repo_dir)?;
    let replica = primary
        .create_replica_with(options.keep_in(dir.join("replica")).port(replica_port))
        .map_err(|e| explain(e, &dir))?;
    stop.check()?;
    println!("  primary  127.0.0.1:{}", primary.port());
    println!("  replica  127.0.0.1:{} (streaming)", replica.port());

    let exists = primary.query_text(
        "postgres",
        &format!("EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}')"),
    )?;
    if exists.as_deref() != Some("true") {
        primary.create_database(DATABASE)?;
    }
    let url = primary.url(DATABASE);
    let replica_url = replica.url(DATABASE);
    write_env(&dir, &url, &replica_url, &repo)?;

    crate::pgops_step(&["migrate", "run", "--sample-schema", "--database-url", &url])?;
    stop.check()?;
    let seeded = crate::seed::seed(&crate::seed::Args {
        dataset: "development".into(),
        seed: 1,
        scale: 1.0,
        reset: false,
        database_url: Some(url.clone()),
    });
    if seeded != Exit::Ok {
        bail!("seeding the development dataset failed (see above)");
    }
    stop.check()?;
    let store = pgops_backup::repo::open(&repo, pgops_backup::repo::Access::Create)?;
    let has_physical = pgops_backup::list(&*store)?
        .iter()
        .any(|(m, _)| m.kind == pgops_backup::manifest::Kind::Physical);
    if has_physical {
        println!("a physical backup is already in {repo}");
    } else {
        println!("taking the first physical backup");
        crate::pgops_step(&[
            "backup",
            "create",
            "--kind",
            "physical",
            "--repo",
            &repo,
            "--database-url",
            &url,
        ])?;
    }

    stop.check()?;

    let metrics = format!("http://{}", args.metrics_listen);
    let bin = pgops_bin.display();
    let env_file = dir.join(ENV_FILE);
    println!(
        "\n\
         The pgops dev stack is running:\n\
         \x20 primary     {url}\n\
         \x20 replica     {replica_url}\n\
         \x20 page        {metrics}/   (the operator page, in a browser)\n\
         \x20 metrics     {metrics}/metrics   (also /health and /ready)\n\
         \x20 repository  {repo}   (WAL archive and backups)\n\
         \x20 data        {}   (kept between runs; --fresh starts over)\n\
         \n\
         Next, in another shell:\n\
         \x20 set -a; . {}; set +a   # DATABASE_URL, DATABASE_REPLICA_URLS, PGOPS_REPO\n\
         \x20 psql \"$DATABASE_URL\"\n\
         \x20 {bin} insights top\n\
         \x20 {bin} health check\n\
         \x20 {bin} backup list\n\
         \x20 {bin} wal check\n\
         \x20 curl -s {metrics}/metrics | grep pg_up\n\
         \x20 cargo xtask bench workload --quick\n\
         \n\
         Ctrl-C stops everything.",
        dir.display(),
        env_file.display(),
    );
    let _ = std::io::stdout().flush();

    let serve = crate::pgops_step(&[
        "health",
        "serve",
        "--listen",
        &args.metrics_listen.to_string(),
        "--database-url",
        &url,
        "--replica-urls",
        &replica_url,
        "--repo",
        &repo,
    ]);
    println!("stopping the replica and the primary");
    drop(replica);
    drop(primary);
    serve?;
    println!("stopped; the data stays in {}", dir.display());
    Ok(Exit::Ok)
}

/// Takes the stack's lock (`<dir>.lock`), naming the process that holds it when taken.
fn lock(dir: &Path) -> anyhow::Result<fs::File> {
    let path = dir.with_extension("lock");
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            writeln!(file, "{}", std::process::id())?;
            Ok(file)
        }
        Err(fs::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another `cargo xtask dev` (pid {}) is running the stack in {}; use that one, or stop it (Ctrl-C) first",
                holder.trim(),
                dir.display()
            )
        }
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Installs this very binary as `bin/pgops` in the stack's directory: invoked under that name
/// it is the `pgops` command (see `main`), so the servers' `archive_command` and the commands
/// printed for the developer need no separate build. Copied under a temporary name and
/// renamed, so a running copy is never overwritten in place.
fn install_pgops(dir: &Path) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("finding the xtask binary")?;
    let target = dir.join("bin").join("pgops");
    let tmp = dir.join("bin").join(".pgops.tmp");
    fs::copy(&me, &tmp)
        .with_context(|| format!("copying {} to {}", me.display(), tmp.display()))?;
    fs::rename(&tmp, &target).with_context(|| format!("installing {}", target.display()))?;
    Ok(target)
}

/// Adds the dev stack's own remedy to the test kit's errors that name one.
fn explain(error: KitError, dir: &Path) -> anyhow::Error {
    let hint = match &error {
        KitError::VersionMismatch { .. } | KitError::NotADataDirectory(_) => Some(format!(
            "`cargo xtask dev --fresh` deletes {} and starts over",
            dir.display()
        )),
        KitError::PortBusy { .. } => Some("pass --port N to use other ports".to_owned()),
        _ => None,
    };
    match hint {
        Some(hint) => anyhow::anyhow!("{}\nhint: {hint}", pgops_pg::report(&error)),
        None => error.into(),
    }
}
