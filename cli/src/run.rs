//! Runs a parsed command by calling the libraries.

use anyhow::Context;
use tracing::{debug, info};
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
    // Server state: tokens, agents, audit, and the server's signing key.
    let data_dir = a.data_dir.clone().unwrap_or_else(crate::paths::data_dir);
    let (store, admin_token_file, security) = if a.no_auth {
        (None, None, None)
    } else {
        let dir = data_dir.clone();
        let store = zedops_api::store::Store::open(&dir)
            .map_err(|e| Exit::new(crate::exit::ERROR, e.to_string()))?;
        let file = crate::paths::ensure_admin_token(&store, &dir)?;
        let key = crate::paths::server_key(&dir)?;
        let store = std::sync::Arc::new(store);
        let security = std::sync::Arc::new(zedops_api::security::Security::new(key, store.clone()));
        (Some(store), Some(file), Some(security))
    };
    // The API's own MQTT identity (per process; never leaves it).
    let internal_user = "zedops-api".to_owned();
    let internal_password = crate::enroll::new_keypair().seed_hex();
    let tls_files = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(zedops_broker::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let https = match &tls_files {
        Some(t) => Some((
            std::fs::read(&t.cert).map_err(|e| {
                Exit::usage(format!("cannot read --tls-cert {}: {e}", t.cert.display()))
            })?,
            std::fs::read(&t.key).map_err(|e| {
                Exit::usage(format!("cannot read --tls-key {}: {e}", t.key.display()))
            })?,
        )),
        None => None,
    };
    // The broker: embedded unless --broker names an external one. With a store, every MQTT
    // connection authenticates: the API, enrolled agents (only with their own client id), and
    // integration users.
    let (broker, url) = match a.broker.clone() {
        Some(url) => (None, url),
        None => {
            let auth = store.clone().map(|st| {
                let (iu, ip) = (internal_user.clone(), internal_password.clone());
                zedops_broker::Authenticator(std::sync::Arc::new(
                    move |client_id: &str, user: &str, pass: &str| {
                        use zedops_broker::Identity;
                        if user == iu {
                            let ok = pass == ip && client_id.starts_with("zedops-api-");
                            return ok.then_some(Identity::Trusted);
                        }
                        if client_id.starts_with("zedops-agent-") || st.agent(user).is_some() {
                            let ok = client_id == format!("zedops-agent-{user}")
                                && st.check_agent_password(user, pass);
                            return ok.then(|| Identity::Agent(user.to_owned()));
                        }
                        if client_id.starts_with("zedops-api") {
                            return None;
                        }
                        st.check_mqtt_user(user, pass).map(|u| Identity::User {
                            name: u.name,
                            ha_commands: u.ha_commands,
                        })
                    },
                ))
            });
            let b = zedops_broker::start(BrokerConfig {
                auth,
                v5_listen: a.mqtt_addr(a.mqtt_listen, 1883),
                v4_listen: (!a.no_mqtt311).then(|| a.mqtt_addr(a.mqtt311_listen, 1884)),
                tls: tls_files.clone(),
                ..BrokerConfig::default()
            })
            .await
            .map_err(|e| Exit::new(crate::exit::ERROR, e.to_string()))?;
            // In-process clients (API, local agent) use the plain loopback listener.
            let local = b.local_plain_addr().unwrap_or_else(|| b.v5_addr());
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
    let embedded = broker.is_some();
    let api = zedops_api::Api::connect_secured(
        zedops_api::MqttConfig {
            broker: url.clone(),
            credentials: (embedded && store.is_some())
                .then(|| (internal_user.clone(), internal_password.clone())),
            client_id: None,
            tls_ca: None,
        },
        store.clone(),
        security.clone(),
        zedops_api::admission::Limits {
            requests_per_token: a.max_requests_per_token as usize,
            streams_per_token: a.max_streams_per_token as usize,
            streams: a.max_streams as usize,
        },
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
        cfg.state_dir = Some(data_dir.join("local-agent"));
        if let (Some(st), Some(sec)) = (&store, &security) {
            // The local agent enrolls itself, through the same one-time token path.
            let key = crate::enroll::new_keypair();
            let fingerprint = sec.key.public().fingerprint();
            let (token, _) = st
                .register_agent(
                    name.as_str(),
                    chrono::Duration::minutes(5),
                    Some(&fingerprint),
                )
                .map_err(|e| Exit::new(crate::exit::ERROR, e.to_string()))?;
            let creds = st
                .enroll(name.as_str(), &token, &key.public_hex())
                .map_err(|e| Exit::new(crate::exit::ERROR, e.to_string()))?;
            sec.forget(name.as_str());
            cfg.credentials = Some((creds.mqtt_username, creds.mqtt_password));
            cfg.signing = Some(zedops_agent::Signing {
                key,
                server: sec.key.public(),
            });
        }
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

    let base = format!(
        "{}://{http}",
        if https.is_some() { "https" } else { "http" }
    );
    let mqtt_scheme = if tls_files.is_some() { "mqtts" } else { "mqtt" };
    println!("zedops {} is running", zedops_proto::VERSION);
    match &broker {
        Some(b) => {
            print!("  MQTT broker   {mqtt_scheme}://{} (MQTT 5)", b.v5_addr());
            match b.v4_addr() {
                Some(v4) => println!(", {mqtt_scheme}://{v4} (MQTT 3.1.1)"),
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
        None => {
            println!("  Auth          OFF (--no-auth): anyone who reaches {base} is admin");
            println!("                and MQTT is anonymous: its listeners stay on loopback unless --mqtt-listen names another address");
        }
    }
    // As the user invoked it: `zedops` on PATH, or ./target/release/zedops from a checkout.
    let me = std::env::args().next().unwrap_or_else(|| "zedops".into());
    println!("Next: {me} ps   (or {me} --server {base} ps from elsewhere; Ctrl-C stops)");

    let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let http_task = tokio::spawn(zedops_api::serve_tls(
        api.app(),
        listener,
        https,
        async move {
            let _ = stop_http_rx.await;
        },
    ));

    shutdown_signal().await;
    let _ = stop_agent_tx.send(());
    if let Some(t) = agent_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    debug!("local agent stopped");
    api.close_streams();
    let _ = stop_http_tx.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(6), http_task).await;
    debug!("HTTP server stopped");
    api.disconnect().await;
    debug!("API disconnected from the broker");
    if let Some(b) = broker {
        tokio::task::spawn_blocking(move || b.stop())
            .await
            .context("stopping the broker")?;
        debug!("broker stopped");
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

async fn agent(a: AgentArgs, client: &crate::args::ClientOpts) -> anyhow::Result<()> {
    let state_dir = a.state_dir.clone().unwrap_or_else(crate::paths::state_dir);
    let creds = match &a.enroll {
        Some(token) => {
            let Some(server) = client.server.clone() else {
                return Err(Exit::usage(
                    "--enroll needs --server URL (the zedops server that issued the token)",
                )
                .into());
            };
            let name = match (&a.name, zedops_proto::enrollment::agent_of(token)) {
                (Some(n), _) => n.to_string(),
                (None, Some(n)) => n.to_owned(),
                (None, None) => return Err(Exit::usage("--enroll needs --name NAME").into()),
            };
            Some(
                crate::enroll::enroll(&server, &name, token, &state_dir, client.ca_file.as_deref())
                    .await?,
            )
        }
        None => crate::enroll::Credentials::load(&state_dir)?,
    };
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
    let broker = a
        .broker
        .clone()
        .or_else(|| {
            creds
                .as_ref()
                .and_then(|c| crate::enroll::broker_from_server(&c.server))
        })
        .unwrap_or(BrokerUrl {
            host: "127.0.0.1".into(),
            port: 1883,
            tls: false,
        });
    let mut cfg = AgentConfig::new(name, broker);
    if let Some(c) = &creds {
        cfg.credentials = Some((c.mqtt_username.clone(), c.mqtt_password.clone()));
        cfg.signing = Some(c.signing()?);
    }
    cfg.accept_unsigned = a.accept_unsigned;
    cfg.container_topics = !a.no_container_topics;
    cfg.state_dir = Some(state_dir.clone());
    if let Some(ca) = &client.ca_file {
        cfg.tls_ca =
            Some(std::fs::read(ca).map_err(|e| {
                Exit::usage(format!("cannot read --ca-file {}: {e}", ca.display()))
            })?);
    }
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
