//! The linter against a corpus with an operator's verdict per case (`lint-corpus.toml`):
//! pgops must report every unsafe case and stay quiet on every safe one. squawk (PyPI's
//! `squawk-cli`, installed by `cargo xtask ci`) runs on the same files in the same run, told the
//! same transaction model and target version, and its misses and false alarms are reported as
//! they are, beside ours (printed, and written to `target/pgops-lint/corpus.json`).
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use pgops_migrate::{
    SqlMigration,
    lint::{Options, Report, lint_migration},
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    verdict: Verdict,
    sql: String,
    #[serde(default = "yes")]
    transaction: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    Unsafe,
    Safe,
    Style,
}

/// One tool's score over the corpus.
#[derive(Debug, Default, serde::Serialize)]
struct Score {
    tool: String,
    unsafe_cases: usize,
    misses: Vec<String>,
    safe_cases: usize,
    false_alarms: Vec<String>,
    style_cases: usize,
    style_reported: usize,
}

fn yes() -> bool {
    true
}

/// The PostgreSQL major both tools are told the migrations target.
const TARGET: u32 = 15;

fn corpus() -> Corpus {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lint-corpus.toml");
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn pgops_flags(case: &Case) -> Vec<String> {
    let metadata = (!case.transaction).then_some("run_in_transaction = false");
    let migration = SqlMigration::new("1_case", case.sql.clone(), String::new(), metadata).unwrap();
    let mut report = Report::default();
    let options = Options {
        pg_version: Some(TARGET),
        ..Options::default()
    };
    lint_migration(&migration, Path::new("up.sql"), &options, &mut report);
    assert!(
        report.errors.is_empty(),
        "{}: {:?}",
        case.name,
        report.errors
    );
    report
        .findings
        .iter()
        .map(|f| f.rule.name().to_owned())
        .collect()
}

/// squawk's binary: on `PATH`, or in the tools' virtual environment.
fn squawk() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("squawk"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let venv =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pgops-tools/venv/bin/squawk");
        venv.is_file().then_some(venv)
    })
}

/// squawk's rules that ask for `SET lock_timeout` / `statement_timeout` in every file: a
/// project whose runner sets them (as `pgops migrate run` does) switches these off.
const SQUAWK_TIMEOUT_RULES: &str = "require-lock-timeout,require-statement-timeout";

fn squawk_flags(squawk: &Path, case: &Case, dir: &Path, exclude: Option<&str>) -> Vec<String> {
    #[derive(Deserialize)]
    struct Violation {
        rule_name: String,
    }
    let file = dir.join("up.sql");
    std::fs::write(&file, &case.sql).unwrap();
    let mut cmd = Command::new(squawk);
    cmd.args(["--reporter", "json", &format!("--pg-version={TARGET}.0")]);
    if case.transaction {
        cmd.arg("--assume-in-transaction");
    }
    if let Some(rules) = exclude {
        cmd.arg(format!("--exclude={rules}"));
    }
    let out = cmd.arg(&file).output().unwrap();
    let violations: Vec<Violation> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "squawk's JSON for {}: {e}\n{}{}",
            case.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    violations.into_iter().map(|v| v.rule_name).collect()
}

fn score(tool: &str, corpus: &Corpus, mut flags: impl FnMut(&Case) -> Vec<String>) -> Score {
    let mut score = Score {
        tool: tool.to_owned(),
        ..Score::default()
    };
    for case in &corpus.case {
        let found = flags(case);
        match case.verdict {
            Verdict::Unsafe => {
                score.unsafe_cases += 1;
                if found.is_empty() {
                    score.misses.push(case.name.clone());
                }
            }
            Verdict::Safe => {
                score.safe_cases += 1;
                if !found.is_empty() {
                    score
                        .false_alarms
                        .push(format!("{} ({})", case.name, found.join(", ")));
                }
            }
            Verdict::Style => {
                score.style_cases += 1;
                score.style_reported += usize::from(!found.is_empty());
            }
        }
    }
    score
}

#[test]
fn pgops_reports_every_unsafe_case_and_no_safe_one_beside_squawk() {
    let corpus = corpus();
    assert!(corpus.case.len() >= 40, "{} cases", corpus.case.len());
    let ours = score("pgops migrate lint", &corpus, pgops_flags);
    let mut scores = vec![ours];
    match squawk() {
        Some(squawk) => {
            let version = Command::new(&squawk).arg("--version").output().unwrap();
            let name = String::from_utf8_lossy(&version.stdout).trim().to_owned();
            let dir = tempfile::tempdir().unwrap();
            scores.push(score(&name, &corpus, |case| {
                squawk_flags(&squawk, case, dir.path(), None)
            }));
            scores.push(score(
                &format!("{name}, timeout rules off"),
                &corpus,
                |case| squawk_flags(&squawk, case, dir.path(), Some(SQUAWK_TIMEOUT_RULES)),
            ));
        }
        None => eprintln!("squawk is not installed (cargo xtask ci installs it): pgops alone"),
    }
    for s in &scores {
        eprintln!(
            "{:<36} misses {}/{} unsafe, false alarms {}/{} safe, style reported {}/{}",
            s.tool,
            s.misses.len(),
            s.unsafe_cases,
            s.false_alarms.len(),
            s.safe_cases,
            s.style_reported,
            s.style_cases
        );
        for miss in &s.misses {
            eprintln!("    missed: {miss}");
        }
        for alarm in &s.false_alarms {
            eprintln!("    false alarm: {alarm}");
        }
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pgops-lint");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("corpus.json"),
        serde_json::to_string_pretty(&scores).unwrap(),
    )
    .unwrap();

    let ours = &scores[0];
    assert!(ours.misses.is_empty(), "pgops missed: {:?}", ours.misses);
    assert!(
        ours.false_alarms.is_empty(),
        "pgops false alarms: {:?}",
        ours.false_alarms
    );
    assert_eq!(ours.style_reported, ours.style_cases);
}
