//! The zedops HTTP API (`docs/protocol.md` § HTTP API): poem-openapi endpoints over a fleet cache and an MQTT 5
//! requester, Server-Sent Events, health, metrics, the OpenAPI document and interactive docs.
//!
//! # Layout
//! - [`admission`]: per-token bounds on requests to agents and event streams (`429 busy`).
//! - [`advertised`]: the public URL and broker URLs the server tells agents about.
//! - [`broker_policy`]: who may connect to the broker and as whom (both brokers' policy).
//! - [`cache`]: the fleet view built from retained status and snapshot topics.
//! - [`mqtt`]: the API's MQTT session (subscriptions, `fleet/resync`) and the requester;
//!   [`intake`] verifies and applies what agents publish, off the session's task.
//! - [`usage`]: containers' CPU and memory that agents publish (`--ha-stats`), for `/metrics`.
//! - [`streams`]: streams from agents (log follows, stats), credit granted as they are read.
//! - [`routes`]: the endpoints, one module per OpenAPI tag, and their schemas.
//! - [`error`]: `{code, message}` errors with their HTTP status.
//! - [`metrics`]: Prometheus text.
//!
//! Use: [`Api::connect`] starts the MQTT session; [`Api::app`] builds the poem endpoint (tests drive
//! it in-process); [`serve`] runs it on a listener the caller bound, until shutdown.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod admission;
pub mod advertised;
pub mod auth;
pub mod broker_policy;
pub mod cache;
pub mod dashboard;
pub mod error;
pub mod freshness;
pub mod hook_identities;
pub mod intake;
pub mod key_cache;
pub mod limits;
pub mod metrics;
pub mod mqtt;
pub mod routes;
pub mod security;
pub mod store;
pub mod streams;
pub mod usage;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use poem::endpoint::make_sync;
use poem::listener::TcpAcceptor;
use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::OpenApiService;
use tokio::sync::broadcast;

pub use mqtt::MqttConfig;
use routes::{FleetApi, FleetEvent};

/// How long after the first subscription the cache counts as warm: retained messages arrive at
/// once, and agents answer `fleet/resync` within 1 s.
pub const WARM_UP: Duration = Duration::from_millis(1500);

/// Why the API is not ready (`/readyz` answers `503` with this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("not connected to the MQTT broker")]
    Disconnected,
    #[error("warming the fleet cache")]
    WarmingUp,
}

/// Everything the handlers share.
pub struct State {
    pub fleet: Arc<cache::Fleet>,
    pub link: Arc<mqtt::Link>,
    pub requester: mqtt::Requester,
    pub metrics: Arc<metrics::Metrics>,
    pub changes: broadcast::Sender<cache::Change>,
    pub events: broadcast::Sender<FleetEvent>,
    /// Tokens and audit; `None` runs without authentication.
    pub store: Option<Arc<store::Store>>,
    /// Requests to agents waiting for replies, per token.
    pub requests: Arc<admission::Slots>,
    /// Open event streams, per token and in total.
    pub streams: Arc<admission::Slots>,
    /// Rate limits of unauthenticated routes, per client address.
    pub limiter: Arc<limits::RateLimiter>,
    /// Failed enrollments, summarised in the audit log.
    pub enroll_failures: limits::FailureDigest,
    /// Set: the external broker asks this server who may connect ([`Api::serve_broker_hook`]).
    pub broker_hook: std::sync::OnceLock<broker_policy::BrokerHook>,
    /// Identities the broker hook found, for its ACL questions.
    pub hook_identities: hook_identities::HookIdentities,
    /// The server's public URL and brokers, for enrollment ([`Api::advertise`]).
    pub advertised: advertised::AdvertisedCell,
    /// Becomes true when the server stops: event streams end so that the HTTP server's graceful
    /// shutdown does not wait out its grace period for clients that never hang up.
    closing: tokio::sync::watch::Sender<bool>,
}

impl State {
    fn new(
        fleet: Arc<cache::Fleet>,
        link: Arc<mqtt::Link>,
        changes: broadcast::Sender<cache::Change>,
        events: broadcast::Sender<FleetEvent>,
        store: Option<Arc<store::Store>>,
        limits: admission::Limits,
    ) -> Arc<Self> {
        let metrics = Arc::new(metrics::Metrics::default());
        Arc::new(State {
            requester: mqtt::Requester {
                link: link.clone(),
                fleet: fleet.clone(),
                metrics: metrics.clone(),
            },
            fleet,
            link,
            metrics,
            changes,
            events,
            store,
            requests: admission::Slots::new(
                "requests to agents",
                limits.requests_per_token,
                mqtt::MAX_IN_FLIGHT,
            ),
            streams: admission::Slots::new(
                "event streams",
                limits.streams_per_token,
                limits.streams,
            ),
            limiter: Arc::default(),
            advertised: Default::default(),
            broker_hook: Default::default(),
            hook_identities: Default::default(),
            enroll_failures: limits::FailureDigest::default(),
            closing: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Ok when connected to the broker and warmed up; else the reason.
    pub fn ready(&self) -> Result<(), NotReady> {
        if !self.link.connected.load(Ordering::SeqCst) {
            return Err(NotReady::Disconnected);
        }
        let since = *self
            .link
            .subscribed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match since {
            Some(t) if t.elapsed() >= WARM_UP => Ok(()),
            _ => Err(NotReady::WarmingUp),
        }
    }

    /// Runs op `O` on `agent` for `caller`, holding one of the caller's request slots while it
    /// waits (`busy` when the caller holds them all).
    pub async fn ask<O: zedops_proto::ops::Op>(
        &self,
        caller: &auth::Principal,
        agent: &str,
        args: &O::Args,
        deadline: Duration,
    ) -> Result<O::Output, error::ApiError> {
        let _slot = self.requests.take(caller)?;
        Ok(self.requester.call::<O>(agent, args, deadline).await?)
    }

    /// Records an audit entry; a failure to write it is logged, never hidden.
    pub async fn audit(&self, rec: store::AuditRecord) {
        tracing::info!(who = ?rec.who, source = %rec.source, action = %rec.action, agent = ?rec.agent, container = ?rec.container, outcome = %rec.outcome, "audit");
        if let Some(s) = &self.store {
            if let Err(e) = s.audit(rec).await {
                tracing::error!(error = %e, "could not write the audit log");
            }
        }
    }

    /// Resolves when the server begins to stop (see [`Api::close_streams`]).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    pub fn render_metrics(&self) -> String {
        let (known, online, containers) = self.fleet.counts();
        let mut text = self.metrics.render(&metrics::Gauges {
            agents_known: known,
            agents_online: online,
            containers,
            sse_clients: self.streams.in_use(),
            requests_in_flight: self.requests.in_use(),
        });
        self.fleet.usage.render(&mut text);
        text
    }
}

/// A running API: its MQTT session and shared state.
pub struct Api {
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The OpenAPI service (shared by the server and the spec generator).
fn service(state: Arc<State>) -> OpenApiService<FleetApi, ()> {
    OpenApiService::new(routes::api(state), "zedops", zedops_proto::VERSION)
        .description(
            "Control Docker containers across a fleet of hosts. zedops agents publish their containers over MQTT 5 and execute commands sent with \
             MQTT request/response. This API reads the fleet from a cache of the agents' retained \
             state and sends actions to agents with a deadline. Every error body is \
             `{code, message}`.",
        )
}

impl Api {
    /// Starts the MQTT session; the API answers at once and fills its cache as state arrives.
    ///
    /// With a `store`, the API requires tokens; with `security` as well, it signs requests and
    /// accepts only what enrolled agents signed.
    pub fn connect(cfg: MqttConfig, store: Option<Arc<store::Store>>) -> Self {
        Self::connect_secured(cfg, store, None, admission::Limits::default())
    }

    pub fn connect_secured(
        cfg: MqttConfig,
        store: Option<Arc<store::Store>>,
        security: Option<Arc<security::Security>>,
        limits: admission::Limits,
    ) -> Self {
        let fleet = Arc::new(cache::Fleet::default());
        let (changes, _) = broadcast::channel(1024);
        let (events, _) = broadcast::channel(1024);
        let (link, task) = mqtt::start(cfg, fleet.clone(), changes.clone(), security);
        let state = State::new(fleet, link, changes, events, store, limits);
        Self { state, task }
    }

    /// Sets what registration and enrollment answers tell agents about where the server is.
    pub fn advertise(&self, a: advertised::Advertised) {
        self.state.advertised.set(a);
    }

    /// Answers the broker hook (`POST /api/v1/broker/auth`, `/acl`) to callers that show `hook`'s
    /// secret, with its service login as this server's own; without it they answer 404. Set
    /// once; later calls change nothing.
    pub fn serve_broker_hook(&self, hook: broker_policy::BrokerHook) {
        let _ = self.state.broker_hook.set(hook);
    }

    /// The HTTP application: API routes, `/openapi.json`, `/docs`.
    pub fn app(&self) -> impl Endpoint + 'static {
        let svc = service(self.state.clone());
        let spec = svc.spec();
        let docs = svc.swagger_ui();
        // The API's own routes are absolute (`/api/v1/…`, `/healthz`); the dashboard owns the rest.
        let api = std::sync::Arc::new(poem::IntoEndpoint::into_endpoint(svc).map_to_response());
        Route::new()
            .at("/api/*rest", api.clone())
            .at("/healthz", api.clone())
            .at("/readyz", api.clone())
            .at("/metrics", api)
            .at(
                "/openapi.json",
                make_sync(move |_| {
                    poem::Response::builder()
                        .content_type("application/json")
                        .body(spec.clone())
                }),
            )
            .nest("/docs", docs)
            .nest("/", dashboard::routes())
            .around(auth::open_access)
            .around({
                let limiter = self.state.limiter.clone();
                move |ep, req| limits::guard(ep, limiter.clone(), req)
            })
            .data(self.state.clone())
            .catch_all_error(error::json_errors)
    }

    /// Ends every Server-Sent Events stream; call it before stopping the HTTP server.
    pub fn close_streams(&self) {
        self.state.closing.send_replace(true);
    }

    /// Stops the MQTT session (the HTTP server stops with its shutdown future).
    pub async fn disconnect(&self) {
        self.state
            .link
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.state.link.client.disconnect()).await;
    }
}

/// The OpenAPI document the code generates (checked in as `openapi/zedops.json`).
pub fn openapi_json() -> String {
    spec_service().spec()
}

/// A service with detached state, for generating the document without a broker.
fn spec_service() -> OpenApiService<FleetApi, ()> {
    let (client, _eventloop) = rumqttc::v5::AsyncClient::new(
        rumqttc::v5::MqttOptions::new("zedops-spec", "127.0.0.1", 1),
        1,
    );
    let link = Arc::new(mqtt::Link::detached(client));
    let (changes, _) = broadcast::channel(1);
    let (events, _) = broadcast::channel(1);
    service(State::new(
        Arc::new(cache::Fleet::default()),
        link,
        changes,
        events,
        None,
        admission::Limits::default(),
    ))
}

/// Serves `app` on a listener the caller bound, until `shutdown` completes.
pub async fn serve(
    app: impl Endpoint + 'static,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tls(app, listener, None, shutdown).await
}

/// Like [`serve`], over HTTPS when given a PEM certificate chain and key.
pub async fn serve_tls(
    app: impl Endpoint + 'static,
    listener: tokio::net::TcpListener,
    tls: Option<(Vec<u8>, Vec<u8>)>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use poem::listener::{AcceptorExt, IntoTlsConfigStream, RustlsCertificate, RustlsConfig};
    let acceptor = TcpAcceptor::from_tokio(listener)?;
    let grace = Some(Duration::from_secs(5));
    match tls {
        None => {
            poem::Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(app, shutdown, grace)
                .await
        }
        Some((cert, key)) => {
            let config = RustlsConfig::new().fallback(RustlsCertificate::new().cert(cert).key(key));
            poem::Server::new_with_acceptor(acceptor.rustls(config.into_stream()?))
                .run_with_graceful_shutdown(app, shutdown, grace)
                .await
        }
    }
}
