//! What `zedops serve` runs: the CLI fills this from its flags (each has an environment variable).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use zedops_proto::client::TlsSettings;
use zedops_proto::{AgentName, BrokerList};

#[derive(Clone)]
pub struct ServeConfig {
    /// HTTP API and dashboard.
    pub listen: SocketAddr,
    /// Tokens, agents, audit, the admin token and the server key.
    pub data_dir: PathBuf,
    /// The SQL database (`postgres://…` for replicas, `sqlite://…`); default SQLite in the data dir.
    pub database: Option<String>,
    /// No tokens, an anonymous broker, unsigned commands: for a machine of one's own only.
    pub no_auth: bool,
    /// An external broker instead of the embedded one: the nodes of one cluster, in order of
    /// preference (each client moves to the next when one is lost).
    pub broker: Option<BrokerList>,
    /// How the API and the local agent log in to the external broker (username, password).
    pub broker_credentials: Option<(String, String)>,
    /// TLS to an external `mqtts://` broker: the CA to trust (default the system's roots), and a
    /// client certificate to show.
    pub broker_tls: TlsSettings,
    /// The external broker asks this server who may connect (`--broker-auth-hook`): the API
    /// answers `POST /api/v1/broker/{auth,acl}`, taking `broker_credentials` as its own login, and
    /// the local agent logs in as the enrolled agent it is.
    pub broker_auth_hook: bool,
    /// The secret the broker's auth plugin shows the hook (`Authorization: Bearer …`); required
    /// with `broker_auth_hook`.
    pub broker_hook_secret: Option<String>,
    /// The embedded broker's MQTT 5 listener (default port 1883, see [`ServeConfig::mqtt_addr`]).
    pub mqtt_listen: Option<SocketAddr>,
    /// Its MQTT 3.1.1 listener (default port 1884); `None` with `mqtt311: false`.
    pub mqtt311_listen: Option<SocketAddr>,
    pub mqtt311: bool,
    /// PEM certificate chain and key: HTTPS and MQTT over TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Also run an agent for this host's Docker engine.
    pub local_agent: Option<LocalAgent>,
    pub limits: zedops_api::admission::Limits,
    /// Where agents on other hosts reach the API (`--public-url`); default from the listeners
    /// (`crate::public`).
    pub public_url: Option<String>,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Passwords are never printed: the broker login's, and the database URL's.
        let database = self.database.as_deref().map(zedops_api::store::redact);
        let login = self
            .broker_credentials
            .as_ref()
            .map(|(u, _)| (u, "<redacted>"));
        f.debug_struct("ServeConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database", &database)
            .field("no_auth", &self.no_auth)
            .field("broker", &self.broker)
            .field("broker_credentials", &login)
            .field("broker_tls", &self.broker_tls)
            .field("broker_auth_hook", &self.broker_auth_hook)
            .field(
                "broker_hook_secret",
                &self.broker_hook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("mqtt_listen", &self.mqtt_listen)
            .field("mqtt311_listen", &self.mqtt311_listen)
            .field("mqtt311", &self.mqtt311)
            .field("tls", &self.tls)
            .field("local_agent", &self.local_agent)
            .field("limits", &self.limits)
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// The agent inside `zedops serve`.
#[derive(Debug, Clone)]
pub struct LocalAgent {
    /// Its name (default: the host name, [`AgentName::from_hostname`]).
    pub name: AgentName,
    pub docker_host: Option<String>,
    pub ha: Option<zedops_agent::HaConfig>,
    /// Action definition files (`--actions`), besides `<data-dir>/local-agent/actions.d`.
    pub actions: Vec<PathBuf>,
    /// Publish its containers' resource use this often (`--ha-stats`).
    pub stats_interval: Option<std::time::Duration>,
}

impl ServeConfig {
    /// A configuration with the defaults of `zedops serve`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8420)),
            data_dir,
            database: None,
            no_auth: false,
            broker: None,
            broker_credentials: None,
            broker_tls: TlsSettings::default(),
            broker_auth_hook: false,
            broker_hook_secret: None,
            mqtt_listen: None,
            mqtt311_listen: None,
            mqtt311: true,
            tls: None,
            local_agent: None,
            limits: Default::default(),
            public_url: None,
        }
    }

    /// Where an MQTT listener binds: the address named, else `port` on every interface — or on
    /// loopback only with `no_auth`, since an anonymous broker runs unsigned commands.
    pub fn mqtt_addr(&self, named: Option<SocketAddr>, port: u16) -> SocketAddr {
        named.unwrap_or_else(|| {
            let ip: IpAddr = if self.no_auth {
                Ipv4Addr::LOCALHOST.into()
            } else {
                Ipv4Addr::UNSPECIFIED.into()
            };
            SocketAddr::new(ip, port)
        })
    }
}

/// The default name of the local agent: this host's name, made a valid agent name.
pub fn default_agent_name() -> AgentName {
    AgentName::from_hostname(&zedops_proto::client::hostname().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_password() {
        let mut cfg = ServeConfig::new("/tmp/d".into());
        cfg.broker_credentials = Some(("zedops-api".into(), "hunter2-broker".into()));
        cfg.database = Some("postgres://zedops:hunter2-db@db:5432/zedops".into());
        let text = format!("{cfg:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("zedops-api") && text.contains("db:5432"),
            "{text}"
        );
    }
}
