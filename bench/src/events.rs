//! Scenario 5: a Docker event until it is visible on the API's SSE stream and on the MQTT
//! per-container topic. Docker's own event timestamp (`timeNano`, read here from the engine's event
//! stream) is the start; the arrival at this process is the end (same host, same clock).

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use zedops_client::EventKind;
use zedops_proto::topics;
use zedops_tests::TestClient;

use crate::stack::{Stack, AGENT};
use crate::stats::{verdict, Samples, Table};
use crate::Opts;

#[derive(Debug)]
struct Seen {
    /// Docker action (`die`, `start`, …) or, for MQTT, the container's new state.
    what: String,
    /// Docker's time of the event (Docker stream and SSE); arrival time for MQTT.
    time: DateTime<Utc>,
    arrived: DateTime<Utc>,
}

fn since(a: DateTime<Utc>, b: DateTime<Utc>) -> Duration {
    (b - a).to_std().unwrap_or(Duration::ZERO)
}

async fn docker_events(name: String, tx: mpsc::UnboundedSender<Seen>) -> anyhow::Result<()> {
    let docker = bollard::Docker::connect_with_defaults()?;
    let mut s = Box::pin(zedops_agent::docker::container_events(&docker));
    while let Some(ev) = s.next().await {
        let Ok(ev) = ev else { continue };
        let n = ev
            .actor
            .as_ref()
            .and_then(|a| a.attributes.as_ref())
            .and_then(|a| a.get("name").cloned());
        if n.as_deref() != Some(name.as_str()) {
            continue;
        }
        let time = ev
            .time_nano
            .map(|n| Utc.timestamp_nanos(n))
            .unwrap_or_else(Utc::now);
        let _ = tx.send(Seen {
            what: ev.action.unwrap_or_default(),
            time,
            arrived: Utc::now(),
        });
    }
    Ok(())
}

async fn sse_events(
    client: zedops_client::Client,
    name: String,
    tx: mpsc::UnboundedSender<Seen>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<()> {
    let mut events = client.events().await?;
    let _ = ready.send(());
    while let Some(ev) = events.next().await {
        let arrived = Utc::now();
        let Ok(ev) = ev else { continue };
        if ev.kind != EventKind::Container || ev.container.as_deref() != Some(name.as_str()) {
            continue;
        }
        let _ = tx.send(Seen {
            what: ev.action.unwrap_or_default(),
            time: ev.time,
            arrived,
        });
    }
    Ok(())
}

/// Waits for the first item satisfying `pred` within `limit`.
async fn wait(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    limit: Duration,
    pred: impl Fn(&Seen) -> bool,
) -> Option<Seen> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) if pred(&s) => return Some(s),
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Seen>) {
    while rx.try_recv().is_ok() {}
}

/// Longer than a screen on purpose: a benchmark scenario is a script that reads top to bottom in
/// the order it measures, and each row of its table refers to a step above it; split up, the
/// sequence (warm-up, samples, reference in the same run) would be scattered over helpers.
pub async fn run(stack: &Stack, o: &Opts) -> anyhow::Result<Table> {
    let cycles = if o.quick { 5 } else { 20 };
    let name = stack.containers[2].name.clone();

    let (dtx, mut drx) = mpsc::unbounded_channel();
    let dtask = tokio::spawn(docker_events(name.clone(), dtx));
    let (stx, mut srx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let stask = tokio::spawn(sse_events(stack.client()?, name.clone(), stx, ready_tx));
    tokio::time::timeout(Duration::from_secs(5), ready_rx)
        .await
        .context("the SSE stream did not open")??;

    let mut mq = TestClient::connect(
        stack.mqtt(),
        &format!("zedops-bench-ev-{}", std::process::id()),
    )
    .await?;
    mq.subscribe(&topics::container(AGENT, &name)).await?;
    let (mtx, mut mrx) = mpsc::unbounded_channel();
    let mtask = tokio::spawn(async move {
        loop {
            let Ok(m) = mq
                .wait_for("container topic", Duration::from_secs(3600), |_| true)
                .await
            else {
                break;
            };
            let arrived = Utc::now();
            let state = m.json()["state"].as_str().unwrap_or_default().to_owned();
            if mtx
                .send(Seen {
                    what: state,
                    time: arrived,
                    arrived,
                })
                .is_err()
            {
                break;
            }
        }
    });
    // Let the retained message and any earlier traffic pass.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (mut sse, mut mqtt, mut dock) = (Samples::new(), Samples::new(), Samples::new());
    let mut missed = Vec::new();
    let mut slow = Vec::new();
    let limit = Duration::from_secs(5);
    for i in 0..cycles * 2 {
        let (args, first, state): (&[&str], &str, &str) = if i % 2 == 0 {
            (&["stop", "-t", "5"], "die", "exited")
        } else {
            (&["start"], "start", "running")
        };
        drain(&mut drx);
        drain(&mut srx);
        drain(&mut mrx);
        let begun = Utc::now();
        let mut full: Vec<&str> = args.to_vec();
        full.push(&name);
        let full: Vec<String> = full.iter().map(|s| (*s).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = full.iter().map(String::as_str).collect();
            zedops_tests::Docker::run(&a)
        })
        .await??;
        let Some(d) = wait(&mut drx, limit, |s| s.what == first && s.time >= begun).await else {
            missed.push(format!("docker event {first} (cycle {i})"));
            continue;
        };
        match wait(&mut srx, limit, |s| s.what == first && s.time >= begun).await {
            Some(s) => sse.push(since(d.time, s.arrived)),
            None => missed.push(format!("SSE {first} (cycle {i})")),
        }
        match wait(&mut mrx, limit, |s| s.what == state && s.arrived >= begun).await {
            Some(s) => {
                let l = since(d.time, s.arrived);
                if l > Duration::from_millis(100) {
                    slow.push(format!(
                        "{} ({first}) {}",
                        i / 2 + 1,
                        crate::stats::fmt_dur(l)
                    ));
                }
                mqtt.push(l)
            }
            None => missed.push(format!("MQTT state {state} (cycle {i})")),
        }
        // Docker's own event stream (engine → this process) is the reference.
        dock.push(since(d.time, d.arrived));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    dtask.abort();
    stask.abort();
    mtask.abort();

    let mut t = Table::latency(format!(
        "5. Docker event → visible to subscribers ({cycles} stop/start cycles, {} transitions)",
        cycles * 2
    ));
    t.lat(
        "SSE GET /api/v1/events: container event (die / start)",
        &sse,
        &verdict("p99", sse.p99(), Duration::from_millis(100)),
    );
    t.lat(
        "MQTT zedops/v1/agents/{a}/containers/{name}: new state (exited / running)",
        &mqtt,
        &verdict("p99", mqtt.p99(), Duration::from_millis(100)),
    );
    t.lat(
        "reference: Docker's own event stream (GET /events) to this process",
        &dock,
        "reference",
    );
    t.note("From Docker's own event timestamp (timeNano) to arrival here. The agent gathers a burst of events for 25 ms (COALESCE in agent/src/session.rs), then lists the containers (one Docker call) and publishes; the API forwards the agent's event to SSE.");
    if !slow.is_empty() {
        t.note(format!(
            "MQTT state later than 100 ms (cycle, first Docker event, latency): {}. Likely cause: the list the agent takes 25 ms after the event still showed the old state, and the retained topic was corrected only by a later refresh (the SSE event of the same transition was on time).",
            slow.join(", ")
        ));
    }
    if !missed.is_empty() {
        t.note(format!("not seen within 5 s: {}", missed.join(", ")));
    }
    Ok(t)
}
