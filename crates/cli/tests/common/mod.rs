//! What the point-in-time tests share: the `pgops` binary as a server's `restore_command` can
//! run it, a scratch directory both the server's user and the test write in, and restores
//! started as real servers.
#![allow(dead_code, clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use pgops_testkit::{Cluster, ClusterOptions};

/// The `pgops` binary, or a copy the server's OS user can run when the checkout is somewhere
/// it cannot enter: restores write a restore_command naming the binary that wrote it.
pub fn pgops_bin() -> PathBuf {
    pgops_testkit::server_can_run(Path::new(env!("CARGO_BIN_EXE_pgops"))).unwrap()
}

/// Runs `pgops` with `PGOPS_REPO` at `repo` and `DATABASE_URL` set to `url`.
pub fn pgops(args: &[&str], repo: &Path, url: &str) -> Output {
    Command::new(pgops_bin())
        .args(args)
        .env("PGOPS_REPO", format!("file://{}", repo.display()))
        .env("DATABASE_URL", url)
        .output()
        .unwrap()
}

/// Its stdout, after asserting it exited 0.
pub fn ok(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {text}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Its stdout and stderr together.
pub fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A directory removed on drop.
pub struct Base(pub PathBuf);

impl Drop for Base {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A directory under the system's temporary one that every user may write in (the server's
/// user archives into it, the test stores base backups in it), with an empty repository
/// directory `repo` inside; removed on drop.
pub fn shared_dir(name: &str) -> (Base, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let base = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
    let repo = base.join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(0o777)).unwrap();
    (Base(base), repo)
}

/// One value from the cluster's `postgres` database, as text.
pub fn q(cluster: &Cluster, expression: &str) -> String {
    cluster
        .query_text("postgres", expression)
        .unwrap()
        .unwrap_or_default()
}

/// Lays out a restore with `args` (`--target-*`, a backup id, `--standby`, ...) in a fresh
/// data directory and starts it; unless it is a standby, waits until recovery has ended and
/// the server was promoted.
pub fn restored(repo: &Path, url: &str, args: &[&str]) -> Cluster {
    restored_with(ClusterOptions::default(), repo, url, args)
}

/// [`restored`], with the restored cluster's own options (TLS on, say).
pub fn restored_with(options: ClusterOptions, repo: &Path, url: &str, args: &[&str]) -> Cluster {
    let cluster = Cluster::start_restored(options, |data| {
        let mut all = vec!["backup", "restore", "--to-dir", data.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = pgops(&all, repo, url);
        if out.status.success() {
            Ok(())
        } else {
            Err(both(&out).into())
        }
    })
    .unwrap();
    if !args.contains(&"--standby") {
        let deadline = Instant::now() + Duration::from_secs(90);
        while cluster
            .query_text("postgres", "pg_is_in_recovery()::text")
            .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tail(40)))
            .as_deref()
            != Some("false")
        {
            assert!(
                Instant::now() < deadline,
                "recovery did not finish:\n{}",
                cluster.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    cluster
}

/// The distinct values of `batches.batch` in the cluster, in order.
pub fn batches_in(cluster: &Cluster) -> Vec<i32> {
    q(
        cluster,
        "(SELECT string_agg(DISTINCT batch::text, ',' ORDER BY batch::text) FROM batches)",
    )
    .split(',')
    .filter(|b| !b.is_empty())
    .map(|b| b.parse().unwrap())
    .collect()
}

/// The batches a restore with `args` holds.
pub fn recover(repo: &Path, url: &str, args: &[&str]) -> Vec<i32> {
    batches_in(&restored(repo, url, args))
}

/// Restores to the moment and to the WAL position after each batch in turn (`boundaries[k]`
/// is after batch k + 1): each must hold exactly batches 1 to k + 1.
pub fn recovers_every_boundary(repo: &Path, url: &str, boundaries: &[(&str, &str)]) {
    for (k, (time, lsn)) in boundaries.iter().enumerate() {
        let expected: Vec<i32> = (1..=(k as i32 + 1)).collect();
        assert_eq!(
            recover(repo, url, &["--target-time", time]),
            expected,
            "to the time after batch {}",
            k + 1
        );
        assert_eq!(
            recover(repo, url, &["--target-lsn", lsn]),
            expected,
            "to the LSN after batch {}",
            k + 1
        );
    }
}

/// A `backup restore --to-dir` into a new directory under `base` that must be refused
/// (exit 2) with nothing laid out; returns what it said.
pub fn refused_restore(base: &Path, repo: &Path, url: &str, args: &[&str]) -> String {
    let dir = base.join("refused");
    let mut all = vec!["backup", "restore", "--to-dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = pgops(&all, repo, url);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        !dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none(),
        "nothing laid out"
    );
    both(&out)
}

/// `GET path` from `addr` over HTTP/1.1, with an `Authorization` header when given: the whole
/// response, status line and headers included.
pub fn http_get(addr: &str, path: &str, authorization: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// `pgops health serve` on a free loopback port, killed on drop.
pub struct HealthServer {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub listen: String,
}

impl HealthServer {
    /// Starts `pgops health serve ARGS` with `env` set (and no replicas or token from ours),
    /// and waits until it says it is serving.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> HealthServer {
        use std::io::BufRead;
        let port = pgops_pg::free_port().unwrap();
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_pgops"))
            .args(["health", "serve", "--listen", &listen])
            .args(args)
            .env_remove("DATABASE_REPLICA_URLS")
            .env_remove("PGOPS_METRICS_TOKEN")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        if !first.starts_with("serving") {
            let _ = child.kill();
            let stderr = child
                .wait_with_output()
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned());
            panic!("health serve did not start: {first} {stderr:?}");
        }
        HealthServer { child, listen }
    }

    /// The response to `GET /metrics`.
    pub fn metrics(&self) -> String {
        http_get(&self.listen, "/metrics", None)
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The data object of archived WAL file `name` in the local repository at `repo`: the one its
/// checksum object names, after asserting it is where the docs say (`wal/NAME.<first 16 hex
/// digits of the stored bytes' SHA-256>.zst`, `.age` when encrypted), so an operator can find
/// it by hand.
pub fn wal_object(repo: &Path, name: &str) -> PathBuf {
    let sum = std::fs::read(repo.join(format!("wal/{name}.sha256.json"))).unwrap();
    let sum: serde_json::Value = serde_json::from_slice(&sum).unwrap();
    let object = sum["object"].as_str().unwrap();
    let sha256 = sum["sha256"].as_str().unwrap();
    let encrypted = sum["encrypted_for"]
        .as_array()
        .is_some_and(|keys| !keys.is_empty());
    assert_eq!(
        object,
        format!(
            "wal/{name}.{}.zst{}",
            &sha256[..16],
            if encrypted { ".age" } else { "" }
        ),
        "{sum:#}"
    );
    repo.join(object)
}
