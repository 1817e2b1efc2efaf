//! Scenario 3: listing containers.
//!
//! (a) `zedops ps` as a whole process (start, HTTP to the API, cached list, table) against
//!     `docker ps` on the same containers;
//! (b) throughput of the API's cached list under concurrent load against the Docker Engine API's
//!     own list endpoint, with the same load generator and concurrency; plus `wrk` on the API.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::http::{self, Target};
use crate::stack::{Stack, AGENT};
use crate::stats::{fmt_dur, Samples, Table};
use crate::Opts;

/// Runs a command to completion with stdout captured; returns the wall time and stdout.
fn time_cmd(cmd: &mut Command) -> anyhow::Result<(Duration, String)> {
    let t0 = Instant::now();
    let out = cmd.stderr(Stdio::piped()).output()?;
    let d = t0.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((d, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// `zedops` as a client of this stack, with a config dir of its own (no saved login).
pub fn zedops_cmd(stack: &Stack, cfg_dir: &std::path::Path) -> anyhow::Result<Command> {
    let mut c = Command::new(crate::procs::zedops_bin()?);
    c.arg("--server")
        .arg(stack.base())
        .env("XDG_CONFIG_HOME", cfg_dir)
        .env("XDG_DATA_HOME", cfg_dir)
        .env_remove("ZEDOPS_TOKEN")
        .stdin(Stdio::null());
    Ok(c)
}

pub async fn run(stack: &Stack, o: &Opts) -> anyhow::Result<Vec<Table>> {
    let n = if o.quick { 10 } else { 40 };
    let dir = zedops_tests::procs::TempDir::new("bench-cli")?;
    let (mut zs, mut ds) = (Samples::new(), Samples::new());
    let mut z_lines = 0;
    let mut d_lines = 0;
    for i in 0..n + 2 {
        let (zd, zout) = time_cmd(zedops_cmd(stack, &dir.path)?.arg("ps"))?;
        let (dd, dout) = time_cmd(Command::new("docker").arg("ps").stdin(Stdio::null()))?;
        if i >= 2 {
            // The first two of each are warm-up (page cache, Docker's client config).
            zs.push(zd);
            ds.push(dd);
        }
        z_lines = zout.lines().count();
        d_lines = dout.lines().count();
    }
    let mut t = Table::latency("3a. `zedops ps` (whole process, cached list) vs `docker ps`");
    let ratio = zs.p50().as_secs_f64() / ds.p50().as_secs_f64().max(1e-9);
    t.lat(
        &format!("zedops ps ({} rows)", z_lines.saturating_sub(1)),
        &zs,
        &format!("{ratio:.2}× docker ps at p50"),
    );
    t.lat(
        &format!("reference: docker ps ({} rows)", d_lines.saturating_sub(1)),
        &ds,
        "reference",
    );
    t.note(format!(
        "{n} runs of each, alternating, after 2 warm-up runs; wall time from spawn to exit, stdout captured (not a terminal)."
    ));

    // (b) throughput.
    let conns = 16;
    let dur = if o.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(6)
    };
    let api_path = format!("/api/v1/agents/{AGENT}/containers");
    let api = http::load(&stack.api(), &api_path, conns, dur).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let docker = http::load(&Target::docker(), "/containers/json?all=1", conns, dur).await?;
    let mut t2 = Table::new(
        format!(
            "3b. Container list under load: {conns} connections, closed loop, {} s",
            dur.as_secs()
        ),
        &[
            "server",
            "req/s",
            "p50",
            "p99",
            "max",
            "errors",
            "bytes/resp",
        ],
    );
    for (what, l) in [
        (
            "zedops API GET /api/v1/agents/{a}/containers (cache)".to_owned(),
            &api,
        ),
        (
            "reference: Docker Engine API GET /containers/json?all=1".to_owned(),
            &docker,
        ),
    ] {
        t2.row(vec![
            what,
            format!("{:.0}", l.rps()),
            fmt_dur(l.latency.p50()),
            fmt_dur(l.latency.p99()),
            fmt_dur(l.latency.max()),
            l.errors.to_string(),
            (l.bytes / l.requests.max(1)).to_string(),
        ]);
    }
    match wrk(&stack.banner.http.to_string(), &api_path, conns, dur) {
        Ok(w) => t2.row(vec![
            "zedops API, measured by wrk -t2 (Debian)".to_owned(),
            w.rps,
            w.p50,
            w.p99,
            w.max,
            w.errors,
            String::new(),
        ]),
        Err(e) => t2.note(format!("wrk could not run: {e}")),
    }
    t2.note(format!(
        "ratio API/Docker: {:.1}× the requests per second. The load generator (hyper, one keep-alive connection per task) runs on the same 2 cores as the servers; wrk cannot reach a unix socket, so Docker is measured with the Rust load generator only.",
        api.rps() / docker.rps().max(1e-9)
    ));
    Ok(vec![t, t2])
}

struct Wrk {
    rps: String,
    p50: String,
    p99: String,
    max: String,
    errors: String,
}

fn wrk(addr: &str, path: &str, conns: usize, dur: Duration) -> anyhow::Result<Wrk> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{conns}"),
            &format!("-d{}s", dur.as_secs().max(1)),
            "--latency",
            &format!("http://{addr}{path}"),
        ])
        .output()
        .context("running wrk")?;
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let find = |prefix: &str, idx: usize| {
        s.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(idx).map(str::to_owned))
            .unwrap_or_else(|| "?".into())
    };
    let errors = s
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(|l| l.trim().to_owned())
        .unwrap_or_else(|| "0".into());
    Ok(Wrk {
        rps: find("Requests/sec:", 1),
        p50: find("50%", 1),
        p99: find("99%", 1),
        max: find("Latency", 3),
        errors,
    })
}
