//! API tokens and roles, and the audit log (`docs/security.md`).

use std::time::Duration;

use serde_json::json;
use zedops_tests::api::{Broker, BrokerKind, TestApi};
use zedops_tests::procs::InProcAgent;
use zedops_tests::{eventually, init_logs, unique, Docker, TestContainer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles() -> anyhow::Result<()> {
    init_logs();
    let run = unique("roles");
    let web = TestContainer::run(&unique("zt-roles"), &run, &[])?;
    let broker = Broker::start(BrokerKind::Embedded).await?;
    let agent = InProcAgent::start(&unique("roles"), broker.addr, |_| {})?;
    let a = agent.name.clone();
    let (api, t) = TestApi::start_with_tokens(&broker.url()).await?;
    eventually("agent online", Duration::from_secs(10), || async {
        let (s, v) = api
            .call("GET", &format!("/api/v1/agents/{a}"), Some(&t.viewer))
            .await
            .ok()?;
        (s == 200 && v["online"] == true).then_some(())
    })
    .await?;
    let stop = format!("/api/v1/agents/{a}/containers/{}/stop?grace_s=5", web.name);
    let start = format!("/api/v1/agents/{a}/containers/{}/start", web.name);

    // No token, or a wrong one: 401 with a sentence saying what to do.
    let (s, b) = api.call("GET", "/api/v1/agents", None).await?;
    assert_eq!((s, b["code"].clone()), (401, json!("unauthorized")), "{b}");
    assert!(
        b["message"].as_str().unwrap_or_default().contains("token"),
        "{b}"
    );
    let (s, b) = api
        .call("GET", "/api/v1/agents", Some("zdt_admin_0000"))
        .await?;
    assert_eq!((s, b["code"].clone()), (401, json!("unauthorized")), "{b}");
    let (s, _) = api.call("GET", "/api/v1/whoami", Some("nonsense")).await?;
    assert_eq!(s, 401);

    // Viewer reads but cannot act.
    let (s, b) = api.call("GET", "/api/v1/whoami", Some(&t.viewer)).await?;
    assert_eq!(
        (s, b["role"].clone(), b["auth_required"].clone()),
        (200, json!("viewer"), json!(true))
    );
    let (s, _) = api
        .call(
            "GET",
            &format!("/api/v1/agents/{a}/containers"),
            Some(&t.viewer),
        )
        .await?;
    assert_eq!(s, 200);
    let (s, b) = api.call("POST", &stop, Some(&t.viewer)).await?;
    assert_eq!((s, b["code"].clone()), (403, json!("forbidden")), "{b}");
    assert_eq!(
        Docker::state(&web.name)?,
        "running",
        "the viewer did not stop it"
    );

    // Logs often hold secrets: an operator's right, not a viewer's (issue 14, item 13).
    let logs = format!("/api/v1/agents/{a}/containers/{}/logs?tail=5", web.name);
    let (s, b) = api.call("GET", &logs, Some(&t.viewer)).await?;
    assert_eq!((s, b["code"].clone()), (403, json!("forbidden")), "{b}");
    let (s, b) = api.call("GET", &logs, Some(&t.operator)).await?;
    assert_eq!(s, 200, "{b}");

    // Operator acts.
    let (s, b) = api.call("POST", &stop, Some(&t.operator)).await?;
    assert_eq!(s, 200, "{b}");
    assert_eq!(Docker::state(&web.name)?, "exited");
    let (s, _) = api.call("POST", &start, Some(&t.operator)).await?;
    assert_eq!(s, 200);

    // Admin-only endpoints refuse operators.
    for (m, p) in [
        ("GET", "/api/v1/tokens"),
        ("GET", "/api/v1/audit"),
        ("DELETE", "/api/v1/tokens/watcher"),
    ] {
        let (s, b) = api.call(m, p, Some(&t.operator)).await?;
        assert_eq!(
            (s, b["code"].clone()),
            (403, json!("forbidden")),
            "{m} {p}: {b}"
        );
    }

    // The admin creates and revokes tokens; a revoked token is refused at once.
    let r = api
        .http
        .post(api.url("/api/v1/tokens"))
        .bearer_auth(&t.admin)
        .json(&json!({"name": "temp", "role": "viewer"}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    let created: serde_json::Value = r.json().await?;
    let temp = created["token"].as_str().unwrap_or_default().to_owned();
    let (s, _) = api.call("GET", "/api/v1/agents", Some(&temp)).await?;
    assert_eq!(s, 200);
    let (s, list) = api.call("GET", "/api/v1/tokens", Some(&t.admin)).await?;
    assert_eq!(s, 200);
    assert!(
        list.to_string().contains("temp") && !list.to_string().contains(&temp),
        "secrets are never listed: {list}"
    );
    let (s, _) = api
        .call("DELETE", "/api/v1/tokens/temp", Some(&t.admin))
        .await?;
    assert_eq!(s, 200);
    let (s, b) = api.call("GET", "/api/v1/agents", Some(&temp)).await?;
    assert_eq!((s, b["code"].clone()), (401, json!("unauthorized")));
    // Error bodies never echo a token.
    assert!(!b.to_string().contains(&temp));

    // The audit log has who did what.
    let (s, log) = api
        .call("GET", "/api/v1/audit?limit=50", Some(&t.admin))
        .await?;
    assert_eq!(s, 200);
    let rows = log.as_array().cloned().unwrap_or_default();
    assert!(
        rows.iter().any(|r| r["who"] == "ops"
            && r["action"] == "container.stop"
            && r["outcome"] == "ok"
            && r["container"] == web.name.as_str()),
        "{log}"
    );
    assert!(rows.iter().any(|r| r["action"] == "token.revoke"), "{log}");
    Ok(())
}
