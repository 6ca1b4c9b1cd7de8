//! `pgops-bench <suite> [--quick] [--out FILE] [--compare BASELINE.json [--threshold 0.2]]`:
//! runs one suite, prints its table and writes its JSON; with `--compare`, exits 1 when a
//! figure got worse than the baseline's by more than the threshold. `pgops-bench page DIR DOC
//! SVG` regenerates the results page from the JSON in DIR. Built in release mode by
//! `cargo xtask bench`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("page") {
        return page(std::env::args().skip(2).collect());
    }
    let mut args = std::env::args().skip(1);
    let (mut suite, mut quick, mut out) = (None, false, None);
    let (mut compare, mut threshold) = (None, 0.2);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--out" => out = args.next().map(PathBuf::from),
            "--compare" => compare = args.next().map(PathBuf::from),
            "--threshold" => match args.next().and_then(|t| t.parse::<f64>().ok()) {
                Some(t) if t > 0.0 && t < 10.0 => threshold = t,
                _ => {
                    eprintln!("error: --threshold takes a share like 0.2 (20%)");
                    return ExitCode::from(2);
                }
            },
            _ if suite.is_none() => suite = Some(arg),
            other => {
                eprintln!(
                    "error: unexpected argument `{other}`; usage: pgops-bench <suite> [--quick] [--out FILE] [--compare BASELINE.json] [--threshold 0.2]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let Some(suite) = suite else {
        eprintln!("error: name a suite: {}", pgops_benches::SUITES.join(", "));
        return ExitCode::from(2);
    };
    // Read the baseline first: a wrong path should not cost a whole run.
    let baseline = match compare.as_deref().map(pgops_benches::report::Report::read) {
        Some(Err(e)) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
        Some(Ok(baseline)) => Some(baseline),
        None => None,
    };
    match pgops_benches::run(&suite, quick) {
        Ok(report) => {
            print!("{}", report.table());
            let path =
                out.unwrap_or_else(|| PathBuf::from(format!("target/pgops-bench/{suite}.json")));
            if let Err(e) = report.write(&path) {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
            println!("wrote {}", path.display());
            let Some(baseline) = baseline else {
                return ExitCode::SUCCESS;
            };
            let regressions = report.regressions(&baseline, threshold);
            if regressions.is_empty() {
                println!(
                    "no regression beyond {:.0}% against the baseline",
                    threshold * 100.0
                );
                return ExitCode::SUCCESS;
            }
            for r in &regressions {
                println!("REGRESSION {r}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `pgops-bench page DIR DOC SVG`.
fn page(args: Vec<String>) -> ExitCode {
    let [dir, doc, svg] = args.as_slice() else {
        eprintln!("error: usage: pgops-bench page RESULTS_DIR DOC.md CHART.svg");
        return ExitCode::from(2);
    };
    let result = pgops_benches::page::read_reports(dir.as_ref())
        .and_then(|reports| pgops_benches::page::regenerate(&reports, doc.as_ref(), svg.as_ref()));
    match result {
        Ok(()) => {
            println!("regenerated {doc} and {svg} from {dir}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
