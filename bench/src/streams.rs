//! Scenario 8: streams (docs/streams.md). Follow latency from a container's write to
//! `zedops logs -f` printing it, beside `docker logs -f` on the same container at the same time
//! (Docker's own timestamp of each line, `-t`, is the start; same host, same clock); follow
//! throughput through the whole path beside `docker logs -f` alone; and the agent's CPU and
//! memory while a stats stream of 50 containers runs at 1 s, beside the same agent idle and the
//! docker CLI's `docker stats` on the same containers.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use zedops_client::StatsEvent;
use zedops_tests::TestContainer;

use crate::procs::Usage;
use crate::stack::{create_containers_named, Stack, AGENT, RUN_LABEL};
use crate::stats::{fmt_bytes, verdict, Samples, Table};
use crate::Opts;

/// Lines a follow is measured on, and their interval.
const TICK_MS: u64 = 50;

/// Reads `cmd`'s stdout line by line for `window`; each line's latency is its arrival minus the
/// Docker timestamp it starts with.
fn follow_latency(mut cmd: Command, window: Duration) -> anyhow::Result<Samples> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let out = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = Samples::new();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let now = Utc::now();
            let ts = line.split_whitespace().next().unwrap_or_default();
            if let Ok(t) = DateTime::parse_from_rfc3339(ts) {
                s.push((now - t.to_utc()).to_std().unwrap_or(Duration::ZERO));
            }
        }
        s
    });
    std::thread::sleep(window);
    let _ = child.kill();
    let _ = child.wait();
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))
}

fn zedops(stack: &Stack, args: &[&str]) -> anyhow::Result<Command> {
    let mut c = Command::new(zedops_tests::procs::zedops_bin()?);
    c.args(["--server", &stack.base()]).args(args);
    Ok(c)
}

fn docker(args: &[&str]) -> Command {
    let mut c = Command::new("docker");
    c.args(args);
    c
}

/// Wall time of `cmd` run to its end, its stdout discarded.
fn timed(mut cmd: Command) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let st = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    anyhow::ensure!(st.success(), "{cmd:?}: {st}");
    Ok(t0.elapsed())
}

/// Latency: a ticker followed by zedops and docker at once.
async fn latency(stack: &Stack, o: &Opts) -> anyhow::Result<Table> {
    let script = format!(
        "while :; do echo tick; sleep {}; done",
        TICK_MS as f64 / 1000.0
    );
    let ticker = TestContainer::run_script("zb-ticker", RUN_LABEL, &[], &script)?;
    stack
        .wait_agent_sees_all(AGENT, Duration::from_secs(30))
        .await
        .ok();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = Duration::from_secs(if o.quick { 8 } else { 30 });
    let ours = zedops(
        stack,
        &[
            "logs",
            "-f",
            "-t",
            "-n",
            "0",
            "--agent",
            AGENT,
            &ticker.name,
        ],
    )?;
    let theirs = docker(&["logs", "-f", "-t", "-n", "0", &ticker.name]);
    let (a, b) = tokio::task::spawn_blocking(move || {
        let h = std::thread::spawn(move || follow_latency(theirs, window));
        let a = follow_latency(ours, window);
        (a, h.join())
    })
    .await?;
    let (ours, theirs) = (a?, b.map_err(|_| anyhow::anyhow!("panicked"))??);
    let mut t = Table::latency(format!(
        "8a. Follow latency: a line written → printed ({TICK_MS} ms apart)"
    ));
    let goal = verdict("p99", ours.p99(), Duration::from_millis(100));
    t.lat(
        "zedops logs -f (agent → MQTT → API → SSE → CLI)",
        &ours,
        &goal,
    );
    t.lat(
        "reference: docker logs -f, same lines",
        &theirs,
        "reference",
    );
    t.note("Start: Docker's timestamp of the line (`-t`); end: the line read from the command's stdout.");
    Ok(t)
}

/// Throughput: every line of a container that wrote `n` lines and exited.
async fn throughput(stack: &Stack, o: &Opts) -> anyhow::Result<Table> {
    let n: u64 = if o.quick { 50_000 } else { 200_000 };
    let width = 99;
    let script = format!("yes {} | head -n {n}", "x".repeat(width));
    let c = TestContainer::run_script("zb-burst", RUN_LABEL, &[], &script)?;
    let start = Instant::now();
    while zedops_tests::Docker::state(&c.name)? == "running" {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "the burst runs on"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack
        .wait_agent_sees_all(AGENT, Duration::from_secs(30))
        .await
        .ok();
    let bytes = n * (width as u64 + 1);
    let runs = if o.quick { 2 } else { 3 };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let args = ["logs", "-f", "--since", "24h", "--agent", AGENT, &c.name];
        ours.push(timed(zedops(stack, &args)?)?);
        theirs.push(timed(docker(&["logs", "-f", "--since", "24h", &c.name]))?);
    }
    let mut t = Table::new(
        format!("8b. Follow throughput: {n} lines of {} B", width + 1),
        &["path", "median wall", "lines/s", "MB/s"],
    );
    for (what, mut v) in [
        (
            "zedops logs -f --since 24h (whole path, to /dev/null)",
            ours,
        ),
        ("reference: docker logs -f --since 24h", theirs),
    ] {
        v.sort();
        let d = v[v.len() / 2].as_secs_f64();
        t.row(vec![
            what.to_owned(),
            format!("{d:.2} s"),
            format!("{:.0}", n as f64 / d),
            format!("{:.1}", bytes as f64 / d / 1e6),
        ]);
    }
    t.note(format!(
        "{runs} runs each, alternating; the container had exited (its log is complete)."
    ));
    Ok(t)
}

/// The agent's use while one stats stream of every running container runs at 1 s.
async fn stats_cost(stack: &Stack, o: &Opts) -> anyhow::Result<Table> {
    let extra = 50usize.saturating_sub(stack.containers.len());
    let _more = create_containers_named("zb-s", extra)?;
    let client = stack.client()?;
    let window = Duration::from_secs(if o.quick { 10 } else { 30 });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = stack.agent.pid();
    let idle0 = Usage::of(pid);
    tokio::time::sleep(window).await;
    let idle1 = Usage::of(pid);

    let mut s = client.stats_stream(AGENT, None, Some(1)).await?;
    let mut snapshots = 0;
    let mut rows = 0;
    // The first snapshot waits for Docker's second sample; measure from the second on.
    if let Some(Ok(StatsEvent::Stats(st))) = s.next().await {
        rows = st.stats.len();
    }
    let busy0 = Usage::of(pid);
    let until = Instant::now() + window;
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_secs(5), s.next()).await {
            Ok(Some(Ok(StatsEvent::Stats(_)))) => snapshots += 1,
            other => anyhow::bail!("the stats stream broke off: {other:?}"),
        }
    }
    let busy1 = Usage::of(pid);
    drop(s);

    // The docker CLI streaming the same containers, over the same window.
    let mut cli = docker(&["stats"]).stdout(Stdio::null()).spawn()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cli_pid = cli.id();
    let cli0 = Usage::of(cli_pid);
    tokio::time::sleep(window).await;
    let cli1 = Usage::of(cli_pid);
    let _ = cli.kill();
    let _ = cli.wait();

    let mut t = Table::new(
        format!("8c. A stats stream of {rows} containers at 1 s"),
        &["process", "CPU (share of one core)", "RSS", "target"],
    );
    let share = Usage::cpu_share(&busy0, &busy1);
    let ok = if share <= 0.05 { "ok" } else { "MISSED" };
    t.row(vec![
        format!("zedops agent, streaming ({snapshots} snapshots)"),
        format!("{:.1} %", share * 100.0),
        fmt_bytes(busy1.rss),
        format!("≤ 5 % of a core: {ok}"),
    ]);
    t.row(vec![
        "reference: the same agent, idle".to_owned(),
        format!("{:.1} %", Usage::cpu_share(&idle0, &idle1) * 100.0),
        fmt_bytes(idle1.rss),
        "reference".to_owned(),
    ]);
    t.row(vec![
        "reference: docker stats (CLI, same containers)".to_owned(),
        format!("{:.1} %", Usage::cpu_share(&cli0, &cli1) * 100.0),
        fmt_bytes(cli1.rss),
        "reference".to_owned(),
    ]);
    t.note(format!(
        "Windows of {} s; CPU is utime + stime from /proc/<pid>/stat.",
        window.as_secs()
    ));
    Ok(t)
}

pub async fn run(stack: &Stack, o: &Opts) -> anyhow::Result<Vec<Table>> {
    Ok(vec![
        latency(stack, o).await?,
        throughput(stack, o).await?,
        stats_cost(stack, o).await?,
    ])
}
