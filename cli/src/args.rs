//! Command-line arguments. Every option has an environment fallback (`ZEDOPS_*`); flags win over
//! the environment, which wins over defaults.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use zedops_proto::{AgentName, BrokerList};

use crate::exit::Exit;

/// zedops: control Docker containers across a fleet of hosts over MQTT 5.
#[derive(Debug, Parser)]
#[command(
    name = "zedops",
    version,
    about,
    long_about = "zedops controls Docker containers across a fleet of hosts. `zedops serve` runs the \
server (MQTT broker, HTTP API, dashboard); `zedops agent` runs on each Docker host; every other \
command is a client of the HTTP API.",
    after_long_help = "Examples:\n  zedops serve --local-agent              start everything on this host\n  zedops ps                               running containers of the whole fleet\n  zedops restart web-1 --agent maestro    restart one container\n  zedops logs web-1 --tail 50\n\nExit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 agent offline or unavailable, 5 timeout, 6 auth.",
    propagate_version = true
)]
pub struct Cli {
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(flatten)]
    pub client: ClientOpts,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: the embedded MQTT broker (and, with --local-agent, an agent for this host).
    Serve(Box<ServeArgs>),
    /// Run an agent: serve this host's Docker engine to the fleet over MQTT.
    Agent(AgentArgs),
    /// Print the OpenAPI document of the HTTP API (or write or check a file).
    Openapi(OpenapiArgs),
    /// List the fleet's agents, or register (`add`) and remove agents (admin).
    Agents(AgentsArgs),
    /// Create MQTT users for integrations such as Home Assistant (admin).
    #[command(subcommand)]
    MqttUser(MqttUserCommand),
    /// List containers: the whole fleet (with an AGENT column) or one agent.
    #[command(
        after_long_help = "Examples:\n  zedops ps                  running containers, every agent\n  zedops ps -a --agent maestro\n  zedops ps -o json | jq '.[].name'"
    )]
    Ps(PsArgs),
    /// Check that an agent answers commands: asks it over MQTT and prints the round trip.
    #[command(after_long_help = "Examples:\n  zedops ping maestro\n  zedops ping maestro -o json")]
    Ping(PingArgs),
    /// Show a container in detail (asks its agent now).
    Inspect(OneContainer),
    /// A container action (start, stop, restart, …): one verb per row of the action table,
    /// `zedops_proto::ACTIONS`, added by [`command`].
    #[command(skip)]
    Act(zedops_proto::Action, ActionArgs),
    /// Run a command in a container, like `docker exec` (no shell, no stdin): its output is
    /// printed, and its exit code is zedops' exit code.
    #[command(
        after_long_help = "Examples:\n  zedops exec web-1 -- ls -l /data\n  zedops exec web-1 --agent maestro -e LEVEL=debug -- sh -c 'echo $LEVEL'\n\nExit code: the command's own; 5 when it was killed at --timeout; 1-6 as documented when it could not run."
    )]
    Exec(ExecCmdArgs),
    /// List the operator-defined actions of the fleet or of one agent (docs/actions.md).
    #[command(
        after_long_help = "Examples:\n  zedops actions\n  zedops actions --agent maestro -o json"
    )]
    Actions(ActionsArgs),
    /// Run an operator-defined action: its output is printed, and its exit code is zedops'.
    #[command(
        after_long_help = "Examples:\n  zedops run save\n  zedops run broadcast --agent maestro -p message='Restart in 5 minutes'\n\nExit code: the command's own; 5 when it was killed at its deadline; 1-6 as documented when it could not run."
    )]
    Run(RunArgs),
    /// List the CLI plugins (`zedops-<name>` executables; docs/plugins.md).
    Plugins,
    /// A plugin: `zedops <name> ARGS…` runs `zedops-<name> ARGS…` (docs/plugins.md).
    #[command(external_subcommand)]
    Plugin(Vec<OsString>),
    /// Print a container's logs.
    Logs(LogsArgs),
    /// CPU, memory, network, block I/O and PIDs of running containers, like `docker stats
    /// --no-stream`: the fleet (with an AGENT column), one agent, or the containers named.
    #[command(
        after_long_help = "Examples:\n  zedops stats\n  zedops stats --agent maestro web-1 -o json"
    )]
    Stats(StatsArgs),
    /// Follow live events: agents online/offline, container changes, action results.
    Events,
    /// Save the server URL and token for later commands (in the client config file).
    #[command(
        after_long_help = "Examples:\n  zedops login --server http://server.lan:8420 --token zdt_...\n  echo $TOKEN | zedops login --server https://server.lan:8420 --token-stdin"
    )]
    Login(LoginArgs),
    /// Manage API tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

/// Options of every client command.
#[derive(Debug, Args)]
pub struct ClientOpts {
    /// zedops server URL (default from `zedops login`, else http://127.0.0.1:8420).
    #[arg(long, global = true, env = "ZEDOPS_SERVER")]
    pub server: Option<String>,

    /// API token (default from `zedops login`, else this host's admin token file).
    #[arg(long, global = true, env = "ZEDOPS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// CA certificate (PEM) to trust for https:// servers and mqtts:// brokers (default: the system's).
    #[arg(long, global = true, env = "ZEDOPS_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<std::path::PathBuf>,

    /// Output format: aligned tables for people, JSON for scripts.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Only this agent's containers.
    #[arg(long)]
    pub agent: Option<AgentName>,
    /// Include stopped containers.
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct OneContainer {
    /// Container name or unique ID prefix.
    pub container: String,
    /// The agent that has it (optional when the name is unique in the fleet).
    #[arg(long)]
    pub agent: Option<AgentName>,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Container names or unique ID prefixes.
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
    /// The agent that has them (optional when each name is unique in the fleet).
    #[arg(long)]
    pub agent: Option<AgentName>,
    /// Seconds to wait for stop before killing (stop, restart; default 10, at most 300).
    #[arg(short = 't', long = "time", value_name = "SECONDS")]
    pub grace: Option<u32>,
    /// Signal to send (kill; default SIGKILL).
    #[arg(short, long)]
    pub signal: Option<String>,
    /// How long to wait for the agent (e.g. 30s, 2m; at most 300s).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Container name or unique ID prefix.
    pub container: String,
    /// The agent that has it (optional when the name is unique in the fleet).
    #[arg(long)]
    pub agent: Option<AgentName>,
    /// Number of lines from the end (default 100, at most 10 000; with --since, every line
    /// since then).
    #[arg(short = 'n', long)]
    pub tail: Option<u32>,
    /// Show Docker's timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Follow: print new lines as they come, until the container stops or Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// Only lines since then: a duration back from now (10m, 1h30m, 45s, 2d) or an RFC 3339
    /// time (2026-12-01T10:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExecCmdArgs {
    /// Container name or unique ID prefix.
    pub container: String,
    /// The agent that has it (optional when the name is unique in the fleet).
    #[arg(long)]
    pub agent: Option<AgentName>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User (name or UID[:GID]) to run as.
    #[arg(short, long)]
    pub user: Option<String>,
    /// An environment variable, NAME=value (repeatable).
    #[arg(short, long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Kill the command after this long (default 60s, at most 15m).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// A `--timeout` as the API's `timeout_s`: whole seconds, at least 1.
pub fn whole_seconds(d: Option<Duration>) -> Option<u32> {
    d.map(|t| u32::try_from(t.as_secs().max(1)).unwrap_or(u32::MAX))
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Container names or ID prefixes (default: every running container).
    #[arg(value_name = "CONTAINER")]
    pub containers: Vec<String>,
    /// Only this agent's containers.
    #[arg(long)]
    pub agent: Option<AgentName>,
    /// Print one snapshot and exit (what happens anyway when stdout is not a terminal).
    #[arg(long)]
    pub no_stream: bool,
    /// Seconds between refreshes of the live table.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub interval: u32,
}

#[derive(Debug, Args)]
pub struct ActionsArgs {
    /// Only this agent's actions.
    #[arg(long)]
    pub agent: Option<AgentName>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The action's name.
    pub action: String,
    /// The agent that has it (optional when the name is unique in the fleet).
    #[arg(long)]
    pub agent: Option<AgentName>,
    /// A parameter, NAME=VALUE (repeatable).
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Kill the command after this long (at most the action's own timeout, its default).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Read the token from standard input instead of --token.
    #[arg(long)]
    pub token_stdin: bool,
}

#[derive(Debug, Args)]
pub struct AgentsArgs {
    #[command(subcommand)]
    pub command: Option<AgentsCommand>,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Register an agent and print the one-time enrollment command to run on its host.
    Add {
        name: AgentName,
        /// How long the enrollment token stays valid (e.g. 10m, 1h; default 1h).
        #[arg(long, value_parser = parse_duration, default_value = "1h")]
        ttl: Duration,
    },
    /// Remove an agent: its credentials stop working.
    Remove { name: AgentName },
}

/// The bytes of a file a flag names, or a usage error that says which.
fn read_file(path: &std::path::Path, flag: &str) -> Result<Vec<u8>, Exit> {
    std::fs::read(path)
        .map_err(|e| Exit::usage(format!("cannot read {flag} {}: {e}", path.display())))
}

impl ServeArgs {
    /// The server configuration these flags name.
    pub fn config(&self) -> Result<zedops_server::ServeConfig, Exit> {
        let data_dir = self.data_dir.clone().unwrap_or_else(crate::paths::data_dir);
        let mut cfg = zedops_server::ServeConfig::new(data_dir);
        cfg.listen = self.listen;
        cfg.public_url = self.public_url.clone();
        cfg.no_auth = self.no_auth;
        cfg.database = self.database.clone();
        cfg.broker = self.broker.clone();
        cfg.broker_credentials = self
            .broker_username
            .clone()
            .map(|u| (u, self.broker_password.clone().unwrap_or_default()));
        cfg.broker_tls.ca = self
            .broker_ca_file
            .as_deref()
            .map(|f| read_file(f, "--broker-ca-file"))
            .transpose()?;
        if let (Some(cert), Some(key)) = (&self.broker_cert, &self.broker_key) {
            cfg.broker_tls.client_auth = Some((
                read_file(cert, "--broker-cert")?,
                read_file(key, "--broker-key")?,
            ));
        }
        cfg.broker_auth_hook = self.broker_auth_hook;
        cfg.broker_hook_secret = self.broker_auth_hook_secret.clone();
        cfg.mqtt_listen = self.mqtt_listen;
        cfg.mqtt311_listen = self.mqtt311_listen;
        cfg.mqtt311 = !self.no_mqtt311;
        cfg.tls = self.tls_cert.clone().zip(self.tls_key.clone());
        cfg.limits = zedops_api::admission::Limits {
            requests_per_token: self.max_requests_per_token as usize,
            streams_per_token: self.max_streams_per_token as usize,
            streams: self.max_streams as usize,
        };
        if let Some(name) = &self.local_agent {
            let name = if name.is_empty() {
                zedops_server::default_agent_name()
            } else {
                AgentName::new(name.clone()).map_err(|e| Exit::usage(e.to_string()))?
            };
            cfg.local_agent = Some(zedops_server::LocalAgent {
                name,
                docker_host: self.docker_host.clone(),
                ha: self.ha.config().map_err(|e| Exit::usage(e.to_string()))?,
                actions: self.actions.clone(),
                stats_interval: self.ha.ha_stats,
            });
        }
        Ok(cfg)
    }
}

#[derive(Debug, Subcommand)]
pub enum MqttUserCommand {
    /// Create (or reset) an MQTT user and print its password once.
    Add {
        name: String,
        /// Allow this user to publish Home Assistant `…/set` commands (start/stop/restart of
        /// unprotected containers of `--ha` agents). Without it the user reads, and can send
        /// signed requests only.
        #[arg(long)]
        ha_commands: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once.
    Create {
        /// A name for the token (1-63 of a-z, 0-9, '-', '_').
        name: String,
        /// viewer (read), operator (act on containers) or admin (also tokens and agents).
        #[arg(long, default_value = "viewer")]
        role: zedops_proto::http::Role,
    },
    /// List tokens (names and roles, never secrets).
    List,
    /// Revoke a token: it stops working at once.
    Revoke { name: String },
}

#[derive(Debug, Args)]
pub struct OpenapiArgs {
    /// Write the document to this file.
    #[arg(long, value_name = "PATH", conflicts_with = "check")]
    pub write: Option<std::path::PathBuf>,
    /// Fail (exit 1) when this file differs from what the code generates.
    #[arg(long, value_name = "PATH")]
    pub check: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    after_long_help = "Examples:\n  zedops serve --local-agent            broker + API + an agent for this host\n  zedops serve --broker mqtt://mosquitto.lan:1883\n  zedops serve --listen 0.0.0.0:8420 --mqtt-listen 0.0.0.0:1883"
)]
pub struct ServeArgs {
    /// HTTP listener of the API, the docs and the dashboard.
    #[arg(long, env = "ZEDOPS_LISTEN", default_value = "127.0.0.1:8420")]
    pub listen: SocketAddr,

    /// The URL agents on other hosts reach the API at, printed by `zedops agents add` and naming
    /// the broker's host in enrollment answers (default: this host's name and the --listen port
    /// when it listens beyond loopback).
    #[arg(long, env = "ZEDOPS_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// Server data dir: tokens, audit log (default $XDG_DATA_HOME/zedops, else ~/.local/share/zedops).
    #[arg(long, env = "ZEDOPS_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// TLS certificate chain (PEM): HTTPS for the API and TLS for the MQTT listeners.
    #[arg(
        long,
        env = "ZEDOPS_TLS_CERT",
        requires = "tls_key",
        value_name = "PEM"
    )]
    pub tls_cert: Option<std::path::PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "ZEDOPS_TLS_KEY",
        requires = "tls_cert",
        value_name = "PEM"
    )]
    pub tls_key: Option<std::path::PathBuf>,

    /// Run the API without tokens: anyone who reaches it is admin. Only for a trusted loopback.
    #[arg(long, env = "ZEDOPS_NO_AUTH")]
    pub no_auth: bool,

    /// The database for tokens, agents, keys and audit: postgres://USER:PASSWORD@HOST/DB for
    /// several replicas on one database (default: SQLite in the data dir).
    #[arg(
        long,
        env = "ZEDOPS_DATABASE",
        hide_env_values = true,
        value_name = "URL",
        conflicts_with = "no_auth"
    )]
    pub database: Option<String>,

    /// Run no embedded broker: say so explicitly in a replica's command line (needs --broker,
    /// which already implies it).
    #[arg(long, requires = "broker")]
    pub no_broker: bool,

    /// Use this external MQTT 5 broker instead of the embedded one (e.g. mqtt://broker.lan:1883);
    /// the nodes of a cluster separated by commas, tried in turn when one is lost.
    #[arg(long, env = "ZEDOPS_BROKER", value_name = "URL[,URL…]")]
    pub broker: Option<BrokerList>,

    /// The username the server (and its local agent) log in to the external broker with.
    #[arg(long, env = "ZEDOPS_BROKER_USERNAME", requires = "broker")]
    pub broker_username: Option<String>,

    /// Its password (prefer the environment variable: command lines are visible to every user).
    #[arg(
        long,
        env = "ZEDOPS_BROKER_PASSWORD",
        hide_env_values = true,
        requires = "broker_username"
    )]
    pub broker_password: Option<String>,

    /// CA certificate (PEM) to trust for an mqtts:// external broker (default: the system's).
    #[arg(
        long,
        env = "ZEDOPS_BROKER_CA_FILE",
        value_name = "PEM",
        requires = "broker"
    )]
    pub broker_ca_file: Option<std::path::PathBuf>,

    /// A client certificate (PEM chain) to show an mqtts:// external broker that asks for one.
    #[arg(
        long,
        env = "ZEDOPS_BROKER_CERT",
        value_name = "PEM",
        requires_all = ["broker", "broker_key"]
    )]
    pub broker_cert: Option<std::path::PathBuf>,

    /// The private key (PEM) of --broker-cert.
    #[arg(
        long,
        env = "ZEDOPS_BROKER_KEY",
        value_name = "PEM",
        requires = "broker_cert"
    )]
    pub broker_key: Option<std::path::PathBuf>,

    /// The external broker asks this server who may connect and to which topics: serve
    /// POST /api/v1/broker/auth and /acl (rmqtt-auth-http, EMQX HTTP auth). The server's own
    /// login (--broker-username) is let in; the local agent logs in as its enrolled self.
    #[arg(
        long,
        env = "ZEDOPS_BROKER_AUTH_HOOK",
        requires_all = ["broker", "broker_username"]
    )]
    pub broker_auth_hook: bool,

    /// The secret the broker's auth plugin sends the hook as `Authorization: Bearer …` (at least
    /// 16 characters, e.g. `openssl rand -hex 24`); required with --broker-auth-hook. Prefer the
    /// environment: command lines are visible to every user of the host.
    #[arg(
        long,
        env = "ZEDOPS_BROKER_AUTH_HOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true,
        requires = "broker_auth_hook"
    )]
    pub broker_auth_hook_secret: Option<String>,

    /// MQTT 5 listener of the embedded broker (default 0.0.0.0:1883; with --no-auth
    /// 127.0.0.1:1883). Either protocol version is accepted on every listener.
    #[arg(long, env = "ZEDOPS_MQTT_LISTEN")]
    pub mqtt_listen: Option<SocketAddr>,

    /// MQTT 3.1.1 compatibility listener (default 0.0.0.0:1884; with --no-auth 127.0.0.1:1884).
    #[arg(long, env = "ZEDOPS_MQTT311_LISTEN")]
    pub mqtt311_listen: Option<SocketAddr>,

    /// Do not open the MQTT 3.1.1 listener.
    #[arg(long, env = "ZEDOPS_NO_MQTT311")]
    pub no_mqtt311: bool,

    /// Requests to agents one API token may have waiting for replies; more answer 429 busy.
    #[arg(long, env = "ZEDOPS_MAX_REQUESTS_PER_TOKEN", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_requests_per_token: u32,

    /// Event streams (/api/v1/events) one API token may hold open; more answer 429 busy.
    #[arg(long, env = "ZEDOPS_MAX_STREAMS_PER_TOKEN", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_streams_per_token: u32,

    /// Event streams the server holds open, all tokens together.
    #[arg(long, env = "ZEDOPS_MAX_STREAMS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_streams: u32,

    /// Also run an agent for this host's Docker engine, named NAME (default: the host name).
    #[arg(long, env = "ZEDOPS_LOCAL_AGENT", num_args = 0..=1, default_missing_value = "", value_name = "NAME")]
    pub local_agent: Option<String>,

    /// Docker engine address for the local agent (default: DOCKER_HOST, else the local socket).
    #[arg(long, env = "ZEDOPS_DOCKER_HOST")]
    pub docker_host: Option<String>,

    /// Operator-defined actions from this TOML file (repeatable), for the local agent, besides
    /// <data-dir>/local-agent/actions.d/*.toml; read again on SIGHUP (docs/actions.md).
    #[arg(
        long = "actions",
        env = "ZEDOPS_ACTIONS",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub actions: Vec<std::path::PathBuf>,

    /// Home Assistant discovery for the local agent.
    #[command(flatten)]
    pub ha: HaArgs,
}

#[derive(Debug, Args)]
#[command(
    after_long_help = "Examples:\n  zedops agent --name maestro --broker mqtt://server.lan:1883\n  ZEDOPS_AGENT_NAME=maestro zedops agent"
)]
pub struct AgentArgs {
    /// This agent's name in the fleet: 1-63 of a-z, 0-9, '-', '_' (default: the enrolled name).
    #[arg(long, env = "ZEDOPS_AGENT_NAME")]
    pub name: Option<AgentName>,

    /// The MQTT 5 broker (default: the brokers the server named at enrollment, else
    /// 127.0.0.1:1883); the nodes of a cluster separated by commas, tried in turn when one is lost.
    #[arg(long, env = "ZEDOPS_BROKER", value_name = "URL[,URL…]")]
    pub broker: Option<BrokerList>,

    /// Enroll with this one-time token (from `zedops agents add NAME`) at --server, then run.
    #[arg(long, env = "ZEDOPS_ENROLL_TOKEN", hide_env_values = true)]
    pub enroll: Option<String>,

    /// Where the agent keeps its credentials and the names of the per-container topics it left
    /// retained (default $XDG_STATE_HOME/zedops-agent).
    #[arg(long, env = "ZEDOPS_STATE_DIR")]
    pub state_dir: Option<std::path::PathBuf>,

    /// Execute requests that are not signed by the server (trust the broker instead).
    #[arg(long, env = "ZEDOPS_ACCEPT_UNSIGNED")]
    pub accept_unsigned: bool,

    /// Docker engine address (default: DOCKER_HOST, else unix:///var/run/docker.sock).
    #[arg(long, env = "ZEDOPS_DOCKER_HOST")]
    pub docker_host: Option<String>,

    /// MQTT username, when the broker requires one.
    #[arg(long, env = "ZEDOPS_MQTT_USERNAME")]
    pub mqtt_username: Option<String>,

    /// MQTT password (prefer the environment variable: flags show in `ps`).
    #[arg(long, env = "ZEDOPS_MQTT_PASSWORD", hide_env_values = true)]
    pub mqtt_password: Option<String>,

    /// Full republish interval, in case a Docker event was missed (e.g. 60s, 5m).
    #[arg(long, env = "ZEDOPS_RESYNC_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub resync_interval: Duration,

    /// Longest wait between reconnection attempts to the broker.
    #[arg(long, env = "ZEDOPS_RECONNECT_MAX", default_value = "10s", value_parser = parse_duration)]
    pub reconnect_max: Duration,

    /// Publish status, snapshot and events only, not one retained topic per container: less
    /// broker work per agent, so a large fleet connects faster (docs/operations.md). Not with --ha.
    #[arg(long, env = "ZEDOPS_NO_CONTAINER_TOPICS", conflicts_with = "ha")]
    pub no_container_topics: bool,

    /// Operator-defined actions from this TOML file (repeatable), besides
    /// <state-dir>/actions.d/*.toml; read again on SIGHUP (docs/actions.md).
    #[arg(
        long = "actions",
        env = "ZEDOPS_ACTIONS",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub actions: Vec<std::path::PathBuf>,

    #[command(flatten)]
    pub ha: HaArgs,
}

#[derive(Debug, Args)]
pub struct PingArgs {
    /// The agent's name.
    pub agent: AgentName,
}

/// Home Assistant MQTT discovery (docs/home-assistant.md).
#[derive(Debug, Args)]
pub struct HaArgs {
    /// Expose containers to Home Assistant (MQTT discovery: a switch, a restart button and a
    /// state sensor per container) and accept its start/stop/restart commands.
    #[arg(long, env = "ZEDOPS_HA")]
    pub ha: bool,

    /// Home Assistant's MQTT discovery prefix.
    #[arg(long, env = "ZEDOPS_HA_PREFIX", default_value = zedops_agent::ha::DEFAULT_DISCOVERY_PREFIX, value_name = "PREFIX")]
    pub ha_prefix: String,

    /// The agent's own container (name or ID prefix of at least 12 hex digits), when it runs in
    /// one that detection cannot find; Home Assistant gets no switch to stop it.
    #[arg(long, env = "ZEDOPS_HA_OWN_CONTAINER", value_name = "CONTAINER")]
    pub ha_own_container: Option<String>,

    /// Publish the CPU and memory of every running container this often (1s to 1h, e.g. 30s) on
    /// zedops/v1/agents/NAME/stats: the server shows them on /metrics, and with --ha Home
    /// Assistant gets a CPU and a memory sensor per container.
    #[arg(long, visible_alias = "publish-stats", env = "ZEDOPS_HA_STATS", value_name = "INTERVAL", value_parser = parse_stats_interval)]
    pub ha_stats: Option<Duration>,
}

/// A `--ha-stats` interval: a duration from 1 s to 1 h.
fn parse_stats_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s).map_err(|e| e.to_string())?;
    if (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) {
        Ok(d)
    } else {
        Err(format!("{s} is out of range: use 1s to 1h"))
    }
}

impl HaArgs {
    /// The agent's Home Assistant configuration: `None` without `--ha`.
    pub fn config(
        &self,
    ) -> Result<Option<zedops_agent::HaConfig>, zedops_agent::ha::InvalidPrefix> {
        if !self.ha {
            return Ok(None);
        }
        let mut cfg = zedops_agent::HaConfig::new(self.ha_prefix.clone())?;
        cfg.own_container = self.ha_own_container.clone();
        cfg.stats = self.ha_stats.is_some();
        Ok(Some(cfg))
    }
}

/// The clap command, with each container action's verb described by its row of the action table
/// (`zedops_proto::ACTIONS`).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let verbs = zedops_proto::ACTIONS.iter().map(|spec| {
        let verb = spec.action.as_str();
        let examples = format!(
            "Examples:\n  zedops {verb} web-1 --agent maestro\n  zedops {verb} web-1 web-2      (names unique in the fleet need no --agent)"
        );
        ActionArgs::augment_args(clap::Command::new(verb))
            .about(spec.summary)
            .after_long_help(examples)
    });
    let cmd = Cli::command().subcommands(verbs);
    // Help lists the action verbs beside `inspect` and `exec`, not after `completions`.
    let mut names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .filter(|n| !zedops_proto::ACTIONS.iter().any(|a| a.action.as_str() == n))
        .collect();
    let at = names
        .iter()
        .position(|n| n == "inspect")
        .map_or(names.len(), |i| i + 1);
    let verbs = zedops_proto::ACTIONS
        .iter()
        .map(|a| a.action.as_str().to_owned());
    names.splice(at..at, verbs);
    names.iter().enumerate().fold(cmd, |cmd, (i, n)| {
        cmd.mut_subcommand(n, |s| s.display_order(i))
    })
}

/// Parses the process's arguments with [`command`].
pub fn parse() -> Result<Cli, clap::Error> {
    parse_from(std::env::args_os())
}

/// Parses `args` (the first is the program's name) with [`command`]: an action verb becomes
/// [`Command::Act`], everything else is the derived parser's.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::FromArgMatches;
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let mut cmd = command();
    if wants_top_help(&cmd, &args) {
        cmd = with_plugins_in_help(cmd);
    }
    let m = cmd.try_get_matches_from(args)?;
    let action = m.subcommand().and_then(|(verb, sub)| {
        let spec = zedops_proto::ACTIONS
            .iter()
            .find(|s| s.action.as_str() == verb)?;
        Some((spec.action, sub))
    });
    match action {
        Some((action, sub)) => Ok(Cli {
            verbose: m.get_count("verbose"),
            client: ClientOpts::from_arg_matches(&m)?,
            command: Command::Act(action, ActionArgs::from_arg_matches(sub)?),
        }),
        None => Cli::from_arg_matches(&m),
    }
}

/// A duration flag that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration: use e.g. 500ms, 10s, 5m")]
    NotANumber(String),
    #[error("{0:?} has an unknown unit: use ms, s, m or h")]
    UnknownUnit(String),
    #[error("{0:?} is out of range: use between 1ms and 7 days")]
    OutOfRange(String),
}

/// True for the top-level help (`zedops [global options] -h|--help|help`): only then are plugins
/// asked for their metadata to list them in the help.
fn wants_top_help(cmd: &clap::Command, args: &[OsString]) -> bool {
    // The top-level options that take a value as the next argument, as clap declares them.
    let mut with_value = Vec::new();
    for a in cmd
        .get_arguments()
        .filter(|a| a.get_action().takes_values())
    {
        with_value.extend(a.get_long().map(|l| format!("--{l}")));
        with_value.extend(a.get_short().map(|s| format!("-{s}")));
    }
    let mut rest = args.iter().skip(1).map(|a| a.to_str().unwrap_or_default());
    while let Some(a) = rest.next() {
        match a {
            "-h" | "--help" => return true,
            "help" => return rest.next().is_none(),
            _ if with_value.iter().any(|w| w == a) => {
                rest.next();
            }
            _ if a.starts_with('-') => {}
            _ => return false,
        }
    }
    false
}

fn with_plugins_in_help(cmd: clap::Command) -> clap::Command {
    let plugins = crate::plugins::help_section();
    if plugins.is_empty() {
        return cmd;
    }
    let long = cmd
        .get_after_long_help()
        .map(|h| format!("{h}\n\n{plugins}"))
        .unwrap_or_else(|| plugins.clone());
    cmd.after_help(plugins).after_long_help(long)
}

/// Parses `500ms`, `10s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| DurationError::NotANumber(s.to_owned()))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(DurationError::UnknownUnit(s.to_owned())),
    };
    if !(0.001..=86_400.0 * 7.0).contains(&secs) {
        return Err(DurationError::OutOfRange(s.to_owned()));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_of_the_table_is_a_verb() {
        let cmd = command();
        for spec in &zedops_proto::ACTIONS {
            let verb = spec.action.as_str();
            let sc = cmd
                .find_subcommand(verb)
                .unwrap_or_else(|| panic!("no verb {verb}"));
            assert_eq!(
                sc.get_about().map(|a| a.to_string()),
                Some(spec.summary.to_owned())
            );
            let cli = parse_from(["zedops", verb, "web-1", "-v", "--agent", "m"]).unwrap();
            assert_eq!(cli.verbose, 1);
            let Command::Act(action, args) = cli.command else {
                panic!("{verb} is not an action");
            };
            assert_eq!(action, spec.action);
            assert_eq!(args.containers, ["web-1"]);
            assert_eq!(args.agent.map(|a| a.to_string()).as_deref(), Some("m"));
        }
    }

    #[test]
    fn top_level_help_is_recognised_past_global_options() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let c = command();
        let help = |v: &[&str]| wants_top_help(&c, &a(v));
        assert!(help(&["zedops", "--help"]));
        assert!(help(&["zedops", "--server", "http://x", "-h"]));
        assert!(help(&["zedops", "-o", "json", "--help"]));
        assert!(help(&["zedops", "-v", "help"]));
        assert!(!help(&["zedops", "--server", "help", "ps"]));
        assert!(!help(&["zedops", "help", "ps"]));
        assert!(!help(&["zedops", "ps", "--help"]));
        assert!(!help(&["zedops", "ps"]));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
