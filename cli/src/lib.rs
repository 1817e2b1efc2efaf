//! The `zedops` command line: `serve`, `agent`, and the client commands of the HTTP API.
//!
//! # Layout
//! - [`args`]: the clap definitions, with environment fallbacks (flags > environment > defaults),
//!   and the configurations they name (`ServeArgs::config`).
//! - [`run`]: dispatches a parsed command: `serve` to `zedops_server`, `agent` to `zedops_agent`,
//!   client commands to [`commands`].
//! - [`commands`]: the client commands (`ps`, `restart`, `logs`, `token`, …), through the typed
//!   client of `zedops-client`.
//! - [`actions`]: `zedops actions` and `zedops run` (operator-defined actions), and how a
//!   command's result is printed and becomes the exit code (`exec` too).
//! - [`stats`]: `zedops stats`, like `docker stats`: a live table on a terminal, fleet-wide.
//! - [`logs`]: `zedops logs [-f]`, like `docker logs`.
//! - [`client`]: where the client connects: server and token resolution, the client config file.
//! - [`plugins`]: `zedops-<name>` CLI plugins: discovery, metadata, exec with the client settings.
//! - [`enroll`]: an agent's enrollment and its saved credentials.
//! - [`output`]: tables and JSON for the terminal.
//! - [`paths`]: default XDG directories.
//! - [`exit`]: documented exit codes, and those of the client's errors.
//!
//! `main` is thin: parse, init tracing, run, map the error to an exit code.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod actions;
pub mod args;
pub mod client;
pub mod commands;
pub mod enroll;
pub mod exit;
pub mod logs;
pub mod output;
pub mod paths;
pub mod plugins;
pub mod run;
pub mod stats;

use std::process::ExitCode;

/// Entry point of the `zedops` binary.
pub fn main() -> ExitCode {
    let cli = match args::parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.verbose);
    // One crypto provider for every rustls user in the process (see the workspace Cargo.toml).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The agent is I/O-bound and mostly idle: one thread keeps every hop of a request (socket →
    // MQTT event loop → handler → reply) on the same core, which halves its round trip on a small
    // machine (docs/benchmarks.md), and keeps its footprint small.
    let mut builder = match cli.command {
        args::Command::Agent(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("zedops: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    match runtime.block_on(run::run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            let msg = exit::message_of(&e);
            // An empty message means the details were already printed (several containers).
            if !msg.is_empty() {
                eprintln!("zedops: {msg}");
            }
            ExitCode::from(exit::code_of(&e))
        }
    }
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "info,rumqttd=warn",
        1 => "debug,rumqttd=info,hyper=info",
        _ => "trace",
    };
    // rumqttd and rumqttc print whole CONNECT packets (with passwords) at debug and trace: their
    // events above warn are dropped whatever RUST_LOG says, so secrets never reach the logs. The
    // cap only ever removes output: `RUST_LOG=rumqttd=off` still silences them entirely.
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let cap = tracing_subscriber::filter::filter_fn(|m| {
        let t = m.target();
        !(t.starts_with("rumqttd") || t.starts_with("rumqttc"))
            || *m.level() <= tracing::Level::WARN
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(cap);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
}
