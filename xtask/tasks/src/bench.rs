//! `cargo xtask bench [suite] [--quick]`: runs a benchmark suite (or all) built in release mode,
//! prints its table and writes `target/pgops-bench/<suite>.json`; then the criterion benches of
//! the suites run (after all of them). A full run of every suite (not `--quick`) then regenerates
//! `docs/benchmarks.md` and its chart `docs/benchmarks.svg`; `--page-only` does just that
//! from the JSON already there.

use std::process::{Command, ExitCode};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The suite to run (pool, router, seed, workload, health, backup, pgbouncer, failover); all suites
    /// when omitted.
    pub suite: Option<String>,
    /// Shorter runs: a smaller data set, fewer and shorter rounds.
    #[arg(long)]
    pub quick: bool,
    /// A suite's earlier JSON: exit 1 when a figure got worse by more than --threshold.
    #[arg(long, requires = "suite")]
    pub compare: Option<std::path::PathBuf>,
    /// The share a figure may get worse before --compare flags it.
    #[arg(long, default_value_t = 0.2, requires = "compare")]
    pub threshold: f64,
    /// Only regenerate docs/benchmarks.md and docs/benchmarks.svg from target/pgops-bench/*.json.
    #[arg(long, conflicts_with_all = ["suite", "quick", "compare"])]
    pub page_only: bool,
}

/// Suites and their criterion benches.
const SUITES: &[(&str, &[&str])] = &[
    ("pool", &["pool_checkout"]),
    ("router", &[]),
    ("seed", &[]),
    ("workload", &[]),
    ("health", &[]),
    ("backup", &[]),
    ("pgbouncer", &[]),
    ("failover", &[]),
];

/// Runs the benchmarks.
pub fn run(args: &Args) -> ExitCode {
    let suites: Vec<_> = match &args.suite {
        Some(name) => match SUITES.iter().find(|(s, _)| s == name) {
            Some(suite) => vec![*suite],
            None => {
                let known: Vec<_> = SUITES.iter().map(|(s, _)| *s).collect();
                eprintln!(
                    "error: unknown suite `{name}`; known suites: {}",
                    known.join(", ")
                );
                return ExitCode::from(2);
            }
        },
        None => SUITES.to_vec(),
    };
    let root = crate::workspace_root();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // The harness and every criterion bench are built in one invocation, so with the same
    // features, whichever suites run: `cargo bench` turns on its dev-dependencies' features
    // in shared dependencies, and a harness built apart (`cargo run --release`) was a second
    // build of everything above them (a minute after every change to the code). The harness
    // then runs as built, and `cargo bench` finds nothing to build.
    let criterion_benches: Vec<&str> = if args.page_only {
        Vec::new()
    } else {
        suites
            .iter()
            .flat_map(|(_, benches)| benches.iter().copied())
            .collect()
    };
    // `cargo <subcommand>` on the benchmarks package.
    let cargo_benches = |subcommand: &str| {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&root)
            .args([subcommand, "--locked", "-p", "pgops-benches"]);
        cmd
    };
    let build_started = std::time::Instant::now();
    let mut build = cargo_benches("build");
    build.args(["--release", "--bin", "pgops-bench"]);
    for bench in SUITES.iter().flat_map(|(_, benches)| benches.iter()) {
        build.args(["--bench", bench]);
    }
    if !succeeded(build, "building the benchmarks") {
        return ExitCode::FAILURE;
    }
    let built = build_started.elapsed();
    let harness = |first: &str| {
        let mut cmd = Command::new(target.join("release").join("pgops-bench"));
        cmd.current_dir(&root).arg(first);
        cmd
    };
    let page = || {
        let mut cmd = harness("page");
        cmd.arg(target.join("pgops-bench"))
            .arg(root.join("docs").join("benchmarks.md"))
            .arg(root.join("docs").join("benchmarks.svg"));
        succeeded(cmd, "regenerating docs/benchmarks.md")
    };
    if args.page_only {
        return if page() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let every_suite = suites.len() == SUITES.len();
    let mut took = vec![("build", built)];
    for (suite, _) in &suites {
        let suite_started = std::time::Instant::now();
        let out = target.join("pgops-bench").join(format!("{suite}.json"));
        let mut cmd = harness(suite);
        cmd.arg("--out").arg(&out);
        if args.quick {
            cmd.arg("--quick");
        }
        if let Some(baseline) = &args.compare {
            // Relative paths are the caller's, not the workspace root's.
            let baseline = std::path::absolute(baseline).unwrap_or_else(|_| baseline.clone());
            cmd.arg("--compare")
                .arg(baseline)
                .arg("--threshold")
                .arg(args.threshold.to_string());
        }
        if !succeeded(cmd, &format!("suite {suite}")) {
            return ExitCode::FAILURE;
        }
        took.push((*suite, suite_started.elapsed()));
    }
    // The criterion benches, after the suites.
    let benches_started = std::time::Instant::now();
    for bench in &criterion_benches {
        let mut cmd = cargo_benches("bench");
        cmd.args(["--bench", bench, "--"]);
        if args.quick {
            cmd.args(["--warm-up-time", "1", "--measurement-time", "2"]);
        }
        if !succeeded(cmd, &format!("criterion bench {bench}")) {
            return ExitCode::FAILURE;
        }
    }
    if !criterion_benches.is_empty() {
        took.push(("criterion", benches_started.elapsed()));
    }
    if took.len() > 1 {
        // Where a full run's time goes, builds included.
        let minutes = |d: std::time::Duration| {
            let s = d.as_secs();
            format!("{} min {:02} s", s / 60, s % 60)
        };
        for (suite, elapsed) in &took {
            println!("{suite:>10}: {}", minutes(*elapsed));
        }
        println!("{:>10}: {}", "all", minutes(build_started.elapsed()));
    }
    if every_suite {
        if args.quick {
            println!("--quick figures are not published: docs/benchmarks.md is left as it was");
        } else if !page() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn succeeded(mut cmd: Command, what: &str) -> bool {
    match cmd.status() {
        Ok(status) if status.success() => true,
        Ok(status) => {
            eprintln!("error: {what} failed ({status})");
            false
        }
        Err(e) => {
            eprintln!("error: cannot run cargo for {what}: {e}");
            false
        }
    }
}
