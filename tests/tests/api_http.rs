//! The HTTP API end to end with real agents and real Docker, against the embedded broker and
//! against Debian's Mosquitto: reads, actions, status codes, SSE, and rebuilding after a restart.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde_json::{json, Value};
use zedops_proto::topics;
use zedops_tests::api::{Broker, BrokerKind, SseReader, TestApi};
use zedops_tests::procs::InProcAgent;
use zedops_tests::{eventually, init_logs, unique, Docker, TestClient, TestContainer};

async fn agent_online(api: &TestApi, agent: &str) -> anyhow::Result<Value> {
    eventually(
        &format!("agent {agent} online in the API"),
        Duration::from_secs(10),
        || async {
            let (s, v) = api
                .get_json(&format!("/api/v1/agents/{agent}"))
                .await
                .ok()?;
            (s == 200 && v["online"] == true).then_some(v)
        },
    )
    .await
}

/// One test container, a broker of `kind`, an in-process agent and the API on that broker.
/// Fields drop in order: the API, then the agent, the broker, the container.
struct Stack {
    api: TestApi,
    agent: InProcAgent,
    _broker: Broker,
    web: TestContainer,
}

impl Stack {
    async fn start(kind: BrokerKind, what: &str) -> anyhow::Result<Self> {
        init_logs();
        let web = TestContainer::run(&unique(&format!("zt-{what}")), &unique(what), &[])?;
        let broker = Broker::start(kind).await?;
        let agent = InProcAgent::start(&unique(what), broker.addr, |_| {})?;
        let api = TestApi::start(&broker.url()).await?;
        Ok(Self {
            api,
            agent,
            _broker: broker,
            web,
        })
    }
}

async fn reads_and_actions(kind: BrokerKind) -> anyhow::Result<()> {
    let Stack {
        api, agent, web, ..
    } = &Stack::start(kind, "http").await?;
    let a = agent.name.clone();

    let info = agent_online(api, &a).await?;
    assert!(info["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(info["docker"]["version"].is_string(), "{info}");
    assert_eq!(info["docker"]["state"], "available");
    // Ping goes to the agent and back.
    let (s, pong) = api.get_json(&format!("/api/v1/agents/{a}/ping")).await?;
    assert_eq!(s, 200, "{pong}");
    assert_eq!(pong["agent"], a.as_str());
    assert_eq!(pong["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(pong["docker"]["state"], "available");
    assert!(
        pong["round_trip_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{pong}"
    );
    let (s, all) = api.get_json("/api/v1/agents").await?;
    assert_eq!(s, 200);
    assert!(all
        .as_array()
        .context("array")?
        .iter()
        .any(|x| x["name"] == a.as_str()));

    // The cached list matches Docker.
    let listed = eventually("web in the cached list", Duration::from_secs(5), || async {
        let (_, v) = api
            .get_json(&format!("/api/v1/agents/{a}/containers"))
            .await
            .ok()?;
        let row = v["containers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == web.name.as_str())?
            .clone();
        Some((v, row))
    })
    .await?;
    assert_eq!(listed.0["live"], false);
    assert_eq!(listed.1["id"], web.id.as_str());
    assert_eq!(listed.1["state"], Docker::state(&web.name)?.as_str());
    let (s, live) = api
        .get_json(&format!("/api/v1/agents/{a}/containers?live=true"))
        .await?;
    assert_eq!(s, 200);
    assert_eq!(live["live"], true);
    let (s, found) = api
        .get_json(&format!("/api/v1/containers?name={}&exact=true", web.name))
        .await?;
    assert_eq!(s, 200);
    assert_eq!(found[0]["agent"], a.as_str());

    // Inspect
    let (s, d) = api
        .get_json(&format!("/api/v1/agents/{a}/containers/{}", web.name))
        .await?;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["id"], web.id.as_str());
    assert!(d["started_at"].is_string());

    // Each action really changes the container.
    let act = |action: &str, query: &str| {
        format!("/api/v1/agents/{a}/containers/{}/{action}{query}", web.name)
    };
    for (action, query, expect) in [
        ("stop", "?grace_s=5", "exited"),
        ("start", "", "running"),
        ("pause", "", "paused"),
        ("unpause", "", "running"),
        ("kill", "?signal=SIGKILL", "exited"),
        ("start", "", "running"),
    ] {
        let (s, r) = api.post_json(&act(action, query)).await?;
        assert_eq!(s, 200, "{action}: {r}");
        assert_eq!(r["changed"], true, "{action}: {r}");
        eventually(
            &format!("{action} → {expect}"),
            Duration::from_secs(5),
            || async { (Docker::state(&web.name).ok()? == expect).then_some(()) },
        )
        .await?;
    }
    let before = web.started_at()?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, r) = api.post_json(&act("restart", "?grace_s=5")).await?;
    assert_eq!(s, 200, "{r}");
    assert_ne!(web.started_at()?, before, "restart gives a new StartedAt");
    let (s, r) = api.post_json(&act("start", "")).await?;
    assert_eq!(
        (s, r["changed"].clone()),
        (200, json!(false)),
        "start of a running container"
    );

    // Logs
    let logs = eventually("log lines over HTTP", Duration::from_secs(5), || async {
        let (s, v) = api
            .get_json(&format!(
                "/api/v1/agents/{a}/containers/{}/logs?tail=3",
                web.name
            ))
            .await
            .ok()?;
        (s == 200 && v["lines"].as_array().is_some_and(|l| !l.is_empty())).then_some(v)
    })
    .await?;
    assert!(logs["lines"].as_array().context("lines")?.len() <= 3);
    assert_eq!(logs["lines"][0]["text"], "tick");

    // The metrics count what we did.
    let m = api
        .http
        .get(api.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        m.contains("zedops_requests_total{op=\"container.restart\",outcome=\"ok\"} 1"),
        "{m}"
    );
    assert!(m.contains("zedops_agents_online"), "{m}");
    Ok(())
}

/// Read your own writes: the moment an action has answered, the API's cached list (what
/// `zedops ps` and the dashboard read) shows its outcome, not a state from before or in between
/// (a restart stops the container first: its `die` used to be what the cache held).
async fn an_action_is_read_back_at_once(kind: BrokerKind) -> anyhow::Result<()> {
    let Stack {
        api, agent, web, ..
    } = &Stack::start(kind, "readback").await?;
    let a = agent.name.clone();
    agent_online(api, &a).await?;
    let cached_state = || async {
        let (_, v) = api
            .get_json(&format!("/api/v1/agents/{a}/containers"))
            .await?;
        let row = v["containers"]
            .as_array()
            .and_then(|rows| rows.iter().find(|c| c["name"] == web.name.as_str()))
            .with_context(|| format!("{} not in the cached list: {v}", web.name))?;
        anyhow::Ok(row["state"].as_str().unwrap_or_default().to_owned())
    };
    eventually(
        "the container in the cache",
        Duration::from_secs(5),
        || async { cached_state().await.ok() },
    )
    .await?;
    for round in 0..4 {
        for (action, expect) in [
            ("restart", "running"),
            ("stop", "exited"),
            ("start", "running"),
            ("pause", "paused"),
            ("unpause", "running"),
        ] {
            let (s, r) = api
                .post_json(&format!(
                    "/api/v1/agents/{a}/containers/{}/{action}?grace_s=5",
                    web.name
                ))
                .await?;
            assert_eq!(s, 200, "{action}: {r}");
            assert_eq!(r["container"]["state"], expect, "{action}: {r}");
            let cached = cached_state().await?;
            assert_eq!(
                cached, expect,
                "round {round}: right after {action} answered, the API's cached list shows {cached}"
            );
        }
    }
    Ok(())
}

async fn status_codes(kind: BrokerKind) -> anyhow::Result<()> {
    init_logs();
    let broker = Broker::start(kind).await?;
    let agent = InProcAgent::start(&unique("codes"), broker.addr, |_| {})?;
    let a = agent.name.clone();
    let api = TestApi::start(&broker.url()).await?;
    agent_online(&api, &a).await?;

    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("GET", "/api/v1/agents/nope-agent".into(), 404, "not_found"),
        (
            "GET",
            "/api/v1/agents/nope-agent/ping".into(),
            404,
            "not_found",
        ),
        (
            "GET",
            format!("/api/v1/agents/{a}/ping?timeout_s=301"),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/agents/nope-agent/containers".into(),
            404,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/agents/nope-agent/containers/web-1/start".into(),
            404,
            "not_found",
        ),
        (
            "POST",
            format!("/api/v1/agents/{a}/containers/zt-no-such-container/start"),
            404,
            "not_found",
        ),
        (
            "GET",
            format!("/api/v1/agents/{a}/containers/zt-no-such-container"),
            404,
            "not_found",
        ),
        (
            "POST",
            format!("/api/v1/agents/{a}/containers/web-1/explode"),
            400,
            "bad_request",
        ),
        (
            "POST",
            format!("/api/v1/agents/{a}/containers/web-1/stop?grace_s=301"),
            400,
            "bad_request",
        ),
        (
            "POST",
            format!("/api/v1/agents/{a}/containers/web-1/stop?grace_s=abc"),
            400,
            "bad_request",
        ),
        (
            "POST",
            format!("/api/v1/agents/{a}/containers/web-1/stop?timeout_s=0"),
            400,
            "bad_request",
        ),
        (
            "POST",
            format!("/api/v1/agents/{a}/containers/web-1/kill?signal=NOPE%20X"),
            400,
            "bad_request",
        ),
        (
            "GET",
            format!("/api/v1/agents/{a}/containers/web-1/logs?tail=100000"),
            400,
            "bad_request",
        ),
        ("GET", "/api/v1/agents/Bad!Name".into(), 400, "bad_request"),
        ("GET", "/api/v1/nowhere".into(), 404, "not_found"),
    ];
    for (method, path, status, code) in cases {
        let (s, body) = if method == "GET" {
            api.get_json(&path).await?
        } else {
            api.post_json(&path).await?
        };
        assert_eq!(s, status, "{method} {path}: {body}");
        assert_eq!(body["code"], code, "{method} {path}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| m.len() > 10),
            "{method} {path}: {body}"
        );
    }
    let (_, body) = api
        .post_json(&format!(
            "/api/v1/agents/{a}/containers/zt-no-such-container/start"
        ))
        .await?;
    assert_eq!(
        body["message"],
        format!("no container named zt-no-such-container on agent {a}")
    );

    // 504: a client posing as an agent that never answers.
    let mute = unique("mute");
    let fake = TestClient::connect(broker.addr, &unique("fake")).await?;
    let status = json!({
        "agent": mute, "state": "online", "version": "0", "hostname": "h",
        "docker": {"state": "available", "version": null, "api_version": null, "error": null},
        "started_at": "2026-01-01T00:00:00Z", "counts": {"total": 0, "running": 0, "paused": 0, "stopped": 0},
        "updated_at": "2026-01-01T00:00:00Z"
    });
    fake.publish(&topics::status(&mute), true, serde_json::to_vec(&status)?)
        .await?;
    agent_online(&api, &mute).await?;
    let t = Instant::now();
    let (s, body) = api
        .post_json(&format!(
            "/api/v1/agents/{mute}/containers/web-1/restart?timeout_s=1"
        ))
        .await?;
    assert_eq!((s, body["code"].clone()), (504, json!("timeout")), "{body}");
    assert!(t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(5));
    let (s, body) = api
        .get_json(&format!("/api/v1/agents/{mute}/ping?timeout_s=1"))
        .await?;
    assert_eq!((s, body["code"].clone()), (504, json!("timeout")), "{body}");

    // 503 at once for an agent that is down.
    agent.stop().await;
    eventually(
        "agent offline in the API",
        Duration::from_secs(5),
        || async {
            let (_, v) = api.get_json(&format!("/api/v1/agents/{a}")).await.ok()?;
            (v["online"] == false).then_some(())
        },
    )
    .await?;
    let t = Instant::now();
    let (s, body) = api
        .post_json(&format!("/api/v1/agents/{a}/containers/web-1/restart"))
        .await?;
    let took = t.elapsed();
    assert_eq!(
        (s, body["code"].clone()),
        (503, json!("agent_offline")),
        "{body}"
    );
    assert!(
        took < Duration::from_millis(500),
        "answered in {took:?}, not after the deadline"
    );
    assert!(body["message"].as_str().unwrap_or_default().contains(&a));
    let (s, body) = api.get_json(&format!("/api/v1/agents/{a}/ping")).await?;
    assert_eq!(
        (s, body["code"].clone()),
        (503, json!("agent_offline")),
        "{body}"
    );
    // The cached list of an offline agent is still readable, marked offline.
    let (s, v) = api
        .get_json(&format!("/api/v1/agents/{a}/containers"))
        .await?;
    assert_eq!((s, v["agent_online"].clone()), (200, json!(false)));
    Ok(())
}

async fn sse_sees_external_stop(kind: BrokerKind) -> anyhow::Result<()> {
    let Stack {
        api, agent, web, ..
    } = &Stack::start(kind, "sse").await?;
    agent_online(api, &agent.name).await?;
    let mut sse = SseReader::open(&api.http, &api.url("/api/v1/events")).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    Docker::run(&["stop", "-t", "5", &web.name])?;
    let stopped = Instant::now();
    let ev = sse
        .wait_for("the stop on SSE", Duration::from_secs(3), |e| {
            e.event == "container"
                && e.data["container"] == web.name.as_str()
                && e.data["state"] == "exited"
        })
        .await?;
    let took = stopped.elapsed();
    eprintln!("docker stop visible on SSE after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(ev.data["agent"], agent.name.as_str());

    // Action results are events too.
    let (s, _) = api
        .post_json(&format!(
            "/api/v1/agents/{}/containers/{}/start",
            agent.name, web.name
        ))
        .await?;
    assert_eq!(s, 200);
    sse.wait_for("the action result", Duration::from_secs(5), |e| {
        e.event == "action" && e.data["ok"] == true && e.data["action"] == "start"
    })
    .await?;
    Ok(())
}

async fn restart_rebuilds_the_fleet_view(kind: BrokerKind) -> anyhow::Result<()> {
    init_logs();
    let run = unique("rebuild");
    let c1 = TestContainer::run(&unique("zt-rb"), &run, &[])?;
    let c2 = TestContainer::create(&unique("zt-rb"), &run)?;
    let broker = Broker::start(kind).await?;
    let a1 = InProcAgent::start(&unique("rb-one"), broker.addr, |_| {})?;
    let a2 = InProcAgent::start(&unique("rb-two"), broker.addr, |_| {})?;
    let api = TestApi::start(&broker.url()).await?;
    agent_online(&api, &a1.name).await?;
    agent_online(&api, &a2.name).await?;
    api.stop().await;

    // A new API process: agents keep running; the view comes back from retained state + resync.
    let started = Instant::now();
    let api = TestApi::start(&broker.url()).await?;
    let names = [c1.name.clone(), c2.name.clone()];
    eventually("the full fleet view", Duration::from_secs(5), || async {
        for a in [&a1.name, &a2.name] {
            let (s, v) = api
                .get_json(&format!("/api/v1/agents/{a}/containers"))
                .await
                .ok()?;
            if s != 200 || v["agent_online"] != true {
                return None;
            }
            let rows = v["containers"].as_array()?;
            if !names
                .iter()
                .all(|n| rows.iter().any(|c| c["name"] == n.as_str()))
            {
                return None;
            }
        }
        Some(())
    })
    .await?;
    eprintln!(
        "fleet view rebuilt {:?} after the API restart",
        started.elapsed()
    );
    ensure!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

macro_rules! both_brokers {
    ($($name:ident),*) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> anyhow::Result<()> { super::$name(super::BrokerKind::Embedded).await })*
        }
        mod mosquitto {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> anyhow::Result<()> { super::$name(super::BrokerKind::Mosquitto).await })*
        }
    };
}

both_brokers!(
    reads_and_actions,
    an_action_is_read_back_at_once,
    status_codes,
    sse_sees_external_stop,
    restart_rebuilds_the_fleet_view
);
