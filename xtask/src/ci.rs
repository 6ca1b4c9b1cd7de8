//! `cargo xtask ci`: every check CI runs, each step timed, a summary at the end, non-zero
//! exit when any step failed. The first step installs what is missing; the migration checks
//! run in `pgops-tasks`, which uses pgops itself.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

/// Options of `cargo xtask ci`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stop at the first failing step instead of running them all.
    #[arg(long)]
    pub fail_fast: bool,
    /// How many test executables run at once (they mostly wait on servers, not the CPU).
    /// 3 takes a cold run on 2 cores from about 30 minutes (one at a time, as `cargo test`
    /// runs them) to about 20; 1 runs them one after another.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub lanes: u16,
}

struct Step {
    name: &'static str,
    run: fn(&Context) -> anyhow::Result<String>,
}

/// What the steps share: `PATH` with the installed tools first.
#[derive(Debug, Default)]
struct Context {
    path: Option<std::ffi::OsString>,
    /// Server builds of the other supported majors, for the version matrix.
    servers: Vec<crate::install::ServerBuild>,
    /// Test executables run at once.
    lanes: usize,
    /// The test executables, once built.
    binaries: std::cell::OnceCell<Vec<crate::lanes::Binary>>,
}

impl Context {
    /// The workspace's test executables: built by the first step that asks.
    fn binaries(&self) -> anyhow::Result<&[crate::lanes::Binary]> {
        if let Some(binaries) = self.binaries.get() {
            return Ok(binaries);
        }
        let built = crate::lanes::build(self.path.as_ref())?;
        Ok(self.binaries.get_or_init(|| built))
    }
}

/// Runs every step and prints the summary.
pub fn run(args: &Args) -> ExitCode {
    let before = leftovers();
    let steps = [
        Step {
            name: "fmt",
            run: fmt,
        },
        Step {
            name: "clippy",
            run: clippy,
        },
        Step {
            name: "migration lint",
            run: migration_lint,
        },
        Step {
            name: "alert rules",
            run: alert_rules,
        },
        Step {
            name: "test",
            run: test,
        },
        Step {
            name: "migration check",
            run: round_trip,
        },
        Step {
            name: "version matrix",
            run: matrix,
        },
    ];
    let started = Instant::now();
    let mut context = Context {
        lanes: args.lanes.into(),
        ..Context::default()
    };
    let mut results: Vec<(&str, Duration, anyhow::Result<String>)> = Vec::new();
    // The first step sets up what the others run with (the tools' PATH, the server builds);
    // nothing else can run without it.
    println!("\n==> install");
    let t = Instant::now();
    let installed = crate::install::ensure(crate::install::Need::Matrix).map(|tools| {
        context.path = Some(tools.path());
        context.servers = tools.servers;
        "everything CI needs is installed".to_owned()
    });
    let install_failed = installed.is_err();
    results.push(("install", t.elapsed(), installed));
    for step in steps.iter().filter(|_| !install_failed) {
        println!("\n==> {}", step.name);
        let t = Instant::now();
        let outcome = (step.run)(&context);
        let failed = outcome.is_err();
        results.push((step.name, t.elapsed(), outcome));
        if failed && args.fail_fast {
            break;
        }
    }
    println!("\n==> leftovers");
    let t = Instant::now();
    results.push(("no leftover clusters", t.elapsed(), no_leftovers(&before)));

    println!("\nSummary");
    let mut failures = 0;
    for (name, elapsed, outcome) in &results {
        match outcome {
            Ok(detail) => println!(
                "  ok    {name:<22} {:>7.1}s  {detail}",
                elapsed.as_secs_f64()
            ),
            Err(e) => {
                failures += 1;
                println!("  FAIL  {name:<22} {:>7.1}s  {e:#}", elapsed.as_secs_f64());
            }
        }
    }
    println!("  total {:>30.1}s", started.elapsed().as_secs_f64());
    println!("ci: {} passed, {failures} failed", results.len() - failures);
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn cargo(context: &Context, args: &[&str]) -> anyhow::Result<String> {
    println!("$ cargo {}", args.join(" "));
    let mut cmd = Command::new(crate::cargo());
    if let Some(path) = &context.path {
        cmd.env("PATH", path);
    }
    let status = cmd
        .args(args)
        .current_dir(crate::workspace_root())
        .status()
        .with_context(|| format!("starting cargo {}", args.join(" ")))?;
    ensure!(
        status.success(),
        "cargo {} failed ({status})",
        args.join(" ")
    );
    Ok(String::new())
}

fn fmt(context: &Context) -> anyhow::Result<String> {
    cargo(context, &["fmt", "--all", "--check"])
}

fn clippy(context: &Context) -> anyhow::Result<String> {
    cargo(
        context,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )
}

/// Every test of the workspace: the doctests, then the test executables, several at a time.
fn test(context: &Context) -> anyhow::Result<String> {
    cargo(context, &["test", "--workspace", "--locked", "--doc"])?;
    let jobs = context
        .binaries()?
        .iter()
        .map(|binary| crate::lanes::Job {
            binary: binary.clone(),
            group: String::new(),
            env: Vec::new(),
        })
        .collect();
    let outcomes = crate::lanes::run(jobs, context.lanes, context.path.as_ref());
    let tests: u32 = outcomes.iter().map(|o| o.tests).sum();
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| o.label.as_str())
        .collect();
    ensure!(
        failed.is_empty(),
        "{} failed (their logs are printed above): {}",
        failed.len(),
        failed.join(", ")
    );
    Ok(format!(
        "{tests} tests in {} executables, {} at a time",
        outcomes.len(),
        context.lanes
    ))
}

/// The repository's migrations through the linter: no statement that locks or rewrites a
/// big table may ship.
fn migration_lint(context: &Context) -> anyhow::Result<String> {
    pgops_tasks(context, "migration-lint")
}

/// `pgops-tasks check <what>`, whose last line of output is the step's detail.
fn pgops_tasks(context: &Context, what: &str) -> anyhow::Result<String> {
    let binary = crate::tasks::build()?;
    let mut cmd = Command::new(&binary);
    if let Some(path) = &context.path {
        cmd.env("PATH", path);
    }
    let out = cmd
        .args(["check", what])
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    let detail = stdout.lines().last().unwrap_or_default().to_owned();
    ensure!(out.status.success(), "{detail}");
    Ok(detail)
}

/// The documented alert rules through Prometheus's own checker, then their unit tests
/// (`promtool test rules`), which must make every rule fire at least once.
fn alert_rules(context: &Context) -> anyhow::Result<String> {
    let dir = crate::workspace_root().join("docs/monitoring");
    let (rules, tests) = (dir.join("alerts.yml"), dir.join("alerts.test.yml"));
    let promtool = |args: &[&str], file: &std::path::Path| -> anyhow::Result<String> {
        let mut promtool = Command::new("promtool");
        if let Some(path) = &context.path {
            promtool.env("PATH", path);
        }
        let out = promtool
            .args(args)
            .arg(file)
            .output()
            .context("running promtool (Debian: apt-get install prometheus)")?;
        let report = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        print!("{report}");
        ensure!(
            out.status.success(),
            "promtool {} failed on {}",
            args.join(" "),
            file.display()
        );
        Ok(report)
    };
    let report = promtool(&["check", "rules"], &rules)?;
    let untested = untested_alerts(
        &std::fs::read_to_string(&rules).with_context(|| format!("reading {}", rules.display()))?,
        &std::fs::read_to_string(&tests).with_context(|| format!("reading {}", tests.display()))?,
    );
    ensure!(
        untested.is_empty(),
        "no test in {} fires {}: add series that must fire each (and series that must not)",
        tests.display(),
        untested.join(", ")
    );
    promtool(&["test", "rules"], &tests)?;
    let found = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("SUCCESS: "))
        .unwrap_or("ok");
    Ok(format!("{found}, each fired by its unit test"))
}

/// The alerts of a rules file that no unit test expects to fire (`exp_alerts` under its
/// `alertname`).
fn untested_alerts(rules: &str, tests: &str) -> Vec<String> {
    let mut fired = BTreeSet::new();
    let mut current = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line
            .strip_prefix("alertname:")
            .or_else(|| line.strip_prefix("- alertname:"))
        {
            current = Some(name.trim().to_owned());
        } else if line.starts_with("exp_alerts:") {
            fired.extend(current.clone());
        }
    }
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .filter(|name| !fired.contains(name))
        .collect()
}

/// The suites that need only a server (health, insights, pool, router, migrations, seeding,
/// the schema) on every other supported major, each against its server build; the client
/// programs stay the installed PostgreSQL's. The executables are the `test` step's, each
/// integration test of these names in every package.
const MATRIX_SUITES: &[&str] = &[
    "health",
    "insights",
    "pool",
    "router",
    "migrate",
    "seed",
    "schema_matches_database",
];

/// The suites that also need the client programs (`pg_dump`, `pg_basebackup`): run where the
/// installed ones serve the server, on older majors.
const CLIENT_SUITES: &[&str] = &["backup", "pitr", "wal"];

fn matrix(context: &Context) -> anyhow::Result<String> {
    ensure!(
        !context.servers.is_empty(),
        "no server builds to test against; `cargo xtask install --for matrix` fetches them"
    );
    let binaries = context.binaries()?;
    let mut jobs = Vec::new();
    for server in &context.servers {
        let clients = CLIENT_SUITES.iter().filter(|_| server.clients);
        let suites: Vec<&str> = MATRIX_SUITES.iter().chain(clients).copied().collect();
        println!(
            "PostgreSQL {} ({}): {}",
            server.major,
            server.bin.display(),
            suites.join(", ")
        );
        jobs.extend(
            binaries
                .iter()
                .filter(|b| b.is_test && suites.contains(&b.target.as_str()))
                .map(|binary| crate::lanes::Job {
                    binary: binary.clone(),
                    group: format!("PostgreSQL {}: ", server.major),
                    env: vec![("PGOPS_PG_BINDIR".into(), server.bin.clone().into())],
                }),
        );
    }
    // The longest first across every major, so that the lanes end together.
    jobs.sort_by_key(|j| binaries.iter().position(|b| b.label == j.binary.label));
    let outcomes = crate::lanes::run(jobs, context.lanes, context.path.as_ref());
    let mut passed = Vec::new();
    let mut failed = Vec::new();
    for server in &context.servers {
        let group = format!("PostgreSQL {}: ", server.major);
        let ran: Vec<_> = outcomes.iter().filter(|o| o.group == group).collect();
        let tests: u32 = ran.iter().map(|o| o.tests).sum();
        let busy: f64 = ran.iter().map(|o| o.elapsed.as_secs_f64()).sum();
        let entry = format!(
            "{}{} ({tests} tests, {busy:.0}s)",
            server.major,
            if server.clients { " with backups" } else { "" },
        );
        if ran.iter().all(|o| o.passed) {
            passed.push(entry);
        } else {
            let names: Vec<&str> = ran
                .iter()
                .filter(|o| !o.passed)
                .map(|o| o.label.as_str())
                .collect();
            failed.push(format!("{entry}: {}", names.join(", ")));
        }
    }
    ensure!(
        failed.is_empty(),
        "failed on PostgreSQL {}; passed on {}",
        failed.join("; "),
        passed.join(", ")
    );
    Ok(format!("PostgreSQL {}", passed.join(", ")))
}

/// `pgops migrate check` on the repository's migrations, on a throwaway cluster.
fn round_trip(context: &Context) -> anyhow::Result<String> {
    pgops_tasks(context, "round-trip")
}

/// Cluster directories of the test kit (`$TMPDIR/pgops-*`) and processes that name one.
fn leftovers() -> BTreeSet<String> {
    let tmp = std::env::temp_dir();
    let mut found = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("pgops-") {
                found.insert(format!("directory {}", entry.path().display()));
            }
        }
    }
    let marker = tmp.join("pgops-").display().to_string();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let path: PathBuf = entry.path().join("cmdline");
            let Ok(cmdline) = std::fs::read(&path) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&marker) {
                found.insert(format!(
                    "process {}: {}",
                    entry.file_name().to_string_lossy(),
                    cmdline.trim()
                ));
            }
        }
    }
    found
}

/// After the suite, nothing new of ours may remain (watchdogs get a moment to finish).
fn no_leftovers(before: &BTreeSet<String>) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let new: Vec<String> = leftovers().difference(before).cloned().collect();
        if new.is_empty() {
            return Ok("no PostgreSQL process or cluster directory left".to_owned());
        }
        if Instant::now() > deadline {
            bail!("left behind after the run:\n    {}", new.join("\n    "));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::untested_alerts;

    #[test]
    fn an_alert_no_test_fires_is_named() {
        let rules = "groups:\n  - name: g\n    rules:\n      - alert: Fired\n        expr: up == 0\n      - alert: Silent\n        expr: up == 2\n      - alert: OnlyQuiet\n        expr: up == 3\n";
        let tests = "tests:\n  - input_series: []\n    alert_rule_test:\n      - eval_time: 1m\n        alertname: Fired\n        exp_alerts:\n          - exp_labels: {}\n      - eval_time: 1m\n        alertname: OnlyQuiet\n";
        assert_eq!(untested_alerts(rules, tests), ["Silent", "OnlyQuiet"]);
        // The documented rules are all fired by their tests.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/monitoring");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("the docs' rule files");
        let rules = read("alerts.yml");
        assert!(rules.matches("- alert:").count() >= 20, "{rules}");
        assert_eq!(
            untested_alerts(&rules, &read("alerts.test.yml")),
            Vec::<String>::new()
        );
    }
}
