//! `zedops serve` as a library: the embedded MQTT broker (or an external one), the HTTP API and
//! dashboard, and optionally an agent for this host, composed in one process and shut down in
//! order. The CLI parses flags into a [`ServeConfig`] and calls [`start`] (or [`run`]), as
//! mini-redis's binary calls `server::run(listener, shutdown)`.
//!
//! # Layout
//! - [`config`]: [`ServeConfig`], what to run, with the defaults of `zedops serve`.
//! - [`files`]: the data dir's secrets: the first admin token, the server's signing key.
//! - [`broker_auth`]: who may connect to the embedded broker, and as which identity.
//! - [`local_agent`]: the agent inside `serve`, enrolled through the one-time token path.
//! - [`public`]: the public URL and brokers agents on other hosts are told about.
//! - [`error`]: the one error type, [`ServerError`].
//!
//! Start-up order: store and key → broker → HTTP listener → API (MQTT session) → local agent.
//! Shutdown ([`Server::stop`]): local agent (its signed `offline`) → event streams → HTTP →
//! the API's MQTT session → broker.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod broker_auth;
pub mod config;
pub mod error;
pub mod files;
pub mod local_agent;
pub mod public;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;
use zedops_api::security::Security;
use zedops_api::store::Store;
use zedops_broker::{BrokerConfig, BrokerHandle, TlsFiles};
use zedops_proto::{BrokerList, BrokerUrl};

pub use config::{default_agent_name, LocalAgent, ServeConfig};
pub use error::ServerError;

/// A running `zedops serve`.
pub struct Server {
    api: zedops_api::Api,
    broker: Option<BrokerHandle>,
    /// The broker URL the in-process clients use (or the external broker's).
    broker_url: BrokerUrl,
    /// The external broker's other nodes, tried in turn.
    fallbacks: Vec<BrokerUrl>,
    http_addr: SocketAddr,
    /// HTTPS and MQTT over TLS (`ServeConfig::tls`).
    tls: bool,
    admin_token_file: Option<PathBuf>,
    /// What agents on other hosts are told (enrollment), and why it may not reach them.
    public: public::Public,
    agent: Option<(String, tokio::task::JoinHandle<()>)>,
    stop_agent: Option<tokio::sync::oneshot::Sender<()>>,
    stop_http: Option<tokio::sync::oneshot::Sender<()>>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Store, admin token and signing key; none of them with `no_auth`.
struct Secured {
    store: Arc<Store>,
    security: Arc<Security>,
    admin_token_file: PathBuf,
}

async fn secured(cfg: &ServeConfig) -> Result<Option<Secured>, ServerError> {
    if cfg.no_auth {
        return Ok(None);
    }
    let store = Store::open(cfg.database.as_deref(), &cfg.data_dir).await?;
    let admin_token_file = files::ensure_admin_token(&store, &cfg.data_dir).await?;
    let key = files::server_key(&cfg.data_dir, &store).await?;
    let store = Arc::new(store);
    let security = Arc::new(Security::new(key, store.clone()));
    Ok(Some(Secured {
        store,
        security,
        admin_token_file,
    }))
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path)
        .map_err(|e| ServerError::Config(format!("cannot read {what} {}: {e}", path.display())))
}

/// The embedded broker (with the store's authentication policy) and the URL of its loopback
/// listener for in-process clients.
async fn embedded_broker(
    cfg: &ServeConfig,
    sec: Option<&Secured>,
    internal_password: &str,
) -> Result<(BrokerHandle, BrokerUrl), ServerError> {
    let auth = sec.map(|s| broker_auth::policy(s.store.clone(), internal_password.to_owned()));
    let b = zedops_broker::start(BrokerConfig {
        auth,
        v5_listen: cfg.mqtt_addr(cfg.mqtt_listen, 1883),
        v4_listen: cfg.mqtt311.then(|| cfg.mqtt_addr(cfg.mqtt311_listen, 1884)),
        tls: cfg.tls.clone().map(|(cert, key)| TlsFiles { cert, key }),
        ..BrokerConfig::default()
    })
    .await?;
    let local = b.local_plain_addr().unwrap_or_else(|| b.v5_addr());
    let url = BrokerUrl {
        host: local.ip().to_string(),
        port: local.port(),
        tls: false,
    };
    Ok((b, url))
}

/// The shortest hook secret taken: the hook's answers test passwords, so its secret must not be
/// guessable (`openssl rand -hex 24` makes 48 characters).
const MIN_HOOK_SECRET: usize = 16;

/// `--broker-auth-hook` needs an external broker, the store, the login the hook takes as the
/// server's own, and a secret that only the broker shows.
fn hook_config(cfg: &ServeConfig) -> Result<(), ServerError> {
    if !cfg.broker_auth_hook {
        return Ok(());
    }
    let secret = cfg.broker_hook_secret.as_deref().unwrap_or_default();
    let why = if cfg.broker.is_none() {
        "--broker-auth-hook is for an external broker (--broker): the embedded one asks the store itself"
    } else if cfg.no_auth {
        "--broker-auth-hook needs authentication: it answers from the agents and MQTT users of the store, which --no-auth has none of"
    } else if cfg.broker_credentials.is_none() {
        "--broker-auth-hook needs --broker-username and --broker-password: they are this server's own login, which the hook lets in"
    } else if secret.chars().count() < MIN_HOOK_SECRET {
        "--broker-auth-hook needs --broker-auth-hook-secret (ZEDOPS_BROKER_AUTH_HOOK_SECRET) of at least 16 characters, e.g. from `openssl rand -hex 24`: the broker's auth plugin sends it as `Authorization: Bearer …`, so that nobody else can ask the hook"
    } else {
        return Ok(());
    };
    Err(ServerError::Config(why.into()))
}

/// Starts everything `cfg` names; returns once it serves.
pub async fn start(cfg: ServeConfig) -> Result<Server, ServerError> {
    hook_config(&cfg)?;
    let sec = secured(&cfg).await?;
    // The API's own MQTT identity (per process; never leaves it).
    let internal_password = zedops_proto::client::new_keypair().seed_hex();
    let https = match &cfg.tls {
        Some((cert, key)) => Some((read(cert, "--tls-cert")?, read(key, "--tls-key")?)),
        None => None,
    };
    let (broker, (broker_url, fallbacks)) = match cfg.broker.clone() {
        Some(list) => (None, list.split()),
        None => {
            let (b, url) = embedded_broker(&cfg, sec.as_ref(), &internal_password).await?;
            (Some(b), (url, Vec::new()))
        }
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let http_addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let public = public::public(
        public::Listeners {
            http: http_addr,
            mqtt: broker.as_ref().map(BrokerHandle::v5_addr),
            tls: cfg.tls.is_some(),
        },
        cfg.public_url.as_deref(),
        cfg.broker
            .as_ref()
            .map(BrokerList::urls)
            .unwrap_or_default(),
        &zedops_proto::client::hostname().unwrap_or_default(),
    )
    .map_err(|e| ServerError::Config(e.to_string()))?;
    // The banner shows them as notes; the log says them once at info (the default set-up, one
    // host on loopback, is no fault).
    for w in &public.warnings {
        tracing::info!("{w}");
    }
    // The embedded broker knows the internal user; an external one, what `--broker-username`
    // names.
    let credentials = match &broker {
        Some(_) => sec.is_some().then(|| {
            (
                zedops_proto::identity::INTERNAL_USER.to_owned(),
                internal_password.clone(),
            )
        }),
        None => cfg.broker_credentials.clone(),
    };
    let api = zedops_api::Api::connect_secured(
        zedops_api::MqttConfig {
            broker: broker_url.clone(),
            fallback_brokers: fallbacks.clone(),
            credentials,
            client_id: None,
            tls: cfg.broker_tls.clone(),
        },
        sec.as_ref().map(|s| s.store.clone()),
        sec.as_ref().map(|s| s.security.clone()),
        cfg.limits,
    );
    api.advertise(public.advertised.clone());
    let hook_login = cfg
        .broker_credentials
        .as_ref()
        .filter(|_| cfg.broker_auth_hook);
    if let (Some((username, password)), Some(secret)) = (hook_login, &cfg.broker_hook_secret) {
        let service = zedops_api::broker_policy::ServiceLogin {
            username: username.clone(),
            password: password.clone(),
        };
        api.serve_broker_hook(zedops_api::broker_policy::BrokerHook::new(service, secret));
    }
    let (stop_agent, agent) = match &cfg.local_agent {
        Some(local) => {
            let secured = sec.as_ref().map(|s| (&*s.store, &*s.security));
            let mut acfg =
                local_agent::config(local, broker_url.clone(), &cfg.data_dir, secured).await?;
            if broker.is_none() {
                // An external broker: the local agent logs in as the enrolled agent it is when the
                // broker asks this server (the hook knows its password); else as the server does.
                if !cfg.broker_auth_hook {
                    acfg.credentials = cfg.broker_credentials.clone();
                }
                acfg.fallback_brokers = fallbacks.clone();
                acfg.tls = cfg.broker_tls.clone();
            }
            let line = format!(
                "local agent {} serving Docker at {}",
                local.name,
                acfg.docker.describe()
            );
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                if let Err(e) = zedops_agent::run(acfg, async move {
                    let _ = rx.await;
                })
                .await
                {
                    tracing::error!(error = %e, "the local agent stopped");
                }
            });
            (Some(tx), Some((line, task)))
        }
        None => (None, None),
    };
    let (stop_http, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(zedops_api::serve_tls(
        api.app(),
        listener,
        https,
        async move {
            let _ = stop_http_rx.await;
        },
    ));
    Ok(Server {
        api,
        broker,
        broker_url,
        fallbacks,
        http_addr,
        tls: cfg.tls.is_some(),
        admin_token_file: sec.map(|s| s.admin_token_file),
        public,
        agent,
        stop_agent,
        stop_http: Some(stop_http),
        http,
    })
}

/// Runs until `shutdown` completes, then stops in order.
pub async fn run(
    cfg: ServeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let server = start(cfg).await?;
    shutdown.await;
    server.stop().await;
    Ok(())
}

impl Server {
    /// The base URL of the HTTP API and dashboard.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.http_addr)
    }

    /// What runs and where to go next, for the terminal; `me` is how the user invoked zedops.
    pub fn banner(&self, me: &str) -> String {
        let base = self.base_url();
        let mqtt = if self.tls { "mqtts" } else { "mqtt" };
        let mut s = format!("zedops {} is running\n", zedops_proto::VERSION);
        match &self.broker {
            Some(b) => {
                s += &format!("  MQTT broker   {mqtt}://{} (MQTT 5)", b.v5_addr());
                if let Some(v4) = b.v4_addr() {
                    s += &format!(", {mqtt}://{v4} (MQTT 3.1.1)");
                }
                s += "\n";
            }
            None => {
                let all: Vec<String> = std::iter::once(&self.broker_url)
                    .chain(&self.fallbacks)
                    .map(ToString::to_string)
                    .collect();
                s += &format!("  MQTT broker   {} (external)\n", all.join(", "));
            }
        }
        s += &format!("  HTTP API      {base}/api/v1/agents\n");
        if let Some(url) = &self.public.advertised.server_url {
            let brokers: Vec<String> = self
                .public
                .advertised
                .brokers
                .iter()
                .map(ToString::to_string)
                .collect();
            s += &format!(
                "  Public        {url} for agents on other hosts (broker {})\n",
                brokers.join(", ")
            );
        }
        for w in &self.public.warnings {
            s += &format!("  Note          {w}\n");
        }
        s += &format!("  API docs      {base}/docs\n");
        s += &format!("  Dashboard     {base}/\n");
        if let Some((line, _)) = &self.agent {
            s += &format!("  Agent         {line}\n");
        }
        match &self.admin_token_file {
            Some(f) => {
                s += &format!(
                    "  Admin token   {} (mode 0600; the CLI on this host reads it by itself)\n",
                    f.display()
                )
            }
            None => {
                s += &format!(
                    "  Auth          OFF (--no-auth): anyone who reaches {base} is admin\n"
                );
                s += "                and MQTT is anonymous: its listeners stay on loopback unless --mqtt-listen names another address\n";
            }
        }
        let elsewhere = self
            .public
            .advertised
            .server_url
            .as_deref()
            .unwrap_or(&base);
        s += &format!(
            "Next: {me} ps   (or {me} --server {elsewhere} ps from elsewhere; Ctrl-C stops)"
        );
        s
    }

    /// Stops in order: the local agent first (so it publishes its signed `offline` while the
    /// broker and API still run), then event streams, HTTP, the API's MQTT session, the broker.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop_agent.take() {
            let _ = tx.send(());
        }
        if let Some((_, task)) = self.agent.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        debug!("local agent stopped");
        self.api.close_streams();
        if let Some(tx) = self.stop_http.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(6), &mut self.http).await;
        debug!("HTTP server stopped");
        self.api.disconnect().await;
        debug!("API disconnected from the broker");
        if let Some(b) = self.broker.take() {
            let _ = tokio::task::spawn_blocking(move || b.stop()).await;
            debug!("broker stopped");
        }
    }
}
