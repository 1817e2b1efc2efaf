//! One token cannot starve the others (issue 14, item 11), on a real `zedops serve` with its
//! default security and an enrolled, signing agent: requests to agents and event streams are
//! bounded per token, and what is over a bound answers `429 busy` at once.

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use zedops_tests::procs::{spawn_enrolled_agent, Proc, Serve, TempDir};
use zedops_tests::{eventually, init_logs, unique};

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn of(serve: &Serve) -> Self {
        Self {
            base: serve.http.clone(),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "POST {path}: {}", r.status());
        Ok(r.json().await?)
    }

    /// A new API token with `role`.
    async fn token(&self, admin: &str, role: &str) -> anyhow::Result<String> {
        let body = json!({"name": unique(role), "role": role});
        let v = self.post(admin, "/api/v1/tokens", body).await?;
        Ok(v["token"].as_str().context("token")?.to_owned())
    }

    /// `GET path` as `token`: status and `code` of the error body, if any.
    async fn get(&self, token: &str, path: &str) -> anyhow::Result<(u16, Option<String>)> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .timeout(Duration::from_secs(40))
            .send()
            .await?;
        let s = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        Ok((s, v["code"].as_str().map(str::to_owned)))
    }

    /// Opens `/api/v1/events` as `token`: the live response, or the refusal's status and body.
    async fn stream(&self, token: &str) -> anyhow::Result<Result<reqwest::Response, (u16, Value)>> {
        let r = self
            .http
            .get(format!("{}/api/v1/events", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        if r.status() == 200 {
            return Ok(Ok(r));
        }
        let s = r.status().as_u16();
        Ok(Err((s, r.json().await.unwrap_or(Value::Null))))
    }
}

/// An enrolled agent process, signing what it publishes.
async fn enrolled_agent(serve: &Serve, api: &Api) -> anyhow::Result<(String, Proc, TempDir)> {
    let name = unique("fair");
    let v = api
        .post(&serve.admin_token, "/api/v1/agents", json!({"name": name}))
        .await?;
    let token = v["token"].as_str().context("enrollment token")?.to_owned();
    let state = TempDir::new("fair-agent")?;
    let proc = spawn_enrolled_agent(serve, &name, &token, &state.path)?;
    let ping = format!("/api/v1/agents/{name}/ping");
    eventually(
        "the enrolled agent answers",
        Duration::from_secs(20),
        || {
            let ping = ping.clone();
            async move { (api.get(&serve.admin_token, &ping).await.ok()?.0 == 200).then_some(()) }
        },
    )
    .await?;
    Ok((name, proc, state))
}

/// A viewer holding all of its request slots (requests to an agent that cannot answer: it is
/// stopped with SIGSTOP, still connected) gets `busy` for one more, while an operator's request
/// is still admitted; once the agent answers, the slots come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_cannot_hold_every_request_slot() -> anyhow::Result<()> {
    init_logs();
    let serve = Serve::start(&["--max-requests-per-token", "3"], "warn")?;
    let api = Api::of(&serve);
    let (name, agent, _state) = enrolled_agent(&serve, &api).await?;
    let viewer = api.token(&serve.admin_token, "viewer").await?;
    let operator = api.token(&serve.admin_token, "operator").await?;
    let slow = format!("/api/v1/agents/{name}/ping?timeout_s=30");
    let quick = format!("/api/v1/agents/{name}/ping?timeout_s=1");

    agent.signal("STOP")?;
    let held: Vec<_> = (0..3)
        .map(|_| {
            let (http, base, viewer, slow) = (
                api.http.clone(),
                api.base.clone(),
                viewer.clone(),
                slow.clone(),
            );
            tokio::spawn(async move {
                let api = Api { base, http };
                api.get(&viewer, &slow).await
            })
        })
        .collect();
    eventually(
        "three requests in flight",
        Duration::from_secs(10),
        || async {
            let text = api
                .http
                .get(format!("{}/metrics", api.base))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.lines()
                .any(|l| l == "zedops_requests_in_flight 3")
                .then_some(())
        },
    )
    .await?;
    let (s, code) = api.get(&viewer, &quick).await?;
    assert_eq!(
        (s, code.as_deref()),
        (429, Some("busy")),
        "a fourth request from the viewer"
    );
    let (s, code) = api.get(&operator, &quick).await?;
    assert_eq!(
        (s, code.as_deref()),
        (504, Some("timeout")),
        "the operator's request is admitted (and times out: the agent is stopped)"
    );

    agent.signal("CONT")?;
    for h in held {
        let (s, code) = h.await??;
        assert_eq!(
            s, 200,
            "a held request answered once the agent runs: {code:?}"
        );
    }
    let (s, _) = api.get(&viewer, &quick).await?;
    assert_eq!(s, 200, "the viewer's slots came back");
    Ok(())
}

/// Event streams are bounded per token and in total; a closed stream gives its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_cannot_hold_every_event_stream() -> anyhow::Result<()> {
    init_logs();
    let serve = Serve::start(
        &["--max-streams-per-token", "2", "--max-streams", "3"],
        "warn",
    )?;
    let api = Api::of(&serve);
    let a = api.token(&serve.admin_token, "viewer").await?;
    let b = api.token(&serve.admin_token, "viewer").await?;
    let mut a_streams = Vec::new();
    for _ in 0..2 {
        a_streams.push(
            api.stream(&a)
                .await?
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        );
    }
    let (s, v) = api.stream(&a).await?.err().context("a third stream")?;
    assert_eq!((s, v["code"].as_str()), (429, Some("busy")), "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("per token"),
        "{v}"
    );
    let _b_stream = api
        .stream(&b)
        .await?
        .map_err(|e| anyhow::anyhow!("token b's stream: {e:?}"))?;
    let (s, v) = api.stream(&b).await?.err().context("a fourth stream")?;
    assert_eq!((s, v["code"].as_str()), (429, Some("busy")), "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("this server"),
        "{v}"
    );

    drop(a_streams.pop());
    eventually(
        "a closed stream's slot given back",
        Duration::from_secs(40),
        || async { api.stream(&a).await.ok()?.ok().map(drop) },
    )
    .await?;
    Ok(())
}
