//! `cargo xtask migrate <run|revert|redo|status|validate>`: the same code as `pgops migrate`,
//! defaulting to this repository's `migrations/` directory.

use std::process::ExitCode;

use pgops::Exit;

/// The arguments of `pgops migrate`.
pub type Args = pgops::migrate::Args;

/// Runs the migration command.
pub fn run(mut args: Args) -> ExitCode {
    if args.dir.is_none() {
        args.dir = Some(crate::workspace_root().join("migrations"));
    }
    let mut stdout = std::io::stdout().lock();
    match pgops::migrate::run(&args, &mut stdout) {
        Ok(exit) => exit.into(),
        Err(failure) => {
            eprintln!("error: {failure}");
            match failure.exit {
                Exit::Ok => Exit::Problem.into(),
                exit => exit.into(),
            }
        }
    }
}
