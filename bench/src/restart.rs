//! Scenario 4: `zedops restart` against `docker restart` on the same container, alternating.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::list::zedops_cmd;
use crate::stack::{Stack, AGENT};
use crate::stats::{Samples, Table};
use crate::Opts;

fn timed(cmd: &mut Command) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    let d = t0.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(d)
}

pub async fn run(stack: &Stack, o: &Opts) -> anyhow::Result<Table> {
    let n = if o.quick { 4 } else { 15 };
    let c = &stack.containers[1].name;
    let dir = zedops_tests::procs::TempDir::new("bench-restart")?;
    let (mut zs, mut ds) = (Samples::new(), Samples::new());
    for i in 0..n + 1 {
        let zd = timed(zedops_cmd(stack, &dir.path)?.args(["restart", c, "--agent", AGENT]))?;
        // Let the agent's event-driven republish settle between runs.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let dd = timed(
            Command::new("docker")
                .args(["restart", c])
                .stdin(Stdio::null()),
        )?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if i > 0 {
            zs.push(zd);
            ds.push(dd);
        }
    }
    let ratio = zs.p50().as_secs_f64() / ds.p50().as_secs_f64().max(1e-9);
    let mean_ratio = zs.mean().as_secs_f64() / ds.mean().as_secs_f64().max(1e-9);
    let mut t = Table::latency(
        "4. `zedops restart` vs `docker restart` (same container, grace 10 s, exits on SIGTERM)",
    );
    let ok = if ratio <= 1.05 { "ok" } else { "MISSED" };
    t.lat(
        "zedops restart C --agent A (CLI → HTTP → API → MQTT → agent → Docker)",
        &zs,
        &format!("ratio ≤ 1.05: {ok} ({ratio:.3} at p50, {mean_ratio:.3} mean)"),
    );
    t.lat("reference: docker restart C", &ds, "reference");
    t.note(format!(
        "{n} runs of each, alternating, after one warm-up pair; wall time from spawn to exit. Both end in the same Docker call (POST /containers/{{id}}/restart); the container is the test image (busybox shell trapping SIGTERM, under --init)."
    ));
    Ok(t)
}
