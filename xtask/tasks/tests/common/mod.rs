//! What the xtask tests share: a `cargo xtask dev` stack in a temp dir, driven as a newcomer
//! would drive it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

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
pub struct Stack {
    child: Option<Child>,
    /// What it printed until it said it was serving.
    pub output: String,
    /// What it printed after that, once it has exited.
    rest: Option<std::thread::JoinHandle<String>>,
}

impl Stack {
    /// Starts the stack and waits until it says it is running.
    pub fn start(dir: &Path, ports: &Ports) -> Stack {
        Stack::start_with(dir, ports, &[])
    }

    /// Starts the stack with `--fresh`.
    pub fn start_fresh(dir: &Path, ports: &Ports) -> Stack {
        Stack::start_with(dir, ports, &["--fresh"])
    }

    pub fn start_with(dir: &Path, ports: &Ports, extra: &[&str]) -> Stack {
        Stack::start_until(dir, ports, extra, "serving http://")
    }

    /// Starts the stack and returns once it printed a line starting with `marker`.
    pub fn start_until(dir: &Path, ports: &Ports, extra: &[&str], marker: &str) -> Stack {
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
            rest: None,
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    stack.output.push_str(&line);
                    stack.output.push('\n');
                    if line.starts_with(marker) {
                        // Keep draining in the background so the child never blocks on a pipe.
                        stack.rest = Some(std::thread::spawn(move || {
                            let mut rest = String::new();
                            while let Ok(line) = rx.recv() {
                                rest.push_str(&line);
                                rest.push('\n');
                            }
                            rest
                        }));
                        return stack;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("the stack did not come up:\n{}", stack.output);
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// Sends `signal` and waits for the exit code (None when killed by a signal).
    pub fn stop(self, signal: Signal) -> Option<i32> {
        self.stop_with_output(signal).0
    }

    /// Sends `signal`, waits, and returns the exit code and what it printed after the marker.
    pub fn stop_with_output(mut self, signal: Signal) -> (Option<i32>, String) {
        kill(self.pid(), signal).unwrap();
        let mut child = self.child.take().unwrap();
        let code = child.wait().unwrap().code();
        let rest = self
            .rest
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default();
        (code, rest)
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

pub struct Ports {
    pub primary: u16,
    pub metrics: u16,
}

impl Ports {
    /// Three free ports (the primary's, the one after it for the replica, and the metrics
    /// port) from 20000 to 31999, below the kernel's ephemeral range. The stacks keep their
    /// ports across restarts, and the clusters other tests start meanwhile take ports from
    /// 10000 to 19999 (`pgops_pg::free_port`), so they can never take these.
    pub fn free() -> Ports {
        use std::sync::atomic::{AtomicU16, Ordering};
        // Spread over the range by process and clock, then step through it.
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let spread = ((std::process::id() ^ nanos) % 600) as u16 * 20;
        loop {
            let step = NEXT.fetch_add(3, Ordering::Relaxed);
            let primary = 20_000 + (spread + step) % 12_000;
            let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
            if free(primary) && free(primary + 1) && free(primary + 2) {
                return Ports {
                    primary,
                    metrics: primary + 2,
                };
            }
        }
    }
}

pub fn dev_command(dir: &Path, ports: &Ports) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgops-tasks"));
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

pub fn run_dev(dir: &Path, ports: &Ports, extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = dev_command(dir, ports);
    cmd.envs(extra_env.iter().copied());
    cmd.output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A directory the server user can enter (the kit runs PostgreSQL as `postgres` under root).
pub fn stack_dir() -> (tempfile::TempDir, PathBuf) {
    // Named like the test kit's own directories, so `cargo xtask ci`'s leftover check covers it.
    let tmp = tempfile::Builder::new()
        .prefix("pgops-xtask-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("pgops-dev");
    (tmp, dir)
}

pub fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

pub fn psql_value(port: u16, sql: &str) -> String {
    use diesel::{Connection, RunQueryDsl, dsl::sql as raw, sql_types::Text};
    let mut conn =
        diesel::PgConnection::establish(&format!("postgres://postgres@127.0.0.1:{port}/pgops_dev"))
            .unwrap();
    diesel::select(raw::<Text>(&format!("({sql})::text")))
        .get_result(&mut conn)
        .unwrap()
}

/// Whether a server runs on the stack's cluster `name` (its postmaster.pid names a live process).
pub fn server_running(dir: &Path, name: &str) -> bool {
    let pid_file = dir.join(name).join("data").join("postmaster.pid");
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        .is_some_and(|pid| kill(Pid::from_raw(pid), None).is_ok())
}

pub fn wait_until_stopped(dir: &Path) {
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
pub fn watchdogs_of(dir: &Path) -> Vec<Pid> {
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

/// One fenced block of a Markdown page: its info string (`sh runbook`), the line of its
/// opening fence, its text.
#[derive(Debug, PartialEq)]
pub struct Block {
    pub info: String,
    pub line: usize,
    pub text: String,
}

/// Every fenced block of `markdown`, in order.
pub fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        match &mut current {
            None => {
                if let Some(info) = line.trim_start().strip_prefix("```") {
                    current = Some(Block {
                        info: info.trim().to_owned(),
                        line: index + 1,
                        text: String::new(),
                    });
                }
            }
            Some(block) => {
                if line.trim() == "```" {
                    out.extend(current.take());
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                }
            }
        }
    }
    out
}

/// The variables of the stack's env file (`target/pgops-dev/env`), in order.
pub fn stack_env(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("env"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}
