//! Scenarios 1 and 2: request/response round trips.
//!
//! 1. `ping` over MQTT 5 (QoS 0, TCP_NODELAY: what the API and the agent use) through the embedded
//!    broker of `zedops serve` and through Mosquitto; same agent binary, same client code.
//! 2. HTTP → API → MQTT → agent → back: `GET …/ping` (the cheap op the target is about), then a
//!    no-op start and a live list, which include Docker calls; beside their parts measured alone:
//!    the API answering from its cache, the same ops over MQTT directly, and the Docker API calls
//!    the agent makes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use zedops_tests::procs::Mosquitto;
use zedops_tests::TestClient;

use crate::http::{self, Target};
use crate::procs;
use crate::stack::{Stack, AGENT};
use crate::stats::{fmt_dur, verdict, Samples, Table};
use crate::Opts;

/// One MQTT request, timed.
async fn timed_request(
    c: &mut TestClient,
    agent: &str,
    op: &str,
    args: serde_json::Value,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let r = c.request(agent, op, args, Duration::from_secs(10)).await?;
    let d = t0.elapsed();
    if !r.ok {
        bail!("{op} failed: {:?}", r.error);
    }
    Ok(d)
}

/// Waits until `agent` answers `ping` through the broker `c` is connected to.
async fn wait_pingable(c: &mut TestClient, agent: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(r) = c
            .request(agent, "ping", json!({}), Duration::from_millis(500))
            .await
        {
            if r.ok {
                return Ok(());
            }
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("agent {agent} does not answer ping");
        }
    }
}

/// A client on `addr` subscribed to its reply topic, ready for requests.
pub(crate) async fn client(addr: SocketAddr, tag: &str) -> anyhow::Result<TestClient> {
    let id = format!("zedops-bench-{tag}-{}", std::process::id());
    let mut c = TestClient::connect(addr, &id).await?;
    let reply = c.reply_topic();
    c.subscribe(&reply).await?;
    Ok(c)
}

pub struct MqttResult {
    pub embedded: Samples,
}

pub async fn mqtt_ping(stack: &Stack, o: &Opts) -> anyhow::Result<(Table, MqttResult)> {
    let n = if o.quick { 400 } else { 4000 };
    let rounds = 4;

    let mut emb = client(stack.mqtt(), "rr-emb").await?;
    wait_pingable(&mut emb, AGENT).await?;

    let mosq = Mosquitto::start().await.context("starting Mosquitto")?;
    let mosq_agent_name = "bench-agent-mosq";
    let _mosq_agent = procs::spawn_agent(mosq_agent_name, mosq.addr)?;
    let mut mq = client(mosq.addr, "rr-mosq").await?;
    wait_pingable(&mut mq, mosq_agent_name).await?;

    // Warm-up, then alternate rounds so that drift on the machine hits both alike.
    for _ in 0..200 {
        timed_request(&mut emb, AGENT, "ping", json!({})).await?;
        timed_request(&mut mq, mosq_agent_name, "ping", json!({})).await?;
    }
    let (mut se, mut sm) = (Samples::new(), Samples::new());
    for _ in 0..rounds {
        for _ in 0..n / rounds {
            se.push(timed_request(&mut emb, AGENT, "ping", json!({})).await?);
        }
        for _ in 0..n / rounds {
            sm.push(timed_request(&mut mq, mosq_agent_name, "ping", json!({})).await?);
        }
    }
    let mosq_version = std::process::Command::new("mosquitto")
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.replace("mosquitto version ", ""))
        })
        .unwrap_or_default();

    let mut t = Table::latency("1. MQTT request/response round trip: `ping` (QoS 0, TCP_NODELAY)");
    t.lat(
        "client → embedded rumqttd (zedops serve) → zedops agent → back",
        &se,
        &verdict("p50", se.p50(), Duration::from_micros(300)),
    );
    t.lat(
        &format!("reference: same client and agent through Mosquitto {mosq_version}"),
        &sm,
        "reference",
    );
    t.note(format!(
        "ratio embedded/Mosquitto at p50: {:.2}; {} rounds alternating between the brokers after 200 warm-up requests each.",
        se.p50().as_secs_f64() / sm.p50().as_secs_f64().max(1e-9),
        rounds
    ));
    t.note("Client: rumqttc 0.25 (zedops-tests TestClient); agent: `zedops agent` as its own process; each request carries Response Topic, Correlation Data and Message Expiry. The agent answers ping without calling Docker.");
    Ok((t, MqttResult { embedded: se }))
}

/// Longer than a screen on purpose: a benchmark scenario is a script that reads top to bottom in
/// the order it measures, and each row of its table refers to a step above it; split up, the
/// sequence (warm-up, samples, reference in the same run) would be scattered over helpers.
pub async fn http_round_trip(
    stack: &Stack,
    o: &Opts,
    ping: Option<&Samples>,
) -> anyhow::Result<Table> {
    // Rows that reach Docker cost ~10 ms each: fewer of them keep the run short.
    let n_fast = if o.quick { 300 } else { 2000 };
    let n = if o.quick { 100 } else { 400 };
    let warm = 30;
    let api = stack.api();
    let docker = Target::docker();
    let c0 = &stack.containers[0];
    let list_cached = format!("/api/v1/agents/{AGENT}/containers");
    let ping_path = format!("/api/v1/agents/{AGENT}/ping");
    let list_live = format!("/api/v1/agents/{AGENT}/containers?live=true");
    let start = format!("/api/v1/agents/{AGENT}/containers/{}/start", c0.name);

    let mut mq = client(stack.mqtt(), "rr-http").await?;
    wait_pingable(&mut mq, AGENT).await?;
    let ping = match ping {
        Some(p) => p.clone(),
        None => {
            let mut s = Samples::new();
            for _ in 0..warm {
                timed_request(&mut mq, AGENT, "ping", json!({})).await?;
            }
            for _ in 0..n_fast {
                s.push(timed_request(&mut mq, AGENT, "ping", json!({})).await?);
            }
            s
        }
    };
    let mut mqtt_list = Samples::new();
    for _ in 0..warm {
        timed_request(&mut mq, AGENT, "containers.list", json!({"all": true})).await?;
    }
    for _ in 0..n {
        mqtt_list
            .push(timed_request(&mut mq, AGENT, "containers.list", json!({"all": true})).await?);
    }
    let mut mqtt_start = Samples::new();
    for _ in 0..warm {
        timed_request(
            &mut mq,
            AGENT,
            "container.start",
            json!({"container": c0.name}),
        )
        .await?;
    }
    for _ in 0..n {
        mqtt_start.push(
            timed_request(
                &mut mq,
                AGENT,
                "container.start",
                json!({"container": c0.name}),
            )
            .await?,
        );
    }

    let http_ping = http::sequential(&api, "GET", &ping_path, warm, n_fast).await?;
    let cached = http::sequential(&api, "GET", &list_cached, warm, n_fast).await?;
    let live = http::sequential(&api, "GET", &list_live, warm, n).await?;
    let post = http::sequential(&api, "POST", &start, warm, n).await?;
    // What the agent asks Docker: the list (all=true), and for start an inspect then a start that
    // answers 304 (already running).
    let d_list = http::sequential(&docker, "GET", "/containers/json?all=1", warm, n).await?;
    let d_inspect = http::sequential(
        &docker,
        "GET",
        &format!("/containers/{}/json", c0.id),
        warm,
        n,
    )
    .await?;
    let d_start = http::sequential(
        &docker,
        "POST",
        &format!("/containers/{}/start", c0.id),
        warm,
        n,
    )
    .await?;
    // The same list through bollard, the agent's Docker client (it also decodes every row).
    let bollard = bollard::Docker::connect_with_defaults()?
        .negotiate_version()
        .await?;
    let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .build();
    let mut b_list = Samples::new();
    for i in 0..warm + n {
        let t0 = Instant::now();
        bollard.list_containers(Some(opts.clone())).await?;
        if i >= warm {
            b_list.push(t0.elapsed());
        }
    }

    let mut t = Table::latency("2. HTTP → API → agent → reply, beside its parts");
    let v = |s: &Samples| {
        let a = verdict("p50", s.p50(), Duration::from_millis(1));
        let b = verdict("p99", s.p99(), Duration::from_millis(3));
        format!("{a}; {b}")
    };
    t.lat(
        "GET …/agents/{a}/ping (HTTP → API → MQTT → agent → back, no Docker)",
        &http_ping,
        &v(&http_ping),
    );
    t.lat(
        "POST …/containers/{c}/start on a running container (changed: false; Docker inspect + list row inside)",
        &post,
        "no target: Docker calls inside",
    );
    t.lat(
        "GET …/containers?live=true (HTTP → API → MQTT → agent → Docker list → back)",
        &live,
        "no target: Docker calls inside",
    );
    t.lat(
        "part: GET …/containers from the API's cache (no agent)",
        &cached,
        "reference",
    );
    t.lat(
        "part: MQTT `containers.list` direct (no HTTP, no API)",
        &mqtt_list,
        "reference",
    );
    t.lat(
        "part: MQTT `container.start` direct (no HTTP, no API)",
        &mqtt_start,
        "reference",
    );
    t.lat(
        "part: MQTT `ping` direct (scenario 1, no Docker)",
        &ping,
        "reference",
    );
    t.lat(
        "part: Docker API GET /containers/json?all=1 (unix socket)",
        &d_list,
        "reference",
    );
    t.lat(
        "part: the same list through bollard (the agent's client)",
        &b_list,
        "reference",
    );
    t.lat(
        "part: Docker API GET /containers/{id}/json (inspect)",
        &d_inspect,
        "reference",
    );
    t.lat(
        "part: Docker API POST /containers/{id}/start (304)",
        &d_start,
        "reference",
    );
    t.note(format!(
        "p50 of the HTTP ping: MQTT ping {} + HTTP and API {} (HTTP ping − MQTT ping).",
        fmt_dur(ping.p50()),
        fmt_dur(http_ping.p50().saturating_sub(ping.p50()))
    ));
    let api_overhead = live.p50().saturating_sub(mqtt_list.p50());
    let agent_overhead = mqtt_list.p50().saturating_sub(d_list.p50());
    t.note(format!(
        "p50 breakdown of the live list: Docker list {} + agent and MQTT {} (MQTT list − Docker list) + HTTP and API {} (HTTP live − MQTT list).",
        fmt_dur(d_list.p50()),
        fmt_dur(agent_overhead),
        fmt_dur(api_overhead)
    ));
    t.note(format!(
        "{} containers on the engine; one keep-alive HTTP/1.1 connection (hyper), requests back to back after {warm} warm-up requests per row.",
        stack.containers.len()
    ));
    Ok(t)
}
