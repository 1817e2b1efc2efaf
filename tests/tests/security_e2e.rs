//! Security end to end with a real `zedops serve` (embedded broker with authentication, a local
//! agent enrolled by itself), real Docker, and MQTT clients acting as attackers.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use serde_json::{json, Value};
use zedops_proto::sign::KeyPair;
use zedops_proto::topics;
use zedops_tests::procs::{spawn_agent_process, Serve};
use zedops_tests::{eventually, init_logs, unique, Docker, TestClient, TestContainer};

struct Http {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Http {
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut rb = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes())?,
                format!("{}{path}", self.base),
            )
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await?;
        let s = r.status().as_u16();
        Ok((s, r.json().await.unwrap_or(Value::Null)))
    }
}

fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    for (i, b) in s.iter_mut().enumerate() {
        *b = rand::random::<u8>() ^ i as u8;
    }
    s
}

async fn enroll(h: &Http, name: &str) -> anyhow::Result<(String, String, KeyPair)> {
    let (s, v) = h
        .call("POST", "/api/v1/agents", Some(json!({"name": name})))
        .await?;
    anyhow::ensure!(s == 200, "register {name}: {v}");
    let token = v["token"].as_str().context("token")?.to_owned();
    let key = KeyPair::from_seed(seed());
    let (s, v) = h
        .call(
            "POST",
            "/api/v1/enroll",
            Some(json!({"name": name, "token": token, "public_key": key.public_hex()})),
        )
        .await?;
    anyhow::ensure!(s == 200, "enroll {name}: {v}");
    Ok((
        v["mqtt_password"].as_str().context("password")?.to_owned(),
        token,
        key,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_auth_signatures_enrollment_and_secrets() -> anyhow::Result<()> {
    init_logs();
    let run = unique("sec");
    let web = TestContainer::run(&unique("zt-sec"), &run, &[])?;
    let maestro = unique("maestro");
    // Trace logging everywhere: secrets must not show up even there.
    let serve = Serve::start(&[&format!("--local-agent={maestro}")], "trace")?;
    let h = Http {
        base: serve.http.clone(),
        token: serve.admin_token.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
    };
    eventually(
        "maestro online (signed status accepted)",
        Duration::from_secs(15),
        || async {
            let (s, v) = h
                .call("GET", &format!("/api/v1/agents/{maestro}"), None)
                .await
                .ok()?;
            (s == 200 && v["online"] == true).then_some(())
        },
    )
    .await?;
    // Signed commands work end to end.
    let (s, v) = h
        .call(
            "POST",
            &format!(
                "/api/v1/agents/{maestro}/containers/{}/restart?grace_s=5",
                web.name
            ),
            None,
        )
        .await?;
    assert_eq!(s, 200, "{v}");

    // 2. No credentials, wrong credentials: refused by the embedded broker.
    let short = Duration::from_secs(2);
    assert!(TestClient::connect_with(serve.mqtt, "anon", None, short)
        .await
        .is_err());
    assert!(
        TestClient::connect_with(serve.mqtt, "guess", Some(("admin", "admin")), short)
            .await
            .is_err()
    );
    // A valid agent may only use its own client id.
    let other = unique("other");
    let (other_pw, other_token, other_key) = enroll(&h, &other).await?;
    let hijack = format!("zedops-agent-{maestro}");
    assert!(
        TestClient::connect_with(serve.mqtt, &hijack, Some((&other, &other_pw)), short)
            .await
            .is_err(),
        "another agent's client id is refused"
    );
    let mut evil_agent = TestClient::connect_with(
        serve.mqtt,
        &format!("zedops-agent-{other}"),
        Some((&other, &other_pw)),
        short,
    )
    .await?;

    // 3. That valid agent may not even send requests to maestro: the broker's ACLs refuse its
    //    publish (and its subscription to a reply topic), so nothing reaches maestro.
    let before = web.started_at()?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rt = evil_agent.reply_topic();
    evil_agent.subscribe_refused(&rt).await?;
    let refused = evil_agent
        .request(
            &maestro,
            "container.restart",
            json!({"container": web.name}),
            Duration::from_secs(2),
        )
        .await;
    assert!(
        refused.is_err(),
        "an agent's request to another agent was answered: {refused:?}"
    );
    drop(evil_agent);
    //    An integration user may send requests; unsigned and wrongly signed ones are refused
    //    by the agent as unauthorized.
    let (s, v) = h
        .call(
            "POST",
            "/api/v1/mqtt-users",
            Some(json!({"name": "intruder"})),
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    let intruder_pw = v["password"].as_str().context("pw")?.to_owned();
    let mut evil = TestClient::connect_with(
        serve.mqtt,
        "intruder",
        Some(("intruder", &intruder_pw)),
        short,
    )
    .await?;
    let rt = evil.reply_topic();
    evil.subscribe(&rt).await?;
    let payload = serde_json::to_vec(&json!({"container": web.name}))?;
    let deadline = (chrono::Utc::now().timestamp_millis() + 30_000) as u64;
    let unsigned = PublishProperties {
        user_properties: vec![("zedops-deadline-ms".into(), deadline.to_string())],
        ..Default::default()
    };
    let req_topic = topics::request(&maestro, "container.restart");
    let forged_sig = other_key.sign(&zedops_proto::sign::Signed {
        topic: &req_topic,
        response_topic: Some(&rt),
        correlation: Some(b"forged"),
        deadline_ms: Some(deadline),
        ts_ms: deadline - 30_000,
        payload: &payload,
        request_sig: None,
    });
    let wrongly_signed = PublishProperties {
        user_properties: vec![
            ("zedops-deadline-ms".into(), deadline.to_string()),
            ("zedops-sig".into(), forged_sig),
            ("zedops-ts".into(), (deadline - 30_000).to_string()),
        ],
        ..Default::default()
    };
    for (corr, props) in [("unsigned", unsigned), ("forged", wrongly_signed)] {
        let m = evil
            .request_raw(
                &maestro,
                "container.restart",
                payload.clone(),
                Bytes::from(corr),
                props,
                Duration::from_secs(10),
            )
            .await?;
        let r: Value = serde_json::from_slice(&m.payload)?;
        assert_eq!(r["error"]["code"], "unauthorized", "{corr}: {r}");
    }
    assert_eq!(
        web.started_at()?,
        before,
        "not restarted by unsigned or forged commands"
    );

    // A captured valid command replayed later is refused.
    let (spy_pw, spy) = {
        let (s, v) = h
            .call("POST", "/api/v1/mqtt-users", Some(json!({"name": "spy"})))
            .await?;
        assert_eq!(s, 200, "{v}");
        (
            v["password"].as_str().context("pw")?.to_owned(),
            "spy".to_owned(),
        )
    };
    let mut tap = TestClient::connect_with(serve.mqtt, "tap", Some((&spy, &spy_pw)), short).await?;
    tap.subscribe(&topics::requests_of(&maestro)).await?;
    let (s, _) = h
        .call(
            "POST",
            &format!(
                "/api/v1/agents/{maestro}/containers/{}/restart?grace_s=5&timeout_s=2",
                web.name
            ),
            None,
        )
        .await?;
    assert_eq!(s, 200);
    let captured = tap
        .wait_for(
            "the signed restart on the wire",
            Duration::from_secs(5),
            |m| m.topic.ends_with("container.restart"),
        )
        .await?;
    // rumqttc keeps the properties of what it received; fetch them again by re-subscribing is not
    // possible for non-retained messages, so the tap client records the raw publish.
    let raw = tap.last_raw().context("raw publish")?;
    let after_legit = web.started_at()?;
    tokio::time::sleep(Duration::from_millis(2600)).await;
    tap.client
        .publish_with_properties(
            captured.topic.clone(),
            QoS::AtMostOnce,
            false,
            raw.payload.clone(),
            raw.properties.clone().unwrap_or_default(),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        web.started_at()?,
        after_legit,
        "the replay did not restart it"
    );

    // 4. Forged retained status and snapshot for maestro change nothing the API reports.
    let forged_status = json!({
        "agent": maestro, "state": "offline", "version": "6.6.6", "hostname": "evil",
        "docker": {"state": "unavailable", "version": null, "api_version": null, "error": "pwned"},
        "started_at": "2026-01-01T00:00:00Z", "counts": {"total": 0, "running": 0, "paused": 0, "stopped": 0},
        "updated_at": "2026-01-01T00:00:00Z"
    });
    tap.publish(
        &topics::status(&maestro),
        true,
        serde_json::to_vec(&forged_status)?,
    )
    .await?;
    let forged_snap = json!({"agent": maestro, "seq": 999999, "taken_at": "2030-01-01T00:00:00Z", "containers": []});
    tap.publish(
        &topics::snapshot(&maestro),
        true,
        serde_json::to_vec(&forged_snap)?,
    )
    .await?;
    evil.publish(
        &topics::status(&maestro),
        true,
        serde_json::to_vec(&forged_status)?,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, v) = h
        .call("GET", &format!("/api/v1/agents/{maestro}"), None)
        .await?;
    assert_eq!(v["online"], true, "{v}");
    assert_ne!(v["hostname"], "evil");
    let (_, v) = h
        .call("GET", &format!("/api/v1/agents/{maestro}/containers"), None)
        .await?;
    assert!(
        v["containers"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["name"] == web.name.as_str())),
        "{v}"
    );

    // 5. Enrollment: a used token is useless; an expired one too; a removed agent cannot reconnect.
    let (s, v) = h
        .call("POST", "/api/v1/enroll", Some(json!({"name": other, "token": other_token, "public_key": KeyPair::from_seed(seed()).public_hex()})))
        .await?;
    assert_eq!((s, v["code"].clone()), (401, json!("unauthorized")), "{v}");
    let late = unique("late");
    let (_, v) = h
        .call(
            "POST",
            "/api/v1/agents",
            Some(json!({"name": late, "ttl_s": 1})),
        )
        .await?;
    let late_token = v["token"].as_str().context("token")?.to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, v) = h
        .call("POST", "/api/v1/enroll", Some(json!({"name": late, "token": late_token, "public_key": KeyPair::from_seed(seed()).public_hex()})))
        .await?;
    assert_eq!(s, 401, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{v}"
    );
    drop(evil);
    let (s, _) = h
        .call("DELETE", &format!("/api/v1/agents/{other}"), None)
        .await?;
    assert_eq!(s, 200);
    assert!(
        TestClient::connect_with(
            serve.mqtt,
            &format!("zedops-agent-{other}"),
            Some((&other, &other_pw)),
            short
        )
        .await
        .is_err(),
        "a removed agent cannot reconnect"
    );

    // A real agent process enrolls once with `zedops agent --enroll`, and restarts without it.
    let fresh = unique("fresh");
    let (_, v) = h
        .call("POST", "/api/v1/agents", Some(json!({"name": fresh})))
        .await?;
    let fresh_token = v["token"].as_str().context("token")?.to_owned();
    let state = serve.home.path.join("agent-state");
    let state_s = state.display().to_string();
    let broker = format!("mqtt://{}", serve.mqtt);
    let mut p = spawn_agent_process_enroll(&fresh, &serve.http, &fresh_token, &state_s, &broker)?;
    eventually(
        "fresh online after enrolling",
        Duration::from_secs(15),
        || async {
            let (s, v) = h
                .call("GET", &format!("/api/v1/agents/{fresh}"), None)
                .await
                .ok()?;
            (s == 200 && v["online"] == true).then_some(())
        },
    )
    .await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.join("credentials.json"))?
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    p.signal("TERM")?;
    p.wait_exit(Duration::from_secs(5)).await?;
    let _p2 = spawn_agent_process(&fresh, serve.mqtt, &["--state-dir", &state_s])?;
    eventually(
        "fresh back online without the token",
        Duration::from_secs(15),
        || async {
            let (_, v) = h
                .call("GET", &format!("/api/v1/agents/{fresh}"), None)
                .await
                .ok()?;
            (v["online"] == true).then_some(())
        },
    )
    .await?;

    // 7. Secrets never appear in the logs (trace level), nor in error bodies.
    let logs = serve.logs();
    assert!(logs.len() > 1000, "the server logged at trace level");
    for (what, secret) in [
        ("admin token", serve.admin_token.as_str()),
        ("agent MQTT password", other_pw.as_str()),
        ("enrollment token", other_token.as_str()),
        ("MQTT user password", spy_pw.as_str()),
        ("enrollment token (fresh)", fresh_token.as_str()),
    ] {
        let secret_part = secret.rsplit('_').next().unwrap_or(secret);
        assert!(
            !logs.contains(secret_part),
            "the {what} appears in the server logs"
        );
    }
    let creds = std::fs::read_to_string(state.join("credentials.json"))?;
    let v: Value = serde_json::from_str(&creds)?;
    let fresh_pw = v["mqtt_password"].as_str().unwrap_or("x").to_owned();
    assert!(
        !logs.contains(&fresh_pw),
        "an agent's password appears in the server logs"
    );
    let _ = Docker::state(&web.name)?;
    Ok(())
}

fn spawn_agent_process_enroll(
    name: &str,
    server: &str,
    token: &str,
    state: &str,
    broker: &str,
) -> anyhow::Result<zedops_tests::procs::Proc> {
    let child = std::process::Command::new(zedops_tests::procs::zedops_bin()?)
        .args([
            "agent",
            "--enroll",
            token,
            "--server",
            server,
            "--name",
            name,
            "--state-dir",
            state,
            "--broker",
            broker,
        ])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    Ok(zedops_tests::procs::Proc {
        child,
        what: format!("agent {name}"),
    })
}
