//! Browser scripts (`tests/browser/*.mjs`) in Debian's headless Chromium, driven by
//! playwright-core (`scripts/provision-browser.sh` installs both; no browser download).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context};

/// The workspace root (where `tests/browser/` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `node tests/browser/{script} ARGS…` with `env`, for at most 120 s; its stdout (printed
/// too), or an error with its output when it failed.
pub async fn run(script: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
    let root = workspace_root();
    let modules = root.join("tests/browser/node_modules/playwright-core/package.json");
    ensure!(
        Path::new("/usr/bin/chromium").exists() && modules.exists(),
        "the browser test needs /usr/bin/chromium and {}: run `bash scripts/provision-browser.sh`",
        modules.display()
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(root.join("tests/browser").join(script))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .with_context(|| format!("the browser script {script} ran over 120 s"))??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    ensure!(
        out.status.success(),
        "the browser script {script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}
