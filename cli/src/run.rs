//! Runs a parsed command by calling the libraries.

use anyhow::Context;
use tracing::info;
use zedops_agent::{AgentConfig, DockerTarget};
use zedops_proto::{AgentName, BrokerList, BrokerUrl};

use crate::args::{AgentArgs, Cli, Command, OpenapiArgs, ServeArgs};
use crate::exit::Exit;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    use crate::commands as c;
    let o = &cli.client;
    match cli.command {
        Command::Serve(a) => serve(*a).await,
        Command::Agent(a) => agent(a, o).await,
        Command::Openapi(a) => openapi(a),
        Command::Agents(a) => match &a.command {
            None => c::agents(o).await,
            Some(cmd) => c::agents_admin(o, cmd).await,
        },
        Command::MqttUser(cmd) => c::mqtt_user(o, &cmd).await,
        Command::Ps(a) => c::ps(o, &a).await,
        Command::Ping(a) => c::ping(o, &a).await,
        Command::Inspect(a) => c::inspect(o, &a).await,
        Command::Act(action, a) => c::action(o, action, &a).await,
        Command::Logs(a) => c::logs(o, &a).await,
        Command::Stats(a) => c::stats(o, &a).await,
        Command::Exec(a) => c::exec(o, &a).await,
        Command::Actions(a) => c::actions(o, &a).await,
        Command::Run(a) => c::run_action(o, &a).await,
        Command::Plugins => {
            crate::plugins::print_list(o);
            Ok(())
        }
        Command::Plugin(args) => crate::plugins::run(o, &args),
        Command::Events => c::events(o).await,
        Command::Login(a) => c::login(o, &a).await,
        Command::Token(t) => c::token(o, &t).await,
        Command::Completions { shell } => {
            let mut cmd = crate::args::command();
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

/// `zedops serve`: flags to a [`zedops_server::ServeConfig`], then the server library.
async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    if a.ha.ha && a.local_agent.is_none() {
        tracing::warn!(
            "--ha applies to the local agent: add --local-agent, or pass --ha to `zedops agent`"
        );
    }
    let cfg = a.config()?;
    let server = zedops_server::start(cfg).await.map_err(|e| {
        let code = if e.is_config() {
            crate::exit::USAGE
        } else {
            crate::exit::ERROR
        };
        Exit::new(code, e.to_string())
    })?;
    // As the user invoked it: `zedops` on PATH, or ./target/release/zedops from a checkout.
    let me = std::env::args().next().unwrap_or_else(|| "zedops".into());
    println!("{}", server.banner(&me));
    shutdown_signal().await;
    server.stop().await;
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

async fn agent(a: AgentArgs, client: &crate::args::ClientOpts) -> anyhow::Result<()> {
    let state_dir = a.state_dir.clone().unwrap_or_else(crate::paths::state_dir);
    let creds = crate::enroll::credentials(&a, client, &state_dir).await?;
    let name = match (&a.name, &creds) {
        (Some(n), Some(c)) if n.as_str() != c.name => {
            return Err(Exit::usage(format!(
                "--name {n} differs from the enrolled name {} in {}",
                c.name,
                crate::enroll::Credentials::file(&state_dir).display()
            ))
            .into())
        }
        (Some(n), _) => n.clone(),
        (None, Some(c)) => {
            AgentName::new(c.name.clone()).map_err(|e| Exit::usage(e.to_string()))?
        }
        (None, None) => {
            return Err(Exit::usage(
                "give the agent a --name (or enroll it with --enroll TOKEN --server URL)",
            )
            .into())
        }
    };
    let brokers = a
        .broker
        .clone()
        .or_else(|| creds.as_ref().and_then(crate::enroll::Credentials::brokers))
        .unwrap_or_else(|| {
            BrokerList::from(BrokerUrl {
                host: "127.0.0.1".into(),
                port: 1883,
                tls: false,
            })
        });
    let (broker, fallbacks) = brokers.split();
    let mut cfg = AgentConfig::new(name, broker);
    cfg.fallback_brokers = fallbacks;
    if let Some(c) = &creds {
        cfg.credentials = Some((c.mqtt_username.clone(), c.mqtt_password.clone()));
        cfg.signing = Some(c.signing()?);
    }
    cfg.accept_unsigned = a.accept_unsigned;
    cfg.container_topics = !a.no_container_topics;
    cfg.state_dir = Some(state_dir.clone());
    cfg.action_files = a.actions.clone();
    if let Some(ca) = &client.ca_file {
        cfg.tls.ca =
            Some(std::fs::read(ca).map_err(|e| {
                Exit::usage(format!("cannot read --ca-file {}: {e}", ca.display()))
            })?);
    }
    cfg.docker = DockerTarget {
        host: a.docker_host,
    };
    cfg.resync_interval = a.resync_interval;
    cfg.reconnect_max = a.reconnect_max;
    cfg.ha = a.ha.config().map_err(|e| Exit::usage(e.to_string()))?;
    cfg.stats_interval = a.ha.ha_stats;
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
