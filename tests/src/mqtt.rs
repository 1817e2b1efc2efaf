//! A small MQTT 5 test client (rumqttc): subscribe, wait for matching messages, send requests with
//! response topic and correlation data.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;
use zedops_proto::{topics, Reply};

pub struct TestClient {
    pub client: AsyncClient,
    pub id: String,
    rx: mpsc::Receiver<Publish>,
    /// CONNACKs (no codes) and SUBACKs (one code per filter), in order.
    acks: mpsc::Receiver<Vec<SubscribeReasonCode>>,
    task: tokio::task::JoinHandle<()>,
    n: u64,
    last: Option<Publish>,
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A received message, decoded for assertions.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
    pub correlation: Option<Bytes>,
}

impl From<&Publish> for Msg {
    fn from(p: &Publish) -> Self {
        Msg {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload.clone(),
            retain: p.retain,
            correlation: p
                .properties
                .as_ref()
                .and_then(|x| x.correlation_data.clone()),
        }
    }
}

impl Msg {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

impl TestClient {
    /// Connects (MQTT 5, TCP_NODELAY) and waits for the CONNACK.
    pub async fn connect(addr: SocketAddr, id: &str) -> anyhow::Result<Self> {
        Self::connect_with(addr, id, None, Duration::from_secs(5)).await
    }

    /// Connects with a username and password; fails when no CONNACK arrives within `limit`
    /// (a broker refusing the credentials closes the connection).
    pub async fn connect_with(
        addr: SocketAddr,
        id: &str,
        credentials: Option<(&str, &str)>,
        limit: Duration,
    ) -> anyhow::Result<Self> {
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        if let Some((u, p)) = credentials {
            opts.set_credentials(u, p);
        }
        opts.set_keep_alive(Duration::from_secs(10));
        opts.set_max_packet_size(Some(zedops_proto::MAX_PACKET_BYTES as u32));
        opts.set_outgoing_inflight_upper_limit(zedops_proto::MQTT_OUTGOING_INFLIGHT);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        opts.set_network_options(net);
        let (client, mut el) = AsyncClient::new(opts, 10_000);
        let (tx, rx) = mpsc::channel(100_000);
        let (ack_tx, mut acks) = mpsc::channel(1000);
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p).await.is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = ack_tx.try_send(Vec::new());
                    }
                    Ok(Event::Incoming(Packet::SubAck(a))) => {
                        let _ = ack_tx.try_send(a.return_codes);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        if tokio::time::timeout(limit, acks.recv()).await.is_err() {
            task.abort();
            return Err(anyhow!("no CONNACK from {addr} within {limit:?}"));
        }
        Ok(Self {
            client,
            id: id.to_owned(),
            rx,
            acks,
            task,
            n: 0,
            last: None,
        })
    }

    /// Subscribes (QoS 0) and waits for the SUBACK; fails unless the broker granted it.
    pub async fn subscribe(&mut self, filter: &str) -> anyhow::Result<()> {
        match self.suback(filter).await? {
            SubscribeReasonCode::Success(_) => Ok(()),
            code => bail!("the broker refused the subscription to {filter}: {code:?}"),
        }
    }

    /// Subscribes (QoS 0); fails unless the broker refused it in its SUBACK.
    pub async fn subscribe_refused(&mut self, filter: &str) -> anyhow::Result<SubscribeReasonCode> {
        match self.suback(filter).await? {
            SubscribeReasonCode::Success(q) => {
                bail!("the broker granted the subscription to {filter} (QoS {q:?})")
            }
            code => Ok(code),
        }
    }

    /// The SUBACK's reason code for one filter (CONNACKs of reconnections on the way are
    /// skipped).
    async fn suback(&mut self, filter: &str) -> anyhow::Result<SubscribeReasonCode> {
        self.client.subscribe(filter, QoS::AtMostOnce).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let codes = tokio::time::timeout_at(deadline, self.acks.recv())
                .await
                .map_err(|_| anyhow!("no SUBACK for {filter}"))?
                .context("client closed")?;
            if let Some(code) = codes.first() {
                return Ok(*code);
            }
        }
    }

    /// The next message whose topic and payload satisfy `pred`; others are discarded.
    pub async fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        mut pred: impl FnMut(&Msg) -> bool,
    ) -> anyhow::Result<Msg> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let p = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .map_err(|_| anyhow!("timed out after {limit:?} waiting for {what}"))?
                .context("client closed")?;
            let m = Msg::from(&p);
            if pred(&m) {
                self.last = Some(p);
                return Ok(m);
            }
        }
    }

    /// Everything received within `window`.
    pub async fn drain(&mut self, window: Duration) -> Vec<Msg> {
        let deadline = tokio::time::Instant::now() + window;
        let mut v = Vec::new();
        while let Ok(Some(p)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            v.push(Msg::from(&p));
        }
        v
    }

    /// The raw publish last returned by [`wait_for`](Self::wait_for), with its properties.
    pub fn last_raw(&self) -> Option<Publish> {
        self.last.clone()
    }

    pub fn reply_topic(&self) -> String {
        topics::replies(&self.id)
    }

    /// Sends a request with the given correlation data and properties; returns the raw reply.
    pub async fn request_raw(
        &mut self,
        agent: &str,
        op: &str,
        payload: impl Into<Bytes>,
        correlation: Bytes,
        mut props: PublishProperties,
        limit: Duration,
    ) -> anyhow::Result<Msg> {
        props.response_topic = Some(self.reply_topic());
        props.correlation_data = Some(correlation.clone());
        self.client
            .publish_with_properties(
                topics::request(agent, op),
                QoS::AtMostOnce,
                false,
                payload.into(),
                props,
            )
            .await?;
        let topic = self.reply_topic();
        self.wait_for(&format!("the reply to {op}"), limit, |m| {
            m.topic == topic && m.correlation.as_ref() == Some(&correlation)
        })
        .await
    }

    /// Sends `op` with JSON args; expiry = `limit`. Returns the decoded envelope.
    pub async fn request(
        &mut self,
        agent: &str,
        op: &str,
        args: serde_json::Value,
        limit: Duration,
    ) -> anyhow::Result<Reply> {
        self.n += 1;
        let corr = Bytes::from(format!("{}-{}", self.id, self.n));
        let props = PublishProperties {
            message_expiry_interval: Some(limit.as_secs().max(1) as u32),
            ..Default::default()
        };
        let m = self
            .request_raw(agent, op, serde_json::to_vec(&args)?, corr, props, limit)
            .await?;
        let reply: Reply = serde_json::from_slice(&m.payload)
            .with_context(|| format!("reply is not an envelope: {:?}", m.payload))?;
        Ok(reply)
    }

    /// Like [`request`](Self::request) but fails unless the reply is `ok`, and decodes the result.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &mut self,
        agent: &str,
        op: &str,
        args: serde_json::Value,
    ) -> anyhow::Result<T> {
        let r = self
            .request(agent, op, args, Duration::from_secs(30))
            .await?;
        match r.into_result::<T>() {
            Ok(v) => Ok(v),
            Err(e) => bail!("{op} failed: {} {}", e.code, e.message),
        }
    }

    /// Like [`call`](Self::call), signed with `server` (the server's key) as the API signs
    /// requests: what an enrolled agent requires.
    pub async fn call_signed<T: serde::de::DeserializeOwned>(
        &mut self,
        agent: &str,
        op: &str,
        args: serde_json::Value,
        server: &zedops_proto::sign::KeyPair,
    ) -> anyhow::Result<T> {
        use zedops_proto::sign::{Signed, DEADLINE_PROPERTY};
        self.n += 1;
        let corr = Bytes::from(format!("{}-{}", self.id, self.n));
        let payload = serde_json::to_vec(&args)?;
        let now = chrono::Utc::now().timestamp_millis() as u64;
        let deadline = now + 30_000;
        let reply_topic = self.reply_topic();
        let signed = Signed {
            topic: &topics::request(agent, op),
            response_topic: Some(&reply_topic),
            correlation: Some(&corr),
            deadline_ms: Some(deadline),
            ts_ms: now,
            payload: &payload,
            request_sig: None,
        };
        let mut user_properties = vec![(DEADLINE_PROPERTY.to_owned(), deadline.to_string())];
        user_properties.extend(server.signature_properties(&signed));
        let props = PublishProperties {
            message_expiry_interval: Some(30),
            user_properties,
            ..Default::default()
        };
        let m = self
            .request_raw(agent, op, payload, corr, props, Duration::from_secs(30))
            .await?;
        let reply: Reply = serde_json::from_slice(&m.payload)
            .with_context(|| format!("reply is not an envelope: {:?}", m.payload))?;
        match reply.into_result::<T>() {
            Ok(v) => Ok(v),
            Err(e) => bail!("{op} failed: {} {}", e.code, e.message),
        }
    }

    pub async fn publish(
        &self,
        topic: &str,
        retain: bool,
        payload: impl Into<Bytes>,
    ) -> anyhow::Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.into())
            .await?;
        Ok(())
    }
}
