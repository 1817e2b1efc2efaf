//! A `zedops serve` on the secured default — its local agent enrolled and signing, tokens,
//! every broker login checked — and what the tests ask of it over HTTP.

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use crate::procs::Serve;

pub struct Secured {
    pub serve: Serve,
    /// The name of the local agent.
    pub agent: String,
    pub http: reqwest::Client,
}

impl Secured {
    /// A server whose local agent is named after `prefix`, once that agent answers a ping through
    /// the API (a test's first request must not race the agent's first connection).
    pub async fn start(prefix: &str) -> anyhow::Result<Self> {
        crate::init_logs();
        let agent = crate::unique(prefix);
        let serve = Serve::start(&[&format!("--local-agent={agent}")], "warn")?;
        let s = Self {
            serve,
            agent,
            http: reqwest::Client::new(),
        };
        crate::eventually(
            "the local agent answers",
            Duration::from_secs(30),
            || async { (s.ping().await.ok()? == 200).then_some(()) },
        )
        .await
        .with_context(|| s.serve.logs())?;
        Ok(s)
    }

    /// `POST /api/v1/mqtt-users` as admin; returns the password.
    pub async fn mqtt_user(&self, name: &str, ha_commands: bool) -> anyhow::Result<String> {
        let v: Value = self
            .http
            .post(format!("{}/api/v1/mqtt-users", self.serve.http))
            .bearer_auth(&self.serve.admin_token)
            .json(&json!({"name": name, "ha_commands": ha_commands}))
            .send()
            .await?
            .json()
            .await?;
        Ok(v["password"].as_str().context("password")?.to_owned())
    }

    /// The API's ping of the local agent (HTTP → API → broker → agent → back): its HTTP status.
    pub async fn ping(&self) -> anyhow::Result<u16> {
        let r = self
            .http
            .get(format!(
                "{}/api/v1/agents/{}/ping",
                self.serve.http, self.agent
            ))
            .bearer_auth(&self.serve.admin_token)
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        Ok(r.status().as_u16())
    }

    /// The local agent's status topic.
    pub fn status_topic(&self) -> String {
        zedops_proto::topics::status(&self.agent)
    }
}
