//! The `pgops` binary: parse and validate the command line, then act; map every outcome to the
//! documented exit code.

use std::process::ExitCode;

use clap::Parser;
use pgops::{Cli, Exit};

fn main() -> ExitCode {
    // clap exits with 2 on usage errors and 0 for --help / --version.
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "warning: PGOPS_LOG/--log `{}` is not a valid filter ({e}); using `info`",
                cli.log
            );
        }
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();

    let mut stdout = std::io::stdout().lock();
    match pgops::run(&cli, &mut stdout) {
        Ok(exit) => exit.into(),
        Err(failure) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {failure}");
            }
            match failure.exit {
                Exit::Ok => Exit::Problem.into(),
                exit => exit.into(),
            }
        }
    }
}
