//! The `zedops` binary: everything lives in the `zedops_cli` library.
fn main() -> std::process::ExitCode {
    zedops_cli::main()
}
