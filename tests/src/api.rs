//! The HTTP API in-process on an ephemeral port, brokers of either kind, and an SSE reader.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use zedops_broker::{BrokerConfig, BrokerHandle};
use zedops_proto::BrokerUrl;

use crate::procs::Mosquitto;

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Embedded,
    Mosquitto,
}

/// A running broker of either kind.
pub struct Broker {
    pub addr: SocketAddr,
    _embedded: Option<BrokerHandle>,
    _mosquitto: Option<Mosquitto>,
}

impl Broker {
    pub async fn start(kind: BrokerKind) -> anyhow::Result<Self> {
        Ok(match kind {
            BrokerKind::Embedded => {
                let b = zedops_broker::start(BrokerConfig::ephemeral()).await?;
                Self {
                    addr: b.v5_addr(),
                    _embedded: Some(b),
                    _mosquitto: None,
                }
            }
            BrokerKind::Mosquitto => {
                let m = Mosquitto::start().await?;
                Self {
                    addr: m.addr,
                    _embedded: None,
                    _mosquitto: Some(m),
                }
            }
        })
    }

    pub fn url(&self) -> BrokerUrl {
        BrokerUrl {
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
            tls: false,
        }
    }
}

/// The API served on 127.0.0.1:0.
pub struct TestApi {
    pub base: String,
    pub http: reqwest::Client,
    api: Option<zedops_api::Api>,
    _data: Option<crate::procs::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Tokens of each role, for a secured [`TestApi`].
#[derive(Debug, Clone)]
pub struct Tokens {
    pub admin: String,
    pub operator: String,
    pub viewer: String,
}

impl TestApi {
    /// The API without authentication (every caller is admin).
    pub async fn start(broker: &BrokerUrl) -> anyhow::Result<Self> {
        Self::start_inner(broker, None).await
    }

    /// The API with a token store in a temporary data dir, and one token per role.
    pub async fn start_with_tokens(broker: &BrokerUrl) -> anyhow::Result<(Self, Tokens)> {
        let dir = crate::procs::TempDir::new("api-data")?;
        let store = zedops_api::store::Store::open(None, &dir.path).await?;
        use zedops_api::auth::Role;
        let tokens = Tokens {
            admin: store.create_token("admin", Role::Admin).await?,
            operator: store.create_token("ops", Role::Operator).await?,
            viewer: store.create_token("watcher", Role::Viewer).await?,
        };
        let mut api = Self::start_inner(broker, Some(std::sync::Arc::new(store))).await?;
        api._data = Some(dir);
        Ok((api, tokens))
    }

    async fn start_inner(
        broker: &BrokerUrl,
        store: Option<std::sync::Arc<zedops_api::store::Store>>,
    ) -> anyhow::Result<Self> {
        let api = zedops_api::Api::connect(
            zedops_api::MqttConfig {
                broker: broker.clone(),
                credentials: None,
                client_id: None,
                fallback_brokers: Vec::new(),
                tls: Default::default(),
            },
            store,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(zedops_api::serve(api.app(), listener, async move {
            let _ = rx.await;
        }));
        let t = Self {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            api: Some(api),
            _data: None,
            stop: Some(tx),
            task: Some(task),
        };
        crate::eventually("the API to be ready", Duration::from_secs(10), || async {
            let r = t.http.get(t.url("/readyz")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await?;
        Ok(t)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let r = self.http.get(self.url(path)).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(serde_json::Value::Null)))
    }

    pub async fn post_json(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let r = self.http.post(self.url(path)).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(serde_json::Value::Null)))
    }

    /// A request with a bearer token; returns status and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let m = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut rb = self.http.request(m, self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(serde_json::Value::Null)))
    }

    /// Stops serving and drops the MQTT session (as if the API process ended).
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(6), t).await;
        }
        if let Some(api) = self.api.take() {
            api.disconnect().await;
        }
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// One parsed Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: String,
    pub data: serde_json::Value,
}

/// Reads an SSE response event by event.
pub struct SseReader {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: zedops_proto::sse::SseBuffer,
}

impl SseReader {
    pub async fn open(http: &reqwest::Client, url: &str) -> anyhow::Result<Self> {
        let r = http
            .get(url)
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(3600))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("GET {url}: {}", r.status());
        }
        Ok(Self {
            stream: r.bytes_stream().boxed(),
            buf: zedops_proto::sse::SseBuffer::new(),
        })
    }

    /// The next event satisfying `pred` within `limit`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Sse) -> bool,
    ) -> anyhow::Result<Sse> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while let Some(e) = self.buf.next_event() {
                let ev = Sse {
                    event: e.event,
                    data: serde_json::from_str(&e.data).unwrap_or(serde_json::Value::Null),
                };
                if pred(&ev) {
                    return Ok(ev);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .map_err(|_| anyhow::anyhow!("timed out after {limit:?} waiting for {what}"))?
                .context("event stream ended")??;
            self.buf.push(&chunk);
        }
    }
}

/// The agent is online, lists `container`, and a restart through the API reaches it.
pub async fn reaches(
    admin: &zedops_client::Client,
    agent: &str,
    container: &crate::TestContainer,
) -> anyhow::Result<()> {
    crate::eventually(
        "the agent online with its containers",
        Duration::from_secs(30),
        || async {
            let online = admin.agent(agent).await.ok()?.online;
            let here = admin
                .locate(&container.name)
                .await
                .ok()?
                .contains(&agent.to_owned());
            (online && here).then_some(())
        },
    )
    .await?;
    let before = container.started_at()?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = admin
        .act(
            agent,
            &container.name,
            zedops_client::Action::Restart,
            &zedops_client::ActionOptions::default(),
        )
        .await?;
    anyhow::ensure!(r.changed, "the restart changed nothing");
    anyhow::ensure!(container.started_at()? != before, "Docker shows no restart");
    Ok(())
}

/// The sum of the counters on `http`'s `/metrics` whose lines start with `prefix` (a metric's
/// name, optionally with the first of its labels: `name{label="value"`).
pub async fn counter_sum(http: &str, prefix: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{http}/metrics"))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}
