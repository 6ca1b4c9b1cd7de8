//! `cargo xtask dev` as a newcomer runs it: the whole stack comes up, answers, stops on
//! SIGTERM, finds its data again, leaves nothing running even when killed, and refuses a busy
//! port, missing binaries and a data directory from another PostgreSQL version with a clear
//! error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// A running `cargo xtask dev`, stopped (SIGTERM, then SIGKILL) if a test fails midway.
struct Stack {
    child: Option<Child>,
    output: String,
}

impl Stack {
    /// Starts the stack and waits until it says it is running.
    fn start(dir: &Path, ports: &Ports) -> Stack {
        Stack::start_with(dir, ports, &[])
    }

    /// Starts the stack with `--fresh`.
    fn start_fresh(dir: &Path, ports: &Ports) -> Stack {
        Stack::start_with(dir, ports, &["--fresh"])
    }

    fn start_with(dir: &Path, ports: &Ports, extra: &[&str]) -> Stack {
        let mut child = dev_command(dir, ports)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut stack = Stack {
            child: Some(child),
            output: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    stack.output.push_str(&line);
                    stack.output.push('\n');
                    if line.starts_with("serving http://") {
                        // Keep draining in the background so the child never blocks on a pipe.
                        std::thread::spawn(move || while rx.recv().is_ok() {});
                        return stack;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("the stack did not come up:\n{}", stack.output);
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// Sends `signal` and waits for the exit code (None when killed by a signal).
    fn stop(mut self, signal: Signal) -> Option<i32> {
        kill(self.pid(), signal).unwrap();
        let mut child = self.child.take().unwrap();
        child.wait().unwrap().code()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Ports {
    primary: u16,
    metrics: u16,
}

impl Ports {
    /// A free port whose successor is free too, and a free metrics port.
    fn free() -> Ports {
        loop {
            let a = TcpListener::bind("127.0.0.1:0").unwrap();
            let primary = a.local_addr().unwrap().port();
            if primary < 65000 && TcpListener::bind(("127.0.0.1", primary + 1)).is_ok() {
                let m = TcpListener::bind("127.0.0.1:0").unwrap();
                let metrics = m.local_addr().unwrap().port();
                if metrics != primary + 1 {
                    return Ports { primary, metrics };
                }
            }
        }
    }
}

fn dev_command(dir: &Path, ports: &Ports) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("dev")
        .arg("--dir")
        .arg(dir)
        .args(["--port", &ports.primary.to_string()])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", ports.metrics)])
        .env_remove("DATABASE_URL")
        .env_remove("PGOPS_REPO")
        .env_remove("PGOPS_ENV");
    cmd
}

fn run_dev(dir: &Path, ports: &Ports, extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = dev_command(dir, ports);
    cmd.envs(extra_env.iter().copied());
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A directory the server user can enter (the kit runs PostgreSQL as `postgres` under root).
fn stack_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("pgops-dev");
    (tmp, dir)
}

fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

fn psql_value(port: u16, sql: &str) -> String {
    use diesel::{Connection, RunQueryDsl, dsl::sql as raw, sql_types::Text};
    let mut conn =
        diesel::PgConnection::establish(&format!("postgres://postgres@127.0.0.1:{port}/pgops_dev"))
            .unwrap();
    diesel::select(raw::<Text>(&format!("({sql})::text")))
        .get_result(&mut conn)
        .unwrap()
}

/// Whether a server runs on the stack's cluster `name` (its postmaster.pid names a live process).
fn server_running(dir: &Path, name: &str) -> bool {
    let pid_file = dir.join(name).join("data").join("postmaster.pid");
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        .is_some_and(|pid| kill(Pid::from_raw(pid), None).is_ok())
}

fn wait_until_stopped(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if !server_running(dir, "primary") && !server_running(dir, "replica") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("a server of {} is still running", dir.display());
}

/// The pids of the test kit's watchdogs for clusters under `dir`.
fn watchdogs_of(dir: &Path) -> Vec<Pid> {
    let needle = dir.display().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("pgops-testkit-watchdog") && cmdline.contains(&needle) {
            pids.push(Pid::from_raw(pid));
        }
    }
    pids
}

#[test]
fn dev_stack_comes_up_stops_cleanly_and_finds_its_data_again() {
    let (_tmp, dir) = stack_dir();
    let ports = Ports::free();
    let replica_port = ports.primary + 1;

    // First run: everything from nothing.
    let stack = Stack::start(&dir, &ports);
    let out = stack.output.clone();
    for expected in [
        format!("postgres://postgres@127.0.0.1:{}/pgops_dev", ports.primary),
        format!("postgres://postgres@127.0.0.1:{replica_port}/pgops_dev"),
        format!("http://127.0.0.1:{}/metrics", ports.metrics),
        "12 migration(s) applied".to_owned(),
        "seeded postgres://".to_owned(),
        "taking the first physical backup".to_owned(),
        "insights top".to_owned(),
    ] {
        assert!(out.contains(&expected), "`{expected}` missing from\n{out}");
    }
    // Seeded on the primary, streamed to the replica, statements tracked, WAL archived.
    let patients = psql_value(ports.primary, "SELECT count(*) FROM patients");
    assert!(patients.parse::<u64>().unwrap() > 1000, "{patients}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while psql_value(replica_port, "SELECT count(*) FROM patients") != patients {
        assert!(Instant::now() < deadline, "the replica never caught up");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(psql_value(replica_port, "pg_is_in_recovery()"), "true");
    assert!(
        psql_value(ports.primary, "current_setting('shared_preload_libraries')")
            .contains("pg_stat_statements")
    );
    assert_eq!(
        psql_value(ports.primary, "(SELECT failed_count FROM pg_stat_archiver)"),
        "0"
    );
    assert!(
        std::fs::read_dir(dir.join("repo").join("wal"))
            .unwrap()
            .count()
            > 0
    );
    let (status, metrics) = get(&format!("http://127.0.0.1:{}/metrics", ports.metrics));
    assert_eq!(status, 200);
    assert!(metrics.contains("\npg_up 1\n"), "{metrics}");
    assert!(metrics.contains(&format!(
        "pgops_replica_up{{server=\"127.0.0.1:{replica_port}\"}} 1"
    )));
    assert!(metrics.contains("pgops_backup_last_success_timestamp_seconds{kind=\"physical\""));
    assert_eq!(
        get(&format!("http://127.0.0.1:{}/ready", ports.metrics)).0,
        200
    );

    // SIGTERM: a clean stop, exit 0, no server left.
    assert_eq!(stack.stop(Signal::SIGTERM), Some(0));
    wait_until_stopped(&dir);
    assert!(TcpListener::bind(("127.0.0.1", ports.primary)).is_ok());

    // Second run finds the data: nothing migrated, seeded or backed up again.
    let stack = Stack::start(&dir, &ports);
    assert!(stack.output.contains("is up to date"), "{}", stack.output);
    assert!(
        stack
            .output
            .contains("already holds the development dataset"),
        "{}",
        stack.output
    );
    assert!(
        stack.output.contains("a physical backup is already in"),
        "{}",
        stack.output
    );
    assert_eq!(
        psql_value(ports.primary, "SELECT count(*) FROM patients"),
        patients
    );
    // SIGKILL: the watchdogs still stop both servers.
    assert_eq!(stack.stop(Signal::SIGKILL), None);
    wait_until_stopped(&dir);

    // Killed along with its watchdogs: the servers outlive it, and the next run stops them first.
    let stack = Stack::start(&dir, &ports);
    let watchdogs = watchdogs_of(&dir);
    assert_eq!(watchdogs.len(), 2, "one watchdog per cluster");
    for pid in watchdogs {
        kill(pid, Signal::SIGKILL).unwrap();
    }
    assert_eq!(stack.stop(Signal::SIGKILL), None);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server_running(&dir, "primary"),
        "the left-over server is the point of this step"
    );
    let stack = Stack::start(&dir, &ports);
    assert!(
        stack
            .output
            .contains("stopped the primary server an earlier run left behind"),
        "{}",
        stack.output
    );

    // While it runs, a second stack on the same ports is refused before it starts anything.
    let (_tmp2, other) = stack_dir();
    let busy = run_dev(&other, &ports, &[]);
    assert_eq!(busy.status.code(), Some(2));
    let err = text(&busy.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{}", ports.metrics)) && err.contains("--metrics-listen"),
        "{err}"
    );
    let busy = run_dev(
        &other,
        &Ports {
            primary: ports.primary,
            metrics: Ports::free().metrics,
        },
        &[],
    );
    assert_eq!(busy.status.code(), Some(2));
    let err = text(&busy.stderr);
    assert!(
        err.contains(&format!("port {}", ports.primary)) && err.contains("--port"),
        "{err}"
    );
    assert!(
        !other.join("primary").exists(),
        "nothing was created for the refused stack"
    );
    assert_eq!(stack.stop(Signal::SIGTERM), Some(0));
    wait_until_stopped(&dir);

    // A data directory from another major version: refused, named, with the way out.
    std::fs::write(dir.join("primary").join("data").join("PG_VERSION"), "9.6\n").unwrap();
    let out = run_dev(&dir, &ports, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("PostgreSQL 9.6") && err.contains("--fresh"),
        "{err}"
    );
    wait_until_stopped(&dir);

    // --fresh starts over.
    let stack = Stack::start_fresh(&dir, &ports);
    assert!(stack.output.contains("(--fresh)"), "{}", stack.output);
    assert!(
        stack.output.contains("12 migration(s) applied"),
        "{}",
        stack.output
    );
    assert_eq!(stack.stop(Signal::SIGTERM), Some(0));
    wait_until_stopped(&dir);
}

#[test]
fn missing_server_binaries_are_named_with_the_package_to_install() {
    let (_tmp, dir) = stack_dir();
    let out = run_dev(
        &dir,
        &Ports::free(),
        &[("PGOPS_PG_BINDIR", "/nonexistent/bin")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("postgresql") && err.contains("PGOPS_PG_BINDIR"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dir.exists(), "nothing was created");
}
