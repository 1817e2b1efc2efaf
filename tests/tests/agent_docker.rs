//! The agent against real Docker through the embedded broker: snapshot, requests from a client we
//! did not write (mosquitto_rr), every v1 op, error codes, event-driven republish, expiry and
//! duplicate correlation data.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use serde_json::json;
use zedops_broker::{BrokerConfig, BrokerHandle};
use zedops_proto::ops::{ActionResult, ContainerList, Logs, Pong};
use zedops_proto::{topics, ContainerDetail, ErrorCode, Snapshot};
use zedops_tests::procs::InProcAgent;
use zedops_tests::{init_logs, unique, Docker, TestClient, TestContainer};

struct Env {
    broker: BrokerHandle,
    agent: InProcAgent,
    client: TestClient,
}

async fn env(agent_prefix: &str) -> anyhow::Result<Env> {
    init_logs();
    let broker = zedops_broker::start(BrokerConfig::ephemeral()).await?;
    let name = unique(agent_prefix);
    let agent = InProcAgent::start(&name, broker.v5_addr(), |_| {})?;
    let mut client = TestClient::connect(broker.v5_addr(), &unique("client")).await?;
    client.subscribe(&client.reply_topic()).await?;
    client.subscribe(&topics::status(&name)).await?;
    client
        .wait_for("agent online", Duration::from_secs(10), |m| {
            m.json()["state"] == "online" && m.json()["docker"]["state"] == "available"
        })
        .await?;
    Ok(Env {
        broker,
        agent,
        client,
    })
}

fn snapshot_of(m: &zedops_tests::mqtt::Msg) -> Option<Snapshot> {
    serde_json::from_slice(&m.payload).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_snapshot_match_docker_ps() -> anyhow::Result<()> {
    let run = unique("snap");
    let running = TestContainer::run(&unique("zt-run"), &run, &[])?;
    let stopped = TestContainer::run(&unique("zt-stopped"), &run, &[])?;
    Docker::run(&["stop", "-t", "1", &stopped.name])?;
    let created = TestContainer::create(&unique("zt-created"), &run)?;

    let mut e = env("snap").await?;
    let agent = e.agent.name.clone();
    // A subscriber arriving later gets the retained status and snapshot.
    let mut late = TestClient::connect(e.broker.v5_addr(), &unique("late")).await?;
    late.subscribe(&topics::status(&agent)).await?;
    let st = late
        .wait_for("retained status", Duration::from_secs(5), |m| m.retain)
        .await?;
    assert_eq!(st.json()["state"], "online");
    assert_eq!(st.json()["agent"], agent.as_str());
    assert!(st.json()["docker"]["version"].is_string());

    late.subscribe(&topics::snapshot(&agent)).await?;
    let expected = Docker::ps_labelled(&running.run_label)?;
    ensure!(expected.len() == 3, "docker ps shows {expected:?}");
    let snap = late
        .wait_for(
            "a snapshot matching docker ps -a",
            Duration::from_secs(5),
            |m| {
                snapshot_of(m).is_some_and(|s| {
                    let mut mine: Vec<String> = s
                        .containers
                        .iter()
                        .filter(|c| c.labels.get("zedops.test.run") == Some(&run))
                        .map(|c| format!("{}\t{}\t{}", c.name, c.state, c.image))
                        .collect();
                    mine.sort();
                    mine == expected
                })
            },
        )
        .await?;
    let snap = snapshot_of(&snap).context("snapshot")?;
    assert_eq!(snap.agent, agent);
    for c in snap
        .containers
        .iter()
        .filter(|c| c.labels.get("zedops.test.run") == Some(&run))
    {
        assert!(
            c.created_at.timestamp() > 1_600_000_000,
            "created_at is real: {}",
            c.created_at
        );
        assert_eq!(c.id, Docker::id(&c.name)?);
        assert_eq!(c.short_id, c.id[..12]);
    }
    let _ = (&created, &stopped);

    // The live list agrees too.
    let list: ContainerList = e.client.call(&agent, "containers.list", json!({})).await?;
    assert!(list
        .containers
        .iter()
        .any(|c| c.name == created.name && c.state.as_str() == "created"));
    let list: ContainerList = e
        .client
        .call(&agent, "containers.list", json!({"all": false}))
        .await?;
    assert!(list.containers.iter().any(|c| c.name == running.name));
    assert!(!list.containers.iter().any(|c| c.name == stopped.name));
    e.agent.stop().await;
    Ok(())
}

/// Sends `args` to `op` on `e`'s agent with mosquitto_rr (MQTT 5, correlation data `corr`);
/// the reply line as mosquitto_rr prints it (`-F %j`) and its decoded payload.
fn mosquitto_rr(
    e: &Env,
    op: &str,
    args: serde_json::Value,
    corr: &str,
) -> anyhow::Result<(serde_json::Value, serde_json::Value)> {
    let port = e.broker.v5_addr().port().to_string();
    let mut cmd = Command::new("mosquitto_rr");
    cmd.args(["-V", "mqttv5", "-h", "127.0.0.1", "-p", &port])
        .args(["-t", &topics::request(&e.agent.name, op)])
        .args(["-e", &topics::replies(&unique("rr"))])
        .args(["-m", &args.to_string()])
        .args(["-D", "publish", "correlation-data", corr])
        .args(["-W", "30", "-F", "%j"]);
    let out = zedops_tests::procs::run_ok(&mut cmd, "mosquitto_rr (install mosquitto-clients)")?;
    let line: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let payload = serde_json::from_str(line["payload"].as_str().context("payload")?)?;
    Ok((line, payload))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_rr_restarts_a_container_by_name() -> anyhow::Result<()> {
    let run = unique("rr");
    let web = TestContainer::run(&unique("zt-web"), &run, &[])?;
    let e = env("rr").await?;
    let before = web.started_at()?;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let args = json!({"container": web.name, "grace_s": 5});
    let (line, payload) = mosquitto_rr(&e, "container.restart", args, "corr-42")?;
    assert_eq!(line["properties"]["correlation-data"], "corr-42");
    assert_eq!(payload["ok"], true, "{payload}");
    assert_eq!(payload["result"]["changed"], true);
    assert_eq!(payload["result"]["container"]["name"], web.name.as_str());
    assert_eq!(payload["result"]["container"]["state"], "running");

    let after = web.started_at()?;
    assert_ne!(before, after, "Docker shows a new StartedAt");
    assert_eq!(web.state()?, "running");
    Ok(())
}

/// Issue 16, item 2: `container.exec` from a client nobody here wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_rr_runs_a_command_in_a_container() -> anyhow::Result<()> {
    let run = unique("rr-exec");
    let web = TestContainer::run(&unique("zt-rrx"), &run, &[])?;
    let e = env("rrx").await?;
    let cmd = ["sh", "-c", "echo from-mqtt; touch /tmp/by-mqtt; exit 4"];
    let args = json!({"container": web.name, "cmd": cmd});
    let (line, payload) = mosquitto_rr(&e, "container.exec", args, "corr-exec")?;
    assert_eq!(line["properties"]["correlation-data"], "corr-exec");
    assert_eq!(payload["ok"], true, "{payload}");
    assert_eq!(payload["result"]["exit_code"], 4, "{payload}");
    assert_eq!(payload["result"]["stdout"], "from-mqtt\n", "{payload}");
    Docker::run(&["exec", &web.name, "test", "-f", "/tmp/by-mqtt"])?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_op_changes_or_reports_the_real_container() -> anyhow::Result<()> {
    let run = unique("ops");
    let web = TestContainer::run(&unique("zt-ops"), &run, &[])?;
    let mut e = env("ops").await?;
    let a = e.agent.name.clone();
    let c = json!({"container": web.name});

    let pong: Pong = e.client.call(&a, "ping", json!({})).await?;
    assert_eq!(pong.agent, a);

    // stop, and stop again (no change, not an error)
    let r: ActionResult = e
        .client
        .call(
            &a,
            "container.stop",
            json!({"container": web.name, "grace_s": 5}),
        )
        .await?;
    assert!(r.changed);
    assert_eq!(web.state()?, "exited");
    assert_eq!(r.container.state.as_str(), "exited");
    let r: ActionResult = e.client.call(&a, "container.stop", c.clone()).await?;
    assert!(!r.changed);

    // start by unique ID prefix, and start again
    let prefix = &web.id[..8];
    let r: ActionResult = e
        .client
        .call(&a, "container.start", json!({"container": prefix}))
        .await?;
    assert!(r.changed);
    assert_eq!(web.state()?, "running");
    let r: ActionResult = e.client.call(&a, "container.start", c.clone()).await?;
    assert!(!r.changed, "starting a running container is changed: false");

    // pause / unpause
    let r: ActionResult = e.client.call(&a, "container.pause", c.clone()).await?;
    assert!(r.changed);
    assert_eq!(web.state()?, "paused");
    assert_eq!(r.container.state.as_str(), "paused");
    let r: ActionResult = e.client.call(&a, "container.unpause", c.clone()).await?;
    assert!(r.changed);
    assert_eq!(web.state()?, "running");

    // inspect: detail, env names only
    let d: ContainerDetail = e.client.call(&a, "container.inspect", c.clone()).await?;
    assert_eq!(d.container.id, web.id);
    assert!(d.started_at.is_some());
    assert!(d.env_names.iter().all(|n| !n.contains('=')));

    // logs: the test image prints "tick" every second
    let mut logs: Option<Logs> = None;
    for _ in 0..50 {
        let l: Logs = e
            .client
            .call(
                &a,
                "container.logs",
                json!({"container": web.name, "tail": 5}),
            )
            .await?;
        if !l.lines.is_empty() {
            logs = Some(l);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = logs.context("no log lines within 5 s")?;
    assert!(logs.lines.len() <= 5);
    assert!(
        logs.lines.iter().any(|l| l.text.contains("tick")),
        "{logs:?}"
    );

    // kill, then kill again: conflict (not running)
    let r: ActionResult = e
        .client
        .call(
            &a,
            "container.kill",
            json!({"container": web.name, "signal": "SIGKILL"}),
        )
        .await?;
    assert!(r.changed);
    zedops_tests::eventually("killed", Duration::from_secs(5), || async {
        (web.state().ok()? == "exited").then_some(())
    })
    .await?;
    let r = e
        .client
        .request(&a, "container.kill", c.clone(), Duration::from_secs(10))
        .await?;
    assert_eq!(r.error.context("error")?.code, ErrorCode::Conflict);

    // errors, and the agent keeps serving after each
    let cases: Vec<(&str, Vec<u8>, ErrorCode, &str)> = vec![
        (
            "container.start",
            br#"{"container":"zt-no-such-container"}"#.to_vec(),
            ErrorCode::NotFound,
            "no container named zt-no-such-container on agent",
        ),
        (
            "container.start",
            b"{not json".to_vec(),
            ErrorCode::BadRequest,
            "invalid arguments",
        ),
        (
            "container.start",
            br#"{"container":"a/b"}"#.to_vec(),
            ErrorCode::BadRequest,
            "invalid",
        ),
        (
            "container.stop",
            br#"{"container":"x","grace_s":9999}"#.to_vec(),
            ErrorCode::BadRequest,
            "grace_s",
        ),
        (
            "container.explode",
            b"{}".to_vec(),
            ErrorCode::BadRequest,
            "unknown op",
        ),
        (
            "container.logs",
            b"\xff\xfe".to_vec(),
            ErrorCode::BadRequest,
            "invalid arguments",
        ),
    ];
    for (i, (op, payload, code, text)) in cases.into_iter().enumerate() {
        let m = e
            .client
            .request_raw(
                &a,
                op,
                payload,
                Bytes::from(format!("err-{i}")),
                PublishProperties::default(),
                Duration::from_secs(10),
            )
            .await?;
        let reply: zedops_proto::Reply = serde_json::from_slice(&m.payload)?;
        let err = reply.error.context("expected an error")?;
        assert_eq!(err.code, code, "{op}: {}", err.message);
        assert!(err.message.contains(text), "{op}: {}", err.message);
        let _: Pong = e.client.call(&a, "ping", json!({})).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_id_prefix_is_a_conflict() -> anyhow::Result<()> {
    // Two containers whose IDs share 4 hex digits: create until Docker's random IDs collide.
    let run = unique("amb");
    let mut made: Vec<TestContainer> = Vec::new();
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let pair = loop {
        ensure!(
            made.len() < 1500,
            "no 4-digit ID prefix collision in 1500 containers"
        );
        let batch: Vec<String> = (0..20).map(|_| unique("zt-amb")).collect();
        // docker create, 20 at a time in parallel
        let handles: Vec<_> = batch
            .iter()
            .map(|n| {
                let n = n.clone();
                let run = run.clone();
                std::thread::spawn(move || TestContainer::create(&n, &run))
            })
            .collect();
        let mut found = None;
        for h in handles {
            let c = h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
            let p = c.id[..4].to_owned();
            if let Some(&other) = seen.get(&p) {
                found = Some((other, made.len()));
            }
            seen.insert(p, made.len());
            made.push(c);
        }
        if let Some(f) = found {
            break f;
        }
    };
    let prefix = made[pair.0].id[..4].to_owned();
    let mut e = env("amb").await?;
    let r = e
        .client
        .request(
            &e.agent.name,
            "container.inspect",
            json!({"container": prefix}),
            Duration::from_secs(20),
        )
        .await?;
    let err = r.error.context("expected conflict")?;
    assert_eq!(err.code, ErrorCode::Conflict, "{}", err.message);
    assert!(
        err.message.contains(&made[pair.0].name) && err.message.contains(&made[pair.1].name),
        "{}",
        err.message
    );
    // The longer prefix is unique again.
    let d: ContainerDetail = e
        .client
        .call(
            &e.agent.name,
            "container.inspect",
            json!({"container": &made[pair.0].id[..16]}),
        )
        .await?;
    assert_eq!(d.container.name, made[pair.0].name);
    drop(made);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_stop_outside_zedops_is_republished_within_a_second() -> anyhow::Result<()> {
    let run = unique("ext");
    let web = TestContainer::run(&unique("zt-ext"), &run, &[])?;
    let mut e = env("ext").await?;
    let a = e.agent.name.clone();
    e.client.subscribe(&topics::snapshot(&a)).await?;
    e.client
        .subscribe(&topics::container(&a, &web.name))
        .await?;
    e.client.subscribe(&topics::events(&a)).await?;
    e.client
        .wait_for("web running in the snapshot", Duration::from_secs(5), |m| {
            snapshot_of(m).is_some_and(|s| {
                s.containers
                    .iter()
                    .any(|c| c.name == web.name && c.state.as_str() == "running")
            })
        })
        .await?;

    // Resync is 60 s, so only the event stream can make this fast.
    Docker::run(&["stop", "-t", "5", &web.name])?;
    let stopped = Instant::now();
    let name = web.name.clone();
    let ctopic = topics::container(&a, &web.name);
    let stopic = topics::snapshot(&a);
    let (mut snap_seen, mut topic_seen) = (None, None);
    while snap_seen.is_none() || topic_seen.is_none() {
        let m = e
            .client
            .wait_for("the stop to be published", Duration::from_secs(2), |_| true)
            .await?;
        if m.topic == stopic
            && snapshot_of(&m).is_some_and(|s| {
                s.containers
                    .iter()
                    .any(|c| c.name == name && c.state.as_str() == "exited")
            })
        {
            snap_seen.get_or_insert(stopped.elapsed());
        }
        if m.topic == ctopic && m.json()["state"] == "exited" {
            topic_seen.get_or_insert(stopped.elapsed());
        }
    }
    let (s, t) = (
        snap_seen.unwrap_or_default(),
        topic_seen.unwrap_or_default(),
    );
    eprintln!("docker stop visible: snapshot after {s:?}, per-container topic after {t:?}");
    assert!(
        s < Duration::from_secs(1) && t < Duration::from_secs(1),
        "snapshot {s:?}, topic {t:?}"
    );

    // The retained per-container topic now says exited, for a subscriber that arrives later.
    let mut late = TestClient::connect(e.broker.v5_addr(), &unique("late")).await?;
    late.subscribe(&ctopic).await?;
    let m = late
        .wait_for("retained container", Duration::from_secs(3), |m| m.retain)
        .await?;
    assert_eq!(m.json()["state"], "exited");

    // Removing the container clears its retained topic (empty payload).
    drop(web);
    e.client
        .wait_for("empty retained payload", Duration::from_secs(3), |m| {
            m.topic == ctopic && m.payload.is_empty()
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_requests_are_not_run_and_duplicates_run_once() -> anyhow::Result<()> {
    let run = unique("dup");
    let web = TestContainer::run(&unique("zt-dup"), &run, &[])?;
    let mut e = env("dup").await?;
    let a = e.agent.name.clone();
    let args = serde_json::to_vec(&json!({"container": web.name, "grace_s": 5}))?;

    // 1. A deadline already passed: not executed, no reply.
    let before = web.started_at()?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let past = (chrono::Utc::now().timestamp_millis() - 1000).to_string();
    let props = PublishProperties {
        message_expiry_interval: Some(30),
        user_properties: vec![(zedops_agent::session::DEADLINE_PROPERTY.into(), past)],
        ..Default::default()
    };
    let r = e
        .client
        .request_raw(
            &a,
            "container.restart",
            args.clone(),
            Bytes::from_static(b"expired-1"),
            props,
            Duration::from_secs(2),
        )
        .await;
    assert!(r.is_err(), "an expired request gets no reply");
    // 2. A Message Expiry Interval of 0 (already expired) likewise.
    let props = PublishProperties {
        message_expiry_interval: Some(0),
        ..Default::default()
    };
    let r = e
        .client
        .request_raw(
            &a,
            "container.restart",
            args.clone(),
            Bytes::from_static(b"expired-2"),
            props,
            Duration::from_secs(2),
        )
        .await;
    assert!(r.is_err(), "an expired request gets no reply");
    assert_eq!(web.started_at()?, before, "the container was not restarted");

    // 3. The same correlation data twice: executed once, answered twice.
    let since = chrono::Utc::now().timestamp().to_string();
    let props = PublishProperties {
        message_expiry_interval: Some(60),
        ..Default::default()
    };
    let corr = Bytes::from_static(b"same-correlation");
    let first = e
        .client
        .request_raw(
            &a,
            "container.restart",
            args.clone(),
            corr.clone(),
            props.clone(),
            Duration::from_secs(30),
        )
        .await?;
    let after_first = web.started_at()?;
    assert_ne!(after_first, before);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = e
        .client
        .request_raw(
            &a,
            "container.restart",
            args.clone(),
            corr.clone(),
            props,
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(
        first.payload, second.payload,
        "the duplicate is answered with the first reply"
    );
    assert_eq!(web.started_at()?, after_first, "restarted once, not twice");
    let until = (chrono::Utc::now().timestamp() + 1).to_string();
    let restarts = Docker::run(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        &format!("container={}", web.id),
        "--filter",
        "event=restart",
        "--format",
        "{{.Action}}",
    ])?;
    assert_eq!(restarts.lines().count(), 1, "docker events: {restarts:?}");
    Ok(())
}

/// `--no-container-topics`: status, snapshot and events only — no retained topic per container,
/// and no subscription to them (what lets the embedded broker carry thousands of agents).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_container_topics_only_the_snapshot_carries_containers() -> anyhow::Result<()> {
    init_logs();
    let run = unique("lean");
    let web = TestContainer::run(&unique("zt-lean"), &run, &[])?;
    let broker = zedops_broker::start(BrokerConfig::ephemeral()).await?;
    let name = unique("lean");
    let agent = InProcAgent::start(&name, broker.v5_addr(), |c| c.container_topics = false)?;
    let mut c = TestClient::connect(broker.v5_addr(), &unique("client")).await?;
    c.subscribe(&topics::snapshot(&name)).await?;
    c.wait_for(
        "a snapshot with the container",
        Duration::from_secs(10),
        |m| snapshot_of(m).is_some_and(|s| s.containers.iter().any(|x| x.name == web.name)),
    )
    .await?;
    // A state change still reaches the snapshot.
    Docker::run(&["stop", "-t", "1", &web.name])?;
    c.wait_for("the stop in the snapshot", Duration::from_secs(5), |m| {
        snapshot_of(m).is_some_and(|s| {
            s.containers
                .iter()
                .any(|x| x.name == web.name && x.state.as_str() == "exited")
        })
    })
    .await?;
    // A client nobody here wrote sees no per-container topic, retained or live.
    Docker::run(&["start", &web.name])?;
    let seen = mosquitto_sub_v5(broker.v5_addr().port(), &topics::containers_of(&name), &[])?;
    assert!(
        seen.trim().is_empty(),
        "per-container topics published: {seen}"
    );
    agent.stop().await;
    Ok(())
}

/// What Mosquitto's `mosquitto_sub` (MQTT 5, a client nobody here wrote) prints for `filter` in
/// 2 s: one `topic payload` line per message. A failed connection is an error, not an empty list.
fn mosquitto_sub_v5(port: u16, filter: &str, extra: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-V", "mqttv5", "-v", "-W", "2"])
        .args(extra)
        .args(["-t", filter])
        .output()?;
    // 27: the -W timeout ended it, the normal end here.
    anyhow::ensure!(
        matches!(out.status.code(), Some(0 | 27)),
        "mosquitto_sub failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The agent remembers in its state directory which per-container topics it left retained, and a
/// later run clears those of containers removed while it was stopped (it does not subscribe to
/// its own per-container topics to find them: docs/benchmarks.md §6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_clears_topics_of_containers_removed_meanwhile() -> anyhow::Result<()> {
    init_logs();
    let run = unique("left");
    let keep = TestContainer::run(&unique("zt-keep"), &run, &[])?;
    let gone = TestContainer::run(&unique("zt-gone"), &run, &[])?;
    let broker = zedops_broker::start(BrokerConfig::ephemeral()).await?;
    let name = unique("left");
    let dir = std::env::temp_dir().join(unique("zedops-agent-state"));
    let agent = InProcAgent::start(&name, broker.v5_addr(), |c| c.state_dir = Some(dir.clone()))?;
    let mut c = TestClient::connect(broker.v5_addr(), &unique("client")).await?;
    c.subscribe(&topics::container(&name, &gone.name)).await?;
    c.wait_for("the container's topic", Duration::from_secs(10), |m| {
        !m.payload.is_empty()
    })
    .await?;
    agent.stop().await;
    Docker::run(&["rm", "-f", &gone.name])?;

    let agent = InProcAgent::start(&name, broker.v5_addr(), |c| c.state_dir = Some(dir.clone()))?;
    c.wait_for(
        "the removed container's topic cleared",
        Duration::from_secs(10),
        |m| m.payload.is_empty(),
    )
    .await?;
    // A client nobody here wrote finds the kept container's topic retained, and not the other.
    let seen = mosquitto_sub_v5(
        broker.v5_addr().port(),
        &topics::containers_of(&name),
        &["--retained-only"],
    )?;
    assert!(
        seen.contains(&topics::container(&name, &keep.name)),
        "kept container's topic missing: {seen}"
    );
    assert!(
        !seen.contains(&topics::container(&name, &gone.name)),
        "removed container's topic still retained: {seen}"
    );
    agent.stop().await;

    // Started again without per-container topics, it clears the ones it left.
    c.subscribe(&topics::container(&name, &keep.name)).await?;
    c.wait_for("the kept container's topic", Duration::from_secs(5), |m| {
        !m.payload.is_empty()
    })
    .await?;
    let agent = InProcAgent::start(&name, broker.v5_addr(), |c| {
        c.state_dir = Some(dir.clone());
        c.container_topics = false;
    })?;
    c.wait_for(
        "the kept container's topic cleared",
        Duration::from_secs(10),
        |m| m.topic == topics::container(&name, &keep.name) && m.payload.is_empty(),
    )
    .await?;
    agent.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `fleet/resync` makes the agent republish its status and snapshot, not every per-container
/// topic (they are retained already; republishing them costs the broker per topic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_republishes_status_and_snapshot_only() -> anyhow::Result<()> {
    let run = unique("resync");
    // A created container: its Docker status text ("Created") does not change with time, as
    // "Up 3 seconds" does (which is a change, and republished).
    let web = TestContainer::create(&unique("zt-resync"), &run)?;
    let e = env("resync").await?;
    let a = e.agent.name.clone();
    let mut c = TestClient::connect(e.broker.v5_addr(), &unique("watch")).await?;
    c.subscribe(&topics::snapshot(&a)).await?;
    c.subscribe(&topics::containers_of(&a)).await?;
    let first = c
        .wait_for("the retained snapshot", Duration::from_secs(10), |m| {
            snapshot_of(m).is_some_and(|s| s.containers.iter().any(|x| x.name == web.name))
        })
        .await?;
    let seq = snapshot_of(&first).map(|s| s.seq).unwrap_or_default();
    c.drain(Duration::from_millis(500)).await;
    e.client
        .publish(topics::RESYNC, false, b"{}".to_vec())
        .await?;
    c.wait_for("a newer snapshot", Duration::from_secs(5), |m| {
        snapshot_of(m).is_some_and(|s| s.seq > seq)
    })
    .await?;
    // Other tests' young containers change ("Up 2 seconds") and are republished as changes;
    // this one did not change.
    let later = c.drain(Duration::from_millis(1500)).await;
    let own = topics::container(&a, &web.name);
    assert!(
        !later.iter().any(|m| m.topic == own),
        "{own} republished on resync though unchanged"
    );
    Ok(())
}

/// Issue 14, item 12: a log of control characters (each six bytes once JSON-escaped) is budgeted
/// by its encoded size, so the reply fits one MQTT packet instead of costing the agent its
/// connection; the agent keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_control_characters_fit_one_reply() -> anyhow::Result<()> {
    let run = unique("ctl");
    let script = "head -c 3000000 /dev/zero | tr '\\0' '\\001'; echo; trap 'exit 0' TERM; \
                  while true; do sleep 1 & wait $!; done";
    let noisy = TestContainer::run_script(&unique("zt-ctl"), &run, &[], script)?;
    let mut e = env("ctl").await?;
    let a = e.agent.name.clone();
    let mut got = None;
    for _ in 0..40 {
        let reply = e
            .client
            .request(
                &a,
                "container.logs",
                json!({"container": noisy.name, "tail": 10000}),
                Duration::from_secs(20),
            )
            .await?;
        let l: Logs = reply.into_result().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let raw: usize = l.lines.iter().map(|l| l.text.len()).sum();
        if raw > 100_000 {
            got = Some(l);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let l = got.context("the control characters never showed in the logs")?;
    let encoded = serde_json::to_vec(&l)?.len();
    assert!(l.truncated, "3 MB escaped do not fit: older lines dropped");
    assert!(
        encoded <= zedops_proto::MAX_REPLY_BYTES,
        "reply of {encoded} bytes exceeds {}",
        zedops_proto::MAX_REPLY_BYTES
    );
    let _: zedops_proto::ops::Pong = e.client.call(&a, "ping", json!({})).await?;
    Ok(())
}

/// Issue 14, item 15: the duplicate cache is keyed by what was asked too — a correlation reused
/// for a different request runs that request instead of answering with the first one's reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_correlation_for_another_request_is_executed() -> anyhow::Result<()> {
    let run = unique("corr");
    let web = TestContainer::run(&unique("zt-corr"), &run, &[])?;
    let mut e = env("corr").await?;
    let a = e.agent.name.clone();
    let corr = Bytes::from_static(b"reused-correlation");
    let props = || PublishProperties {
        message_expiry_interval: Some(30),
        ..Default::default()
    };
    let limit = Duration::from_secs(10);
    let ping = e
        .client
        .request_raw(&a, "ping", b"{}".to_vec(), corr.clone(), props(), limit)
        .await?;
    let pong: Pong =
        zedops_proto::Reply::decode(&ping.payload).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(pong.agent, a);
    let args = serde_json::to_vec(&json!({"container": web.name}))?;
    let inspect = e
        .client
        .request_raw(&a, "container.inspect", args, corr, props(), limit)
        .await?;
    let detail: ContainerDetail =
        zedops_proto::Reply::decode(&inspect.payload).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(
        detail.container.name, web.name,
        "answered with the reply of another request"
    );
    Ok(())
}

/// Issue 15's second hidden bug: a start or stop of a container already in that state (Docker
/// answers 304, which bollard 0.21 returns as `Ok`) says `changed: false` even when the state the
/// reference was resolved with is stale — another client changed it in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_stop_of_a_stale_reference_report_no_change() -> anyhow::Result<()> {
    use zedops_agent::docker::{driver, DockerTarget, Resolved};
    use zedops_proto::ContainerState;
    init_logs();
    let run = unique("stale");
    let web = TestContainer::run(&unique("zt-stale"), &run, &[])?;
    let (drv, control) = driver("stale", DockerTarget::default());
    control.connect().await?;
    let stale = |state| Resolved {
        id: web.id.clone(),
        name: web.name.clone(),
        state,
    };
    // Running, though resolved as exited: starting it changes nothing.
    let changed = drv.start(&stale(ContainerState::Exited)).await?;
    ensure!(!changed, "start of a running container reported a change");
    ensure!(
        drv.stop(&stale(ContainerState::Running), 1).await?,
        "a real stop"
    );
    // Exited, though resolved as running: stopping it changes nothing.
    let changed = drv.stop(&stale(ContainerState::Running), 1).await?;
    ensure!(!changed, "stop of an exited container reported a change");
    ensure!(
        drv.start(&stale(ContainerState::Exited)).await?,
        "a real start"
    );
    Ok(())
}
