//! `pgops-bench <suite> [--quick] [--out FILE]`: runs one suite, prints its table and writes its
//! JSON. Built in release mode by `cargo xtask bench`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut suite, mut quick, mut out) = (None, false, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--out" => out = args.next().map(PathBuf::from),
            _ if suite.is_none() => suite = Some(arg),
            other => {
                eprintln!(
                    "error: unexpected argument `{other}`; usage: pgops-bench <suite> [--quick] [--out FILE]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let Some(suite) = suite else {
        eprintln!("error: name a suite: {}", pgops_benches::SUITES.join(", "));
        return ExitCode::from(2);
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
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
