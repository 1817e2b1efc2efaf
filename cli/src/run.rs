//! Runs a parsed command by calling the libraries.

use anyhow::Context;
use tracing::info;
use zedops_agent::{AgentConfig, DockerTarget};
use zedops_broker::BrokerConfig;
use zedops_proto::{AgentName, BrokerUrl};

use crate::args::{AgentArgs, Cli, Command, OpenapiArgs, ServeArgs};
use crate::exit::Exit;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    use crate::commands as c;
    let o = &cli.client;
    match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Agent(a) => agent(a).await,
        Command::Openapi(a) => openapi(a),
        Command::Agents => c::agents(o).await,
        Command::Ps(a) => c::ps(o, &a).await,
        Command::Inspect(a) => c::inspect(o, &a).await,
        Command::Start(a) => c::action(o, "start", &a).await,
        Command::Stop(a) => c::action(o, "stop", &a).await,
        Command::Restart(a) => c::action(o, "restart", &a).await,
        Command::Kill(a) => c::action(o, "kill", &a).await,
        Command::Pause(a) => c::action(o, "pause", &a).await,
        Command::Unpause(a) => c::action(o, "unpause", &a).await,
        Command::Logs(a) => c::logs(o, &a).await,
        Command::Events => c::events(o).await,
        Command::Login(a) => c::login(o, &a).await,
        Command::Token(t) => c::token(o, &t).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "zedops", &mut std::io::stdout());
            Ok(())
        }
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
    // The broker: embedded unless --broker names an external one.
    let (broker, url) = match a.broker.clone() {
        Some(url) => (None, url),
        None => {
            let b = zedops_broker::start(BrokerConfig {
                v5_listen: a.mqtt_listen,
                v4_listen: (!a.no_mqtt311).then_some(a.mqtt311_listen),
                ..BrokerConfig::default()
            })
            .await
            .map_err(|e| Exit::new(crate::exit::ERROR, e.to_string()))?;
            let mut local = b.v5_addr();
            if local.ip().is_unspecified() {
                local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let url = BrokerUrl {
                host: local.ip().to_string(),
                port: local.port(),
                tls: false,
            };
            (Some(b), url)
        }
    };

    let listener = tokio::net::TcpListener::bind(a.listen).await.map_err(|e| {
        Exit::new(
            crate::exit::ERROR,
            format!(
                "cannot listen for HTTP on {}: {e} (choose another address with --listen)",
                a.listen
            ),
        )
    })?;
    let http = listener.local_addr()?;
    let (store, admin_token_file) = if a.no_auth {
        (None, None)
    } else {
        let dir = a.data_dir.clone().unwrap_or_else(crate::paths::data_dir);
        let store = zedops_api::store::Store::open(&dir)
            .map_err(|e| Exit::new(crate::exit::ERROR, e.to_string()))?;
        let file = crate::paths::ensure_admin_token(&store, &dir)?;
        (Some(std::sync::Arc::new(store)), Some(file))
    };
    let api = zedops_api::Api::connect(
        zedops_api::MqttConfig {
            broker: url.clone(),
            credentials: None,
            client_id: None,
        },
        store,
    );

    let mut agent_task = None;
    let (stop_agent_tx, stop_agent_rx) = tokio::sync::oneshot::channel::<()>();
    let mut agent_line = None;
    if a.ha.ha && a.local_agent.is_none() {
        tracing::warn!(
            "--ha applies to the local agent: add --local-agent, or pass --ha to `zedops agent`"
        );
    }
    if let Some(name) = a.local_agent {
        let name = if name.is_empty() {
            default_agent_name()?
        } else {
            AgentName::new(name).map_err(|e| Exit::usage(e.to_string()))?
        };
        let mut cfg = AgentConfig::new(name.clone(), url.clone());
        cfg.docker = DockerTarget {
            host: a.docker_host,
        };
        cfg.ha = a.ha.config().map_err(Exit::usage)?;
        agent_line = Some(format!(
            "local agent {name} serving Docker at {}",
            cfg.docker.describe()
        ));
        agent_task = Some(tokio::spawn(zedops_agent::run(cfg, async move {
            let _ = stop_agent_rx.await;
        })));
    }

    let base = format!("http://{http}");
    println!("zedops {} is running", zedops_proto::VERSION);
    match &broker {
        Some(b) => {
            print!("  MQTT broker   mqtt://{} (MQTT 5)", b.v5_addr());
            match b.v4_addr() {
                Some(v4) => println!(", mqtt://{v4} (MQTT 3.1.1)"),
                None => println!(),
            }
        }
        None => println!("  MQTT broker   {url} (external)"),
    }
    println!("  HTTP API      {base}/api/v1/agents");
    println!("  API docs      {base}/docs");
    println!("  Dashboard     {base}/");
    if let Some(l) = &agent_line {
        println!("  Agent         {l}");
    }
    match &admin_token_file {
        Some(f) => println!(
            "  Admin token   {} (mode 0600; the CLI on this host reads it by itself)",
            f.display()
        ),
        None => println!("  Auth          OFF (--no-auth): anyone who reaches {base} is admin"),
    }
    println!("Next: zedops ps   (or zedops --server {base} ps from elsewhere; Ctrl-C stops)");

    let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let http_task = tokio::spawn(zedops_api::serve(api.app(), listener, async move {
        let _ = stop_http_rx.await;
    }));

    shutdown_signal().await;
    let _ = stop_agent_tx.send(());
    if let Some(t) = agent_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    let _ = stop_http_tx.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(6), http_task).await;
    api.disconnect().await;
    if let Some(b) = broker {
        tokio::task::spawn_blocking(move || b.stop())
            .await
            .context("stopping the broker")?;
    }
    Ok(())
}

fn openapi(a: OpenapiArgs) -> anyhow::Result<()> {
    let doc = zedops_api::openapi_json();
    if let Some(path) = a.write {
        std::fs::write(&path, format!("{doc}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
        return Ok(());
    }
    if let Some(path) = a.check {
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk.trim_end() != doc.trim_end() {
            return Err(Exit::new(
                crate::exit::ERROR,
                format!(
                    "{} is out of date with the code; regenerate it with: cargo run --bin zedops -- openapi --write {}",
                    path.display(),
                    path.display()
                ),
            )
            .into());
        }
        return Ok(());
    }
    println!("{doc}");
    Ok(())
}

async fn agent(a: AgentArgs) -> anyhow::Result<()> {
    let mut cfg = AgentConfig::new(a.name, a.broker);
    cfg.docker = DockerTarget {
        host: a.docker_host,
    };
    cfg.resync_interval = a.resync_interval;
    cfg.reconnect_max = a.reconnect_max;
    cfg.ha = a.ha.config().map_err(Exit::usage)?;
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
