//! Runs a parsed command by calling the libraries.

use anyhow::Context;
use tracing::info;
use zedops_agent::{AgentConfig, DockerTarget};
use zedops_broker::BrokerConfig;
use zedops_proto::{AgentName, BrokerUrl};

use crate::args::{AgentArgs, Cli, Command, ServeArgs};
use crate::exit::Exit;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Agent(a) => agent(a).await,
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    info!("shutdown requested");
}

fn default_agent_name() -> Result<AgentName, Exit> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let cleaned: String = host
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let cleaned = cleaned.trim_start_matches(['-', '_']).to_owned();
    AgentName::new(if cleaned.is_empty() {
        "local".to_owned()
    } else {
        cleaned
    })
    .map_err(|e| Exit::usage(format!("{e}; pass --local-agent NAME")))
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let broker = zedops_broker::start(BrokerConfig {
        v5_listen: a.mqtt_listen,
        v4_listen: (!a.no_mqtt311).then_some(a.mqtt311_listen),
        ..BrokerConfig::default()
    })
    .await
    .map_err(|e| Exit::new(crate::exit::ERROR, e.to_string()))?;
    let v5 = broker.v5_addr();
    println!("zedops serve: MQTT 5 broker on {v5}");
    if let Some(v4) = broker.v4_addr() {
        println!("zedops serve: MQTT 3.1.1 broker on {v4}");
    }

    let mut agent_task = None;
    let (stop_agent_tx, stop_agent_rx) = tokio::sync::oneshot::channel::<()>();
    if let Some(name) = a.local_agent {
        let name = if name.is_empty() {
            default_agent_name()?
        } else {
            AgentName::new(name).map_err(|e| Exit::usage(e.to_string()))?
        };
        let mut loopback = v5;
        if loopback.ip().is_unspecified() {
            loopback.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let url = BrokerUrl {
            host: loopback.ip().to_string(),
            port: loopback.port(),
            tls: false,
        };
        let mut cfg = AgentConfig::new(name.clone(), url);
        cfg.docker = DockerTarget {
            host: a.docker_host,
        };
        println!(
            "zedops serve: local agent {name} serving {}",
            cfg.docker.describe()
        );
        agent_task = Some(tokio::spawn(zedops_agent::run(cfg, async move {
            let _ = stop_agent_rx.await;
        })));
    }

    shutdown_signal().await;
    let _ = stop_agent_tx.send(());
    if let Some(t) = agent_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    tokio::task::spawn_blocking(move || broker.stop())
        .await
        .context("stopping the broker")?;
    Ok(())
}

async fn agent(a: AgentArgs) -> anyhow::Result<()> {
    let mut cfg = AgentConfig::new(a.name, a.broker);
    cfg.docker = DockerTarget {
        host: a.docker_host,
    };
    cfg.resync_interval = a.resync_interval;
    cfg.reconnect_max = a.reconnect_max;
    match (a.mqtt_username, a.mqtt_password) {
        (Some(u), Some(p)) => cfg.credentials = Some((u, p)),
        (Some(u), None) => cfg.credentials = Some((u, String::new())),
        (None, Some(_)) => return Err(Exit::usage("--mqtt-password needs --mqtt-username").into()),
        (None, None) => {}
    }
    info!(config = ?cfg, "effective configuration");
    zedops_agent::run(cfg, shutdown_signal()).await?;
    Ok(())
}
