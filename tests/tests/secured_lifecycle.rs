//! Agent lifecycle on the secured default: an agent enrolled through the API (`zedops agent
//! --enroll`), signing everything it publishes, seen through the API.

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use zedops_tests::procs::{agent_command, Proc, Serve, TempDir};
use zedops_tests::{eventually, init_logs, unique};

/// Issue 14, item 6: SIGTERM'd, an enrolled agent publishes a *signed* "offline", so the API
/// shows it offline at once and answers its requests `503` instead of waiting out a deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_agent_stopped_with_sigterm_is_offline_at_once() -> anyhow::Result<()> {
    init_logs();
    let serve = Serve::start(&[], "warn")?;
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut rb = http
            .request(method, format!("{}{path}", serve.http))
            .bearer_auth(&serve.admin_token)
            .timeout(Duration::from_secs(15));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        async move {
            let r = rb.send().await?;
            let s = r.status().as_u16();
            anyhow::Ok((s, r.json::<Value>().await.unwrap_or(Value::Null)))
        }
    };
    let name = unique("sigterm");
    let (s, v) = call(
        reqwest::Method::POST,
        "/api/v1/agents".into(),
        Some(json!({"name": name})),
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    let token = v["token"].as_str().context("enrollment token")?.to_owned();
    let state = TempDir::new("sigterm-agent")?;
    let state_dir = state.path.to_string_lossy().into_owned();
    let extra = [
        "--enroll",
        &token,
        "--server",
        &serve.http,
        "--state-dir",
        &state_dir,
    ];
    let child = agent_command(&name, serve.mqtt, &extra, "ZEDOPS_TEST_AGENT_LOG")?
        .spawn()
        .context("starting zedops agent")?;
    let mut agent = Proc {
        child,
        what: format!("agent {name}"),
    };
    let agent_path = format!("/api/v1/agents/{name}");
    eventually(
        "the enrolled agent online",
        Duration::from_secs(20),
        || async {
            let (s, v) = call(reqwest::Method::GET, agent_path.clone(), None)
                .await
                .ok()?;
            (s == 200 && v["online"] == true).then_some(())
        },
    )
    .await?;
    let (s, _) = call(reqwest::Method::GET, format!("{agent_path}/ping"), None).await?;
    assert_eq!(s, 200);

    agent.signal("TERM")?;
    agent.wait_exit(Duration::from_secs(10)).await?;
    let t0 = std::time::Instant::now();
    eventually(
        "the agent offline after SIGTERM",
        Duration::from_secs(3),
        || async {
            let (s, v) = call(reqwest::Method::GET, agent_path.clone(), None)
                .await
                .ok()?;
            (s == 200 && v["online"] == false).then_some(())
        },
    )
    .await?;
    let (s, v) = call(reqwest::Method::GET, format!("{agent_path}/ping"), None).await?;
    assert_eq!((s, v["code"].as_str()), (503, Some("agent_offline")), "{v}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "ping took {:?}",
        t0.elapsed()
    );
    Ok(())
}

/// Issue 14, item 4: a client that sees a real `container.stop` go by races it with an unsigned
/// request carrying the same response topic and correlation data. The agent refuses that one with
/// a signed `unauthorized` — which must not pass for the outcome of the real request: the reply's
/// signature covers the request's, and the API takes only the reply to what it signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raced_forged_request_cannot_forge_the_outcome() -> anyhow::Result<()> {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    use zedops_tests::{Docker, TestClient, TestContainer};
    init_logs();
    let run = unique("race");
    let web = TestContainer::run(&unique("zt-race"), &run, &[])?;
    let agent = unique("race");
    let serve = Serve::start(&[&format!("--local-agent={agent}")], "warn")?;
    let http = reqwest::Client::new();
    let v: Value = http
        .post(format!("{}/api/v1/mqtt-users", serve.http))
        .bearer_auth(&serve.admin_token)
        .json(&json!({"name": "tap"}))
        .send()
        .await?
        .json()
        .await?;
    let pw = v["password"].as_str().context("password")?.to_owned();
    let mut tap = TestClient::connect_with(
        serve.mqtt,
        "tap",
        Some(("tap", &pw)),
        Duration::from_secs(5),
    )
    .await?;
    tap.subscribe(&zedops_proto::topics::requests_of(&agent))
        .await?;
    eventually("the agent online", Duration::from_secs(20), || async {
        let r = http
            .get(format!(
                "{}/api/v1/agents/{agent}/containers/{}",
                serve.http, web.name
            ))
            .bearer_auth(&serve.admin_token)
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await?;
    for (round, action, state) in [
        (0, "stop", "exited"),
        (1, "start", "running"),
        (2, "stop", "exited"),
    ] {
        let url = format!(
            "{}/api/v1/agents/{agent}/containers/{}/{action}?grace_s=1",
            serve.http, web.name
        );
        let call = http.post(url).bearer_auth(&serve.admin_token).send();
        let call = tokio::spawn(call);
        let op = format!("container.{action}");
        tap.wait_for("the real request", Duration::from_secs(10), |m| {
            m.topic.ends_with(&op)
        })
        .await?;
        let real = tap.last_raw().context("the captured request")?;
        let real_props = real.properties.clone().unwrap_or_default();
        let forged = PublishProperties {
            response_topic: real_props.response_topic.clone(),
            correlation_data: real_props.correlation_data.clone(),
            ..Default::default()
        };
        tap.client
            .publish_with_properties(
                zedops_proto::topics::request(&agent, "ping"),
                rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                false,
                b"{}".to_vec(),
                forged,
            )
            .await?;
        let r = call.await??;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "round {round}: the operator was told {body}");
        assert_eq!(Docker::state(&web.name)?, state, "round {round}");
    }
    Ok(())
}
