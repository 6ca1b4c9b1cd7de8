//! The workspace's test executables, run several at a time. Most of a suite's time is spent
//! waiting on servers (a Patroni failover, a restore, WAL to arrive), not on the CPU, so
//! running the executables one after another, as `cargo test` does, leaves the cores idle.
//! Each executable runs as `cargo test` runs it (in its package's directory, with
//! `CARGO_MANIFEST_DIR` and `CARGO` set), its output kept in a log under
//! `target/pgops-ci/`, printed whole when it fails.

use std::{
    collections::VecDeque,
    ffi::OsString,
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// One test executable of the workspace, as `cargo test --no-run` built it.
#[derive(Debug, Clone)]
pub struct Binary {
    /// Package and target, as `cargo test` names them: `pgops-router ha`.
    pub label: String,
    /// The target's name (`ha`).
    pub target: String,
    /// An integration test (`tests/*.rs`), what `cargo test --test <target>` selects.
    pub is_test: bool,
    executable: PathBuf,
    /// The package's directory: where `cargo test` runs it.
    dir: PathBuf,
}

/// The executables that took longest (over 20 s each) when measured, started first so
/// that the lanes finish together; the rest follow in cargo's order.
const LONGEST_FIRST: &[&str] = &[
    "pgops-router ha",
    "pgops-tasks runbooks",
    "pgops ha_backup",
    "pgops-testkit leaks",
    "pgops-testkit ha",
    "pgops-health ha",
    "pgops-tasks tasks",
    "pgops-router router",
    "pgops backup",
    "pgops pitr",
];

/// Builds every test executable of the workspace (`cargo test --workspace --no-run`) and
/// returns them, the longest first.
pub fn build(path: Option<&OsString>) -> anyhow::Result<Vec<Binary>> {
    let args = [
        "test",
        "--workspace",
        "--locked",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ];
    println!("$ cargo {}", args.join(" "));
    let mut binaries = Vec::new();
    crate::cargo_artifacts(&args, path, |message| binaries.extend(binary(message)))?;
    let rank = |b: &Binary| {
        LONGEST_FIRST
            .iter()
            .position(|l| *l == b.label)
            .unwrap_or(LONGEST_FIRST.len())
    };
    binaries.sort_by_key(rank);
    Ok(binaries)
}

/// The test executable a `compiler-artifact` message names, if it names one.
fn binary(message: &serde_json::Value) -> Option<Binary> {
    if message["profile"]["test"] != true {
        return None;
    }
    let executable = PathBuf::from(message["executable"].as_str()?);
    let dir = Path::new(message["manifest_path"].as_str()?)
        .parent()?
        .to_path_buf();
    let target = message["target"]["name"].as_str()?.to_owned();
    let kinds = message["target"]["kind"].as_array()?;
    Some(Binary {
        label: format!("{} {target}", package_name(message, &dir)),
        target,
        is_test: kinds.iter().any(|k| k == "test"),
        executable,
        dir,
    })
}

/// The package's name from its id (`path+file:///…/router#pgops-router@0.1.0`, or
/// `…/pgops-pg#0.1.0` when the directory is named like the package).
fn package_name(message: &serde_json::Value, dir: &Path) -> String {
    let id = message["package_id"].as_str().unwrap_or_default();
    let fragment = id.rsplit_once('#').map_or("", |(_, f)| f);
    match fragment.split_once('@') {
        Some((name, _)) => name.to_owned(),
        None => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// One executable to run, with what it runs under.
#[derive(Debug)]
pub struct Job {
    pub binary: Binary,
    /// Printed before the label: the server it runs against, say.
    pub group: String,
    pub env: Vec<(OsString, OsString)>,
}

/// How one executable did.
#[derive(Debug)]
pub struct Outcome {
    pub group: String,
    pub label: String,
    pub passed: bool,
    /// Tests it reported passed.
    pub tests: u32,
    pub elapsed: Duration,
}

/// Runs the jobs, `lanes` at a time, in the order given; prints a line as each ends (and the
/// log of each that fails). Returns the outcomes in the order they ended.
pub fn run(jobs: Vec<Job>, lanes: usize, path: Option<&OsString>) -> Vec<Outcome> {
    let logs = crate::target_dir().join("pgops-ci");
    let queue = Mutex::new(VecDeque::from(jobs));
    let outcomes = Mutex::new(Vec::new());
    let lanes = lanes.max(1);
    std::thread::scope(|s| {
        for lane in 0..lanes {
            let (queue, outcomes, logs) = (&queue, &outcomes, &logs);
            s.spawn(move || {
                let ports = lane_ports(lane, lanes);
                loop {
                    let Some(job) = lock(queue).pop_front() else {
                        return;
                    };
                    let outcome = run_one(&job, logs, path, &ports);
                    lock(outcomes).push(outcome);
                }
            });
        }
    });
    outcomes.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// The part of the test servers' port range (`pgops_pg::free_port`, 10000 to 19999) that
/// lane `lane` of `lanes` takes: a port chosen in one lane is never chosen in another before
/// its server binds it.
fn lane_ports(lane: usize, lanes: usize) -> String {
    let span = 10_000 / lanes;
    let low = 10_000 + lane * span;
    format!("{low}-{}", low + span - 1)
}

fn run_one(job: &Job, logs: &Path, path: Option<&OsString>, ports: &str) -> Outcome {
    let started = Instant::now();
    let name = format!("{}{}", job.group, job.binary.label).replace([' ', '/', ':'], "_");
    let log = logs.join(format!("{name}.log"));
    let result = (|| -> anyhow::Result<bool> {
        std::fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("sharing the log")?;
        let mut cmd = Command::new(&job.binary.executable);
        if let Some(path) = path {
            cmd.env("PATH", path);
        }
        let status = cmd
            .current_dir(&job.binary.dir)
            .env("CARGO_MANIFEST_DIR", &job.binary.dir)
            .env("CARGO", crate::cargo())
            .env("PGOPS_TEST_PORTS", ports)
            .envs(job.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .with_context(|| format!("running {}", job.binary.executable.display()))?;
        Ok(status.success())
    })();
    let elapsed = started.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tests = passed_tests(&text);
    let passed = matches!(result, Ok(true));
    let line = format!(
        "{}  {:>6.1}s  {}{} ({tests} passed)",
        if passed { "ok  " } else { "FAIL" },
        elapsed.as_secs_f64(),
        job.group,
        job.binary.label
    );
    // One print per executable, so that lanes ending together do not interleave.
    if passed {
        println!("{line}");
    } else {
        let why = match &result {
            Err(e) => format!("{e:#}\n"),
            Ok(_) => String::new(),
        };
        println!(
            "{line}\n----- {} -----\n{why}{text}\n----- end of {} -----",
            log.display(),
            job.binary.label
        );
    }
    Outcome {
        group: job.group.clone(),
        label: job.binary.label.clone(),
        passed,
        tests,
        elapsed,
    }
}

/// The tests a harness's `test result:` lines say passed.
fn passed_tests(output: &str) -> u32 {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("test result: "))
        .filter_map(|l| {
            let (_, passed) = l.split(';').next()?.rsplit_once(". ")?;
            passed.strip_suffix(" passed")?.trim().parse::<u32>().ok()
        })
        .sum()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::{binary, lane_ports, passed_tests};

    #[test]
    fn lanes_take_apart_parts_of_the_port_range() {
        assert_eq!(lane_ports(0, 1), "10000-19999");
        assert_eq!(
            (0..3).map(|l| lane_ports(l, 3)).collect::<Vec<_>>(),
            ["10000-13332", "13333-16665", "16666-19998"]
        );
        assert_eq!(lane_ports(15, 16), "19375-19999");
    }

    #[test]
    fn passed_tests_are_summed_over_the_harness_lines() {
        let output = "running 3 tests\ntest a ... ok\n\ntest result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
            test result: FAILED. 2 passed; 1 failed\n";
        assert_eq!(passed_tests(output), 5);
        assert_eq!(passed_tests("error: could not compile"), 0);
    }

    #[test]
    fn a_test_artifact_is_named_by_package_and_target() {
        let message = serde_json::json!({
            "reason": "compiler-artifact",
            "package_id": "path+file:///w/crates/router#pgops-router@0.1.0",
            "manifest_path": "/w/crates/router/Cargo.toml",
            "target": {"name": "ha", "kind": ["test"]},
            "profile": {"test": true},
            "executable": "/w/target/debug/deps/ha-1",
        });
        let found = binary(&message).expect("a test executable");
        assert_eq!(found.label, "pgops-router ha");
        assert!(found.is_test);
        assert_eq!(found.dir, std::path::Path::new("/w/crates/router"));
        // The package named like its directory.
        let mut message = message;
        message["package_id"] = "path+file:///w/crates/pgops-pg#0.1.0".into();
        message["manifest_path"] = "/w/crates/pgops-pg/Cargo.toml".into();
        assert_eq!(binary(&message).expect("named").label, "pgops-pg ha");
        // The binaries cargo builds to run, not to test, are not tests.
        message["profile"]["test"] = false.into();
        assert!(binary(&message).is_none());
    }
}
