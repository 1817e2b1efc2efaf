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
