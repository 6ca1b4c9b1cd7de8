//! The `pgops` binary: parse and validate the command line, then act; map every outcome to the
//! documented exit code.

fn main() -> std::process::ExitCode {
    pgops::main()
}
