//! Scenario 7: the agent's footprint: resident memory and CPU of an idle `zedops agent` process
//! over a quiet window, and the size of the `zedops` binary, beside other daemons on this host.

use std::time::Duration;

use zedops_tests::procs::Mosquitto;

use crate::procs::{self, Usage};
use crate::stack::Stack;
use crate::stats::{fmt_bytes, Table};
use crate::Opts;

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|f| f.is_file())
    })
}

fn file_size(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Size of `p` once stripped of symbols and debug information (`strip`), if strip is there.
fn stripped_size(p: &std::path::Path) -> Option<u64> {
    let dir = zedops_tests::procs::TempDir::new("bench-strip").ok()?;
    let out = dir.path.join("stripped");
    let st = std::process::Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(p)
        .status()
        .ok()?;
    st.success().then(|| file_size(&out))
}

/// Longer than a screen on purpose: a benchmark scenario is a script that reads top to bottom in
/// the order it measures, and each row of its table refers to a step above it; split up, the
/// sequence (warm-up, samples, reference in the same run) would be scattered over helpers.
pub async fn run(stack: &Stack, o: &Opts) -> anyhow::Result<Table> {
    let window = if o.quick {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(60)
    };
    let name = "bench-idle";
    let agent = procs::spawn_agent(name, stack.mqtt())?;
    stack
        .wait_agent_sees_all(name, Duration::from_secs(30))
        .await?;
    let mosq = Mosquitto::start().await?;
    let mosq_pid = procs::pids_named("mosquitto")
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("zedops-mosquitto"))
        })
        .max();
    let dockerd = procs::pids_named("dockerd").into_iter().min();
    // Settle: the agent's start-up (connect, list, publish) is over.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let watched: Vec<(String, u32)> = [
        Some((
            format!("zedops agent (idle, {} containers)", stack.containers.len()),
            agent.pid(),
        )),
        Some((
            "reference: the benchmarks' zedops agent, after scenarios 1–5".to_owned(),
            stack.agent.pid(),
        )),
        Some((
            "reference: zedops serve (broker + API, 2 agents connected)".to_owned(),
            stack.serve.pid(),
        )),
        mosq_pid.map(|p| ("reference: mosquitto (idle, no clients)".to_owned(), p)),
        dockerd.map(|p| ("reference: dockerd".to_owned(), p)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let before: Vec<Usage> = watched.iter().map(|(_, p)| Usage::of(*p)).collect();
    let mut peak = vec![0u64; watched.len()];
    let start = std::time::Instant::now();
    while start.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (i, (_, p)) in watched.iter().enumerate() {
            peak[i] = peak[i].max(Usage::of(*p).rss);
        }
    }
    let after: Vec<Usage> = watched.iter().map(|(_, p)| Usage::of(*p)).collect();

    let mut t = Table::new(
        format!("7. Footprint over a quiet {} s", window.as_secs()),
        &[
            "process",
            "RSS (end)",
            "RSS max in window",
            "VmHWM",
            "threads",
            "CPU (share of one core)",
            "target",
        ],
    );
    for (i, (what, _)) in watched.iter().enumerate() {
        let cpu = Usage::cpu_share(&before[i], &after[i]);
        let target = if i == 0 {
            let ok = after[i].rss <= 20 * 1024 * 1024 && cpu < 0.005;
            format!("RSS ≤ 20 MB, ~0 CPU: {}", if ok { "ok" } else { "MISSED" })
        } else {
            "reference".to_owned()
        };
        t.row(vec![
            what.clone(),
            fmt_bytes(after[i].rss),
            fmt_bytes(peak[i]),
            fmt_bytes(after[i].hwm),
            after[i].threads.to_string(),
            format!("{:.2} %", cpu * 100.0),
            target,
        ]);
    }
    drop(agent);
    drop(mosq);

    let bin = procs::zedops_bin()?;
    let mut sizes = vec![(
        format!("zedops ({})", bin.display()),
        file_size(&bin),
        stripped_size(&bin),
    )];
    if let Some(d) = which("docker") {
        sizes.push((
            format!("reference: docker CLI ({})", d.display()),
            file_size(&d),
            None,
        ));
    }
    if let Some(m) = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(std::path::Path::new)
        .find(|p| p.exists())
    {
        sizes.push((
            format!("reference: mosquitto ({}, dynamically linked)", m.display()),
            file_size(m),
            None,
        ));
    }
    for (what, size, stripped) in sizes {
        t.note(format!(
            "binary {what}: {}{}",
            fmt_bytes(size),
            stripped
                .map(|s| format!(
                    " ({} stripped: the release profile keeps line tables for backtraces)",
                    fmt_bytes(s)
                ))
                .unwrap_or_default()
        ));
    }
    t.note("CPU from utime+stime in /proc/<pid>/stat over the window; RSS from /proc/<pid>/status, sampled every 0.5 s. The agent holds its MQTT session (keep-alive 15 s) and Docker's event stream open; its periodic full resync is every 60 s.");
    Ok(t)
}
