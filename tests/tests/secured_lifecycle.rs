//! Agent lifecycle on the secured default: an agent enrolled through the API (`zedops agent
//! --enroll`), signing everything it publishes, seen through the API.

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use zedops_tests::procs::{agent_command, spawn_enrolled_agent, Proc, Serve, TempDir};
use zedops_tests::{eventually, init_logs, unique};

/// The admin's side of `zedops serve` that these tests use.
struct Admin<'a> {
    serve: &'a Serve,
    http: reqwest::Client,
}

impl<'a> Admin<'a> {
    fn of(serve: &'a Serve) -> Self {
        Self {
            serve,
            http: reqwest::Client::new(),
        }
    }

    /// `POST /api/v1/agents`: registers `name`, returns its enrollment token.
    async fn register(&self, name: &str) -> anyhow::Result<String> {
        let v: Value = self
            .http
            .post(format!("{}/api/v1/agents", self.serve.http))
            .bearer_auth(&self.serve.admin_token)
            .json(&json!({"name": name}))
            .send()
            .await?
            .json()
            .await?;
        Ok(v["token"].as_str().context("enrollment token")?.to_owned())
    }

    /// Whether the API shows `name` online (`None`: no answer).
    async fn online(&self, name: &str) -> Option<bool> {
        let v: Value = self
            .http
            .get(format!("{}/api/v1/agents/{name}", self.serve.http))
            .bearer_auth(&self.serve.admin_token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["online"].as_bool()
    }

    /// Waits until the API shows `name` online (`want`) or offline, up to `limit`.
    async fn wait_online(
        &self,
        name: &str,
        want: bool,
        what: &str,
        limit: Duration,
    ) -> anyhow::Result<()> {
        eventually(what, limit, || async {
            (self.online(name).await? == want).then_some(())
        })
        .await
    }
}

/// Issue 14, item 6: SIGTERM'd, an enrolled agent publishes a *signed* "offline", so the API
/// shows it offline at once and answers its requests `503` instead of waiting out a deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_agent_stopped_with_sigterm_is_offline_at_once() -> anyhow::Result<()> {
    init_logs();
    let serve = Serve::start(&[], "warn")?;
    let admin = Admin::of(&serve);
    let call = |method: reqwest::Method, path: String| {
        let rb = admin
            .http
            .request(method, format!("{}{path}", serve.http))
            .bearer_auth(&serve.admin_token)
            .timeout(Duration::from_secs(15));
        async move {
            let r = rb.send().await?;
            let s = r.status().as_u16();
            anyhow::Ok((s, r.json::<Value>().await.unwrap_or(Value::Null)))
        }
    };
    let name = unique("sigterm");
    let token = admin.register(&name).await?;
    let state = TempDir::new("sigterm-agent")?;
    let mut agent = spawn_enrolled_agent(&serve, &name, &token, &state.path)?;
    let agent_path = format!("/api/v1/agents/{name}");
    let online_within = Duration::from_secs(20);
    admin
        .wait_online(&name, true, "the enrolled agent online", online_within)
        .await?;
    let (s, _) = call(reqwest::Method::GET, format!("{agent_path}/ping")).await?;
    assert_eq!(s, 200);

    agent.signal("TERM")?;
    agent.wait_exit(Duration::from_secs(10)).await?;
    let t0 = std::time::Instant::now();
    let offline_within = Duration::from_secs(3);
    admin
        .wait_online(
            &name,
            false,
            "the agent offline after SIGTERM",
            offline_within,
        )
        .await?;
    let (s, v) = call(reqwest::Method::GET, format!("{agent_path}/ping")).await?;
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

/// The next status on `topic` in `state`, as published (signature properties included).
async fn capture(
    spy: &mut zedops_tests::TestClient,
    topic: &str,
    state: &str,
) -> anyhow::Result<rumqttc::v5::mqttbytes::v5::Publish> {
    spy.wait_for(
        &format!("a signed {state} status"),
        Duration::from_secs(20),
        |m| m.topic == topic && m.json()["state"] == state,
    )
    .await?;
    spy.last_raw().context("captured")
}

/// Publishes a captured message again, retained, exactly as it was.
async fn replay(
    spy: &zedops_tests::TestClient,
    p: rumqttc::v5::mqttbytes::v5::Publish,
) -> anyhow::Result<()> {
    let props = p.properties.clone().unwrap_or_default();
    let topic = String::from_utf8_lossy(&p.topic).into_owned();
    let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
    spy.client
        .publish_with_properties(topic, qos, true, p.payload, props)
        .await?;
    Ok(())
}

/// Issue 14, item 5: on an external broker (Mosquitto, anonymous: any client may publish
/// anywhere), signed state captured earlier and published again is not news. A replayed Last Will
/// of an earlier agent process, or one of the running process that fired before it reconnected,
/// does not take the agent offline, and a replayed old `online` does
/// not hide that it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_signed_state_is_not_news() -> anyhow::Result<()> {
    use zedops_tests::procs::Mosquitto;
    use zedops_tests::TestClient;
    init_logs();
    let mosquitto = Mosquitto::start().await?;
    let broker = format!("mqtt://{}", mosquitto.addr);
    let serve = Serve::start(&["--broker", &broker], "warn")?;
    let admin = Admin::of(&serve);
    let name = unique("replay");
    let token = admin.register(&name).await?;
    let state = TempDir::new("replay-agent")?;
    let dir = state.path.to_string_lossy().into_owned();
    let start_agent = |extra: Vec<String>| -> anyhow::Result<Proc> {
        let mut args = vec!["--state-dir".to_owned(), dir.clone()];
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = agent_command(&name, mosquitto.addr, &args, "ZEDOPS_TEST_AGENT_LOG")?
            .spawn()
            .context("starting zedops agent")?;
        Ok(Proc {
            child,
            what: format!("agent {name}"),
        })
    };
    let wait_online = |want: bool, what: &'static str| {
        admin.wait_online(&name, want, what, Duration::from_secs(20))
    };

    let mut spy = TestClient::connect(mosquitto.addr, &unique("spy")).await?;
    let status_topic = zedops_proto::topics::status(&name);
    spy.subscribe(&status_topic).await?;
    // Process 1: enrolled, online; its status captured. SIGKILL: its Last Will, captured.
    let enroll = vec![
        "--enroll".to_owned(),
        token,
        "--server".to_owned(),
        serve.http.clone(),
    ];
    let mut p1 = start_agent(enroll)?;
    let old_online = capture(&mut spy, &status_topic, "online").await?;
    wait_online(true, "process 1 online").await?;
    p1.signal("KILL")?;
    p1.wait_exit(Duration::from_secs(5)).await?;
    let old_will = capture(&mut spy, &status_topic, "offline").await?;
    wait_online(false, "process 1's Last Will").await?;

    // Process 2 online: the old will replayed changes nothing.
    let mut p2 = start_agent(Vec::new())?;
    wait_online(true, "process 2 online").await?;
    replay(&spy, old_will).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        admin.online(&name).await,
        Some(true),
        "a replayed Last Will took the agent offline"
    );

    // Process 2's connection taken over: its Last Will fires (captured) and the agent reconnects
    // with a new one. The fired will replayed changes nothing either: each will is taken once.
    let kicker = TestClient::connect(mosquitto.addr, &format!("zedops-agent-{name}")).await?;
    let fired = capture(&mut spy, &status_topic, "offline").await?;
    drop(kicker);
    wait_online(true, "process 2 back online").await?;
    replay(&spy, fired).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        admin.online(&name).await,
        Some(true),
        "a replayed Last Will of the running process took the agent offline"
    );

    // Process 2 stops: the old online replayed does not bring it back.
    p2.signal("TERM")?;
    p2.wait_exit(Duration::from_secs(10)).await?;
    wait_online(false, "process 2 offline").await?;
    replay(&spy, old_online).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        admin.online(&name).await,
        Some(false),
        "a replayed 'online' hid the outage"
    );
    Ok(())
}

/// A man in the middle of `http://`: forwards every request to `upstream` and, in the answer to
/// `POST /api/v1/enroll`, replaces the server's public key with one of its own.
async fn key_swapping_proxy(upstream: String) -> anyhow::Result<std::net::SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let evil = zedops_proto::sign::KeyPair::from_seed([66; 32]).public_hex();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (upstream, evil) = (upstream.clone(), evil.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break (head.to_owned(), body.to_owned());
                        }
                    }
                };
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let r = reqwest::Client::new()
                    .post(format!("{upstream}{path}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let Ok(r) = r else { return };
                let status = r.status().as_u16();
                let mut v: Value = r.json().await.unwrap_or(Value::Null);
                if v.get("server_public_key").is_some() {
                    v["server_public_key"] = Value::String(evil);
                }
                let body = v.to_string();
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}

/// Issue 14, item 7: the enrollment token names the server key's fingerprint; an agent enrolling
/// through a man in the middle who swaps the key refuses the answer, saves nothing and says why;
/// enrolling directly works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_refuses_a_swapped_server_key() -> anyhow::Result<()> {
    init_logs();
    let serve = Serve::start(&[], "warn")?;
    let admin = Admin::of(&serve);
    let proxy = key_swapping_proxy(serve.http.clone()).await?;
    let name = unique("mitm");
    let token = admin.register(&name).await?;
    let state = TempDir::new("mitm-agent")?;
    let dir = state.path.to_string_lossy().into_owned();
    let server = format!("http://{proxy}");
    let out = agent_command(
        &name,
        serve.mqtt,
        &["--enroll", &token, "--server", &server, "--state-dir", &dir],
        "ZEDOPS_TEST_AGENT_LOG",
    )?
    .stderr(std::process::Stdio::piped())
    .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "exit code; stderr: {stderr}");
    assert!(stderr.contains("intercepting"), "{stderr}");
    assert!(
        !state.path.join("credentials.json").exists(),
        "credentials saved anyway"
    );

    // Directly, with a new token: enrolled and online.
    let name = unique("direct");
    let token = admin.register(&name).await?;
    let child = agent_command(
        &name,
        serve.mqtt,
        &[
            "--enroll",
            &token,
            "--server",
            &serve.http,
            "--state-dir",
            &dir,
        ],
        "ZEDOPS_TEST_AGENT_LOG",
    )?
    .spawn()?;
    let _agent = Proc {
        child,
        what: format!("agent {name}"),
    };
    let online_within = Duration::from_secs(20);
    admin
        .wait_online(
            &name,
            true,
            "the directly enrolled agent online",
            online_within,
        )
        .await?;
    Ok(())
}
