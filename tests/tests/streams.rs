//! Issue 18, streams: `container.logs` followed and `container.stats` streamed, on the secured
//! default (an enrolled, signing agent; tokens; an authenticated broker) and a real Docker
//! engine. Lines arrive once and in order through the CLI and HTTP; Ctrl-C, a dropped HTTP
//! client and a killed API all end the stream on the agent; a reader that stops reading stops
//! the agent reading Docker; paho-mqtt follows a log with only docs/protocol.md; a stats stream
//! shows a CPU loop busy.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use zedops_client::{Client, LogEvent, LogsOptions, NewAgent, NewMqttUser, StatsEvent};
use zedops_tests::procs::{spawn_logged_agent, zedops_bin, Proc, Serve, TempDir};
use zedops_tests::{eventually, init_logs, unique, Docker, TestContainer};

/// What an agent of these tests logs: warnings, and its streams' starts and ends.
const STREAM_LOG: &str = "warn,zedops_agent::streams=info";

/// A container printing `tick N` every 100 ms, N from 0.
const TICKER: &str = "i=0; while :; do echo \"tick $i\"; i=$((i+1)); sleep 0.1; done";

/// `zedops serve --local-agent` and a ticking container on it.
struct Stack {
    serve: Serve,
    admin: Client,
    agent: String,
    ticker: TestContainer,
}

async fn stack(prefix: &str) -> anyhow::Result<Stack> {
    init_logs();
    let ticker = TestContainer::run_script(&unique("zt-tick"), &unique(prefix), &[], TICKER)?;
    let agent = unique(prefix);
    let serve = Serve::start(&[&format!("--local-agent={agent}")], "warn")?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    ready(&admin, &agent, &ticker.name).await?;
    Ok(Stack {
        serve,
        admin,
        agent,
        ticker,
    })
}

/// Waits until `agent` is online and has `container` (a snapshot can arrive before the status).
async fn ready(admin: &Client, agent: &str, container: &str) -> anyhow::Result<()> {
    eventually(
        "the agent online, with the container",
        Duration::from_secs(30),
        || async {
            admin.ping(agent, None).await.ok()?;
            let on = admin.locate(container).await.ok()?;
            (on == [agent.to_owned()]).then_some(())
        },
    )
    .await
}

/// The numbers of `tick N` lines; an error when one is not such a line.
fn ticks(lines: &[String]) -> anyhow::Result<Vec<u64>> {
    lines
        .iter()
        .map(|l| {
            l.strip_prefix("tick ")
                .and_then(|n| n.trim().parse().ok())
                .with_context(|| format!("not a tick line: {l:?}"))
        })
        .collect()
}

/// That the ticks count up by one: every line once, in order.
fn once_in_order(n: &[u64]) -> anyhow::Result<()> {
    for w in n.windows(2) {
        ensure!(w[1] == w[0] + 1, "{} followed by {} in {n:?}", w[0], w[1]);
    }
    Ok(())
}

/// Waits until the agent serves no stream (its `ping` says how many it serves).
async fn no_streams_left(admin: &Client, agent: &str, limit: Duration) -> anyhow::Result<()> {
    eventually("the agent's streams back to 0", limit, || async {
        let p = admin.ping(agent, None).await.ok()?;
        (p.pong.streams == 0).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_logs_arrive_once_and_in_order_and_end_on_the_agent_with_their_reader(
) -> anyhow::Result<()> {
    let Stack {
        serve,
        admin,
        agent,
        ticker,
    } = stack("follow").await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The CLI, started with --since: the earlier lines first, then new ones as they come.
    let mut child = Command::new(zedops_bin()?)
        .args(["--server", &serve.http, "--token", &serve.admin_token])
        .args(["logs", "-f", "--since", "1h", &ticker.name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().context("stdout")?;
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(mut v) = seen.lock() {
                v.push(l);
            }
        }
    });
    let mut cli = Proc {
        child,
        what: "zedops logs -f".into(),
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = admin.ping(&agent, None).await?;
    ensure!(
        p.pong.streams == 1,
        "the agent serves {} streams",
        p.pong.streams
    );
    cli.signal("INT")?;
    let sigint = Instant::now();
    let status = cli.wait_exit(Duration::from_secs(5)).await?;
    ensure!(
        status.code() == Some(0),
        "zedops logs -f after Ctrl-C: {status:?}"
    );
    no_streams_left(&admin, &agent, Duration::from_secs(5)).await?;
    println!("Ctrl-C to no stream on the agent: {:?}", sigint.elapsed());
    let got = lines.lock().map(|v| v.clone()).unwrap_or_default();
    let n = ticks(&got)?;
    ensure!(
        n.first() == Some(&0),
        "the follow did not start at tick 0: {n:?}"
    );
    ensure!(n.len() >= 35, "only {} lines in 4.5 s", n.len());
    once_in_order(&n)?;

    // HTTP, through the typed client: the last 5 lines, then new ones; dropped mid-stream.
    let opts = LogsOptions {
        tail: Some(5),
        ..Default::default()
    };
    let mut s = admin.follow_logs(&agent, &ticker.name, &opts).await?;
    let mut got = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_secs(2), s.next()).await {
            Ok(Some(Ok(LogEvent::Lines(c)))) => got.extend(c.lines.into_iter().map(|l| l.text)),
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    let n = ticks(&got)?;
    ensure!(n.len() >= 15, "{n:?}");
    once_in_order(&n)?;
    drop(s);
    no_streams_left(&admin, &agent, Duration::from_secs(5)).await?;

    // A container that stops ends the stream with `eof`.
    let mut s = admin.follow_logs(&agent, &ticker.name, &opts).await?;
    Docker::run(&["stop", "-t", "1", &ticker.name])?;
    let end = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match s.next().await {
                Some(Ok(LogEvent::End(e))) => return Some(e),
                Some(Ok(LogEvent::Lines(_))) => {}
                _ => return None,
            }
        }
    })
    .await?
    .context("no end event")?;
    ensure!(end.reason == zedops_client::EndReason::Eof, "{end:?}");
    Ok(())
}

/// A script printing bursts of `lines` lines of `width` bytes, sleeping `pause` seconds between.
fn burst(lines: u32, width: usize, pause: &str) -> String {
    let line = "x".repeat(width);
    format!(
        "while :; do i=0; while [ $i -lt {lines} ]; do echo {line}; i=$((i+1)); done; sleep {pause}; done"
    )
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: i32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

/// Bytes Docker has logged for `name` (its json-file log).
fn logged_bytes(name: &str) -> anyhow::Result<u64> {
    let path = Docker::inspect(name, "{{.LogPath}}")?;
    Ok(std::fs::metadata(path.trim())?.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_stops_the_agent_reading_docker() -> anyhow::Result<()> {
    init_logs();
    // A container writing megabytes: bursts of 500 lines of a kilobyte, 20 a second at most
    // (flat out it would take the machine from the tests running beside this one).
    let script = burst(500, 1000, "0.05");
    let run = unique("flood");
    let flood = TestContainer::run_script(&unique("zt-flood"), &run, &[], &script)?;
    let agent = unique("flood");
    let serve = Serve::start(&[&format!("--local-agent={agent}")], "warn")?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    ready(&admin, &agent, &flood.name).await?;

    // A raw HTTP client that reads the answer's headers and then nothing.
    let url = format!(
        "{}/api/v1/agents/{agent}/containers/{}/logs?follow=true&tail=0",
        serve.http, flood.name
    );
    let resp = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&serve.admin_token)
        .send()
        .await?;
    ensure!(resp.status() == 200, "{}", resp.status());
    // Let the socket buffers and the window fill, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss0, logged0) = (rss_kib(serve.proc.pid())?, logged_bytes(&flood.name)?);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (rss1, logged1) = (rss_kib(serve.proc.pid())?, logged_bytes(&flood.name)?);
    let written_mib = (logged1 - logged0) / (1 << 20);
    let grown_mib = rss1.saturating_sub(rss0) / 1024;
    println!(
        "while the reader read nothing: the container wrote {written_mib} MiB, the server's \
         memory grew {grown_mib} MiB ({rss0} → {rss1} KiB)"
    );
    ensure!(
        written_mib >= 16,
        "the container wrote only {written_mib} MiB"
    );
    ensure!(grown_mib < 8, "memory grew by {grown_mib} MiB");
    let p = admin.ping(&agent, None).await?;
    ensure!(p.pong.streams == 1, "{} streams", p.pong.streams);

    // Reading again resumes the stream where it stopped.
    let mut body = resp;
    let mut read = 0usize;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until && read < 4 << 20 {
        match tokio::time::timeout(Duration::from_secs(3), body.chunk()).await {
            Ok(Ok(Some(c))) => read += c.len(),
            other => anyhow::bail!("the stream broke off: {other:?}"),
        }
    }
    ensure!(read >= 1 << 20, "only {read} bytes after resuming");
    drop(body);
    no_streams_left(&admin, &agent, Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_api_mid_stream_ends_the_stream_on_the_agent() -> anyhow::Result<()> {
    init_logs();
    let run = unique("kill");
    let ticker = TestContainer::run_script(&unique("zt-tick"), &run, &[], TICKER)?;
    let serve = Serve::start(&[], "warn")?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    let agent = unique("kill");
    let enrollment = admin
        .register_agent(&NewAgent {
            name: agent.clone(),
            ttl_s: None,
        })
        .await?;
    let state = TempDir::new("kill")?;
    let (_proc, log) = spawn_logged_agent(
        &serve,
        &agent,
        &enrollment.token,
        &state.path,
        &[],
        STREAM_LOG,
    )?;
    ready(&admin, &agent, &ticker.name).await?;
    let mut s = admin
        .follow_logs(&agent, &ticker.name, &LogsOptions::default())
        .await?;
    let first = tokio::time::timeout(Duration::from_secs(5), s.next()).await?;
    ensure!(matches!(first, Some(Ok(LogEvent::Lines(_)))), "{first:?}");
    let text = |log: &Arc<Mutex<String>>| log.lock().map(|s| s.clone()).unwrap_or_default();
    ensure!(text(&log).contains("stream started"), "{}", text(&log));

    // The API dies without a word (and the embedded broker with it).
    let mut serve = serve;
    serve.proc.signal("KILL")?;
    serve.proc.wait_exit(Duration::from_secs(5)).await?;
    let killed = Instant::now();
    eventually(
        "the stream's end on the agent",
        Duration::from_secs(30),
        || async { text(&log).contains("stream ended").then_some(()) },
    )
    .await?;
    let log = text(&log);
    let end = log
        .lines()
        .find(|l| l.contains("stream ended"))
        .unwrap_or_default();
    println!(
        "API killed; {:?} later the agent said: {end}",
        killed.elapsed()
    );
    ensure!(
        end.contains("reason=\"expired\"") || end.contains("reason=expired"),
        "{end}"
    );
    ensure!(end.contains("active=0"), "{end}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_follows_a_log_with_only_the_documented_wire_format() -> anyhow::Result<()> {
    let Stack {
        serve,
        admin,
        ticker,
        ..
    } = stack("paho").await?;
    // paho cannot sign requests: an agent that accepts unsigned ones, as mosquitto_rr needs.
    let agent = unique("paho");
    let enrollment = admin
        .register_agent(&NewAgent {
            name: agent.clone(),
            ttl_s: None,
        })
        .await?;
    let state = TempDir::new("paho")?;
    let extra = ["--accept-unsigned"];
    let (_proc, _log) = spawn_logged_agent(
        &serve,
        &agent,
        &enrollment.token,
        &state.path,
        &extra,
        STREAM_LOG,
    )?;
    eventually(
        "the second agent online",
        Duration::from_secs(20),
        || async { admin.ping(&agent, None).await.ok() },
    )
    .await?;
    let user = admin
        .create_mqtt_user(&NewMqttUser {
            name: unique("paho"),
            ha_commands: false,
        })
        .await?;
    let root = zedops_tests::browser::workspace_root();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg(root.join("tests/python/follow_logs.py"))
            .args(["127.0.0.1", &serve.mqtt.port().to_string()])
            .args([&user.username, &user.password, &agent, &ticker.name])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let said = String::from_utf8_lossy(&out.stdout);
    println!("paho: {said}");
    ensure!(
        out.status.success(),
        "paho follower: {said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    no_streams_left(&admin, &agent, Duration::from_secs(5)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stats_stream_shows_a_cpu_loop_busy_at_every_interval() -> anyhow::Result<()> {
    init_logs();
    let run = unique("sstream");
    // A quarter of a core at most: the loop's share stays put however busy the tests beside it
    // are (two cores run the whole suite).
    let busy = TestContainer::cpu_loop(&unique("zt-busy"), &run, Some("0.25"))?;
    let agent = unique("sstream");
    let serve = Serve::start(&[&format!("--local-agent={agent}")], "warn")?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    ready(&admin, &agent, &busy.name).await?;
    let mut s = admin
        .stats_stream(&agent, Some(busy.name.as_str()), Some(1))
        .await?;
    let mut cpu = Vec::new();
    while cpu.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(10), s.next()).await? {
            Some(Ok(StatsEvent::Stats(st))) => {
                ensure!(st.stats.len() == 1, "{st:?}");
                cpu.push(st.stats[0].cpu_percent);
            }
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    drop(s);
    let docker = Docker::cpu_percent(&busy.name)?;
    println!("stats stream: {cpu:.1?} %, docker stats {docker:.1} %");
    // Every snapshot busy; over the stream, what docker stats says (each sample is a second of
    // a loop that a loaded machine may serve unevenly).
    for c in &cpu {
        ensure!(*c > 10.0, "a CPU loop at {c:.1} % in {cpu:?}");
    }
    let mean = cpu.iter().sum::<f64>() / cpu.len() as f64;
    ensure!(
        (mean - docker).abs() <= 12.0,
        "{mean:.1} % on average vs docker {docker:.1} %"
    );
    no_streams_left(&admin, &agent, Duration::from_secs(5)).await?;

    // The CLI's live table on a terminal (script(1) gives it one), redrawn in place.
    let cmd = format!(
        "{} --server {} --token {} stats --agent {agent} --interval 1",
        zedops_bin()?.display(),
        serve.http,
        serve.admin_token
    );
    let mut child = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut table = Proc {
        child,
        what: "zedops stats (live)".into(),
    };
    let screen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let keep = screen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut s) = keep.lock() {
                s.extend_from_slice(&buf[..n]);
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(7)).await;
    table.signal("TERM")?;
    let _ = table.wait_exit(Duration::from_secs(5)).await;
    let shown =
        String::from_utf8_lossy(&screen.lock().map(|s| s.clone()).unwrap_or_default()).into_owned();
    let frames = shown.matches("\x1b[H").count();
    ensure!(frames >= 2, "{frames} frames (not redrawn) in:\n{shown}");
    ensure!(
        shown.contains("CPU %") && shown.contains(busy.name.as_str()),
        "{shown}"
    );
    Ok(())
}

/// The dashboard's log view in Chromium (`tests/browser/logs.mjs`): lines in order as they come,
/// follow off and on, and at most 1000 lines kept of a container that floods; leaving the page
/// ends its streams on the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_log_in_a_bounded_view() -> anyhow::Result<()> {
    let Stack {
        serve,
        admin,
        agent,
        ticker,
    } = stack("ui-logs").await?;
    let script = burst(200, 200, "0.1");
    let flood = TestContainer::run_script(&unique("zt-flood"), &ticker.run_label, &[], &script)?;
    ready(&admin, &agent, &flood.name).await?;
    let args = [
        "--base",
        &serve.http,
        "--agent",
        &agent,
        "--ticker",
        &ticker.name,
        "--flood",
        &flood.name,
    ];
    let env = [("ZEDOPS_TOKEN", serve.admin_token.as_str())];
    zedops_tests::browser::run("logs.mjs", &args, &env).await?;
    no_streams_left(&admin, &agent, Duration::from_secs(10)).await?;
    Ok(())
}

/// A container with a TTY (`docker run -t`) has one output stream, which Docker does not
/// multiplex: its follow comes through as stdout lines, in order, without the TTY's `\r`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tty_container_is_followed_as_stdout() -> anyhow::Result<()> {
    init_logs();
    let run = unique("tty");
    let tty = TestContainer::run_script(&unique("zt-tty"), &run, &["-t"], TICKER)?;
    let agent = unique("tty");
    let serve = Serve::start(&[&format!("--local-agent={agent}")], "warn")?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    ready(&admin, &agent, &tty.name).await?;
    let mut s = admin
        .follow_logs(&agent, &tty.name, &LogsOptions::default())
        .await?;
    let mut got = Vec::new();
    while got.len() < 10 {
        match tokio::time::timeout(Duration::from_secs(5), s.next()).await? {
            Some(Ok(LogEvent::Lines(c))) => {
                for l in c.lines {
                    ensure!(l.stream == "stdout", "{l:?}");
                    ensure!(!l.text.contains('\r'), "{l:?}");
                    got.push(l.text);
                }
            }
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    once_in_order(&ticks(&got)?)?;
    Ok(())
}
