//! Command-line arguments. Every option has an environment fallback (`ZEDOPS_*`); flags win over
//! the environment, which wins over defaults.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use zedops_proto::{AgentName, BrokerUrl};

/// zedops: control Docker containers across a fleet of hosts over MQTT 5.
#[derive(Debug, Parser)]
#[command(name = "zedops", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: the embedded MQTT broker (and, with --local-agent, an agent for this host).
    Serve(ServeArgs),
    /// Run an agent: serve this host's Docker engine to the fleet over MQTT.
    Agent(AgentArgs),
    /// Print the OpenAPI document of the HTTP API (or write or check a file).
    Openapi(OpenapiArgs),
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

    /// Server data dir: tokens, audit log (default $XDG_DATA_HOME/zedops, else ~/.local/share/zedops).
    #[arg(long, env = "ZEDOPS_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// Run the API without tokens: anyone who reaches it is admin. Only for a trusted loopback.
    #[arg(long, env = "ZEDOPS_NO_AUTH")]
    pub no_auth: bool,

    /// Use this external MQTT 5 broker instead of the embedded one (e.g. mqtt://broker.lan:1883).
    #[arg(long, env = "ZEDOPS_BROKER")]
    pub broker: Option<BrokerUrl>,

    /// MQTT 5 listener of the embedded broker.
    #[arg(long, env = "ZEDOPS_MQTT_LISTEN", default_value = "0.0.0.0:1883")]
    pub mqtt_listen: SocketAddr,

    /// MQTT 3.1.1 compatibility listener (Home Assistant and other 3.1.1 clients).
    #[arg(long, env = "ZEDOPS_MQTT311_LISTEN", default_value = "0.0.0.0:1884")]
    pub mqtt311_listen: SocketAddr,

    /// Do not open the MQTT 3.1.1 listener.
    #[arg(long)]
    pub no_mqtt311: bool,

    /// Also run an agent for this host's Docker engine, named NAME (default: the host name).
    #[arg(long, env = "ZEDOPS_LOCAL_AGENT", num_args = 0..=1, default_missing_value = "", value_name = "NAME")]
    pub local_agent: Option<String>,

    /// Docker engine address for the local agent (default: DOCKER_HOST, else the local socket).
    #[arg(long, env = "ZEDOPS_DOCKER_HOST")]
    pub docker_host: Option<String>,
}

#[derive(Debug, Args)]
#[command(
    after_long_help = "Examples:\n  zedops agent --name maestro --broker mqtt://server.lan:1883\n  ZEDOPS_AGENT_NAME=maestro zedops agent"
)]
pub struct AgentArgs {
    /// This agent's name in the fleet: 1-63 of a-z, 0-9, '-', '_'.
    #[arg(long, env = "ZEDOPS_AGENT_NAME")]
    pub name: AgentName,

    /// The MQTT 5 broker to connect to.
    #[arg(long, env = "ZEDOPS_BROKER", default_value = "mqtt://127.0.0.1:1883")]
    pub broker: BrokerUrl,

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
}

/// Parses `500ms`, `10s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: use e.g. 500ms, 10s, 5m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?} has an unknown unit: use ms, s, m or h")),
    };
    if !(0.001..=86_400.0 * 7.0).contains(&secs) {
        return Err(format!("{s:?} is out of range: use between 1ms and 7 days"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

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
