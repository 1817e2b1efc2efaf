//! The client commands: each calls the HTTP API through the typed client (`zedops-client`) and
//! prints a table or JSON.

use std::io::Write;
use std::time::Duration;

use chrono::Utc;
use zedops_client::{
    ActionOptions, Client, ClientError, Container, EventKind, FleetEvent, ListOptions, NewAgent,
    NewMqttUser, NewToken,
};
use zedops_proto::http::MAX_TIMEOUT_S;
use zedops_proto::DockerAvailability;

use crate::args::{
    ActionArgs, AgentsCommand, ClientOpts, ExecCmdArgs, LoginArgs, LogsArgs, MqttUserCommand,
    OneContainer, Output, PingArgs, PsArgs, TokenCommand,
};
use crate::client::{connect, ClientConfig};
use crate::exit::{self, Exit};
use crate::output::{ago, color, paint_state, print_json, table, OnAgent};

fn client(o: &ClientOpts) -> Result<Client, ClientError> {
    connect(o.server.clone(), o.token.clone(), o.ca_file.as_deref())
}

pub async fn agents(o: &ClientOpts) -> anyhow::Result<()> {
    let list = client(o)?.agents().await?;
    if o.output == Output::Json {
        print_json(&list);
        return Ok(());
    }
    let now = Utc::now();
    let col = color();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            let state = if a.online { "online" } else { "offline" };
            let docker = match &a.docker {
                Some(d) if d.state == DockerAvailability::Available => {
                    d.version.clone().unwrap_or_else(|| "available".into())
                }
                Some(_) => "unavailable".into(),
                None => "-".into(),
            };
            vec![
                a.name.clone(),
                paint_state(state, col),
                a.hostname.clone().unwrap_or_else(|| "-".into()),
                docker,
                format!("{}/{}", a.counts.running, a.counts.total),
                ago(a.last_seen, now),
            ]
        })
        .collect();
    let headers = ["AGENT", "STATE", "HOST", "DOCKER", "RUNNING", "LAST SEEN"];
    print!("{}", table(&headers, &rows));
    Ok(())
}

fn ports(c: &Container) -> String {
    c.ports
        .iter()
        .map(|p| match p.public_port {
            Some(public) => format!("{public}->{}/{}", p.private_port, p.protocol),
            None => format!("{}/{}", p.private_port, p.protocol),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The containers `ps` shows, with their agents.
async fn ps_rows(c: &Client, a: &PsArgs) -> Result<Vec<(String, Container)>, ClientError> {
    let rows: Vec<(String, Container)> = match &a.agent {
        Some(agent) => c
            .containers(agent.as_str(), &ListOptions::default())
            .await?
            .containers
            .into_iter()
            .map(|x| (agent.to_string(), x))
            .collect(),
        None => c
            .search(None, false)
            .await?
            .into_iter()
            .map(|r| (r.agent, r.container))
            .collect(),
    };
    Ok(rows
        .into_iter()
        .filter(|(_, c)| a.all || c.state.is_active())
        .collect())
}

pub async fn ps(o: &ClientOpts, a: &PsArgs) -> anyhow::Result<()> {
    let rows = ps_rows(&client(o)?, a).await?;
    if o.output == Output::Json {
        let out: Vec<OnAgent<Container>> = rows
            .iter()
            .map(|(agent, value)| OnAgent { agent, value })
            .collect();
        print_json(&out);
        return Ok(());
    }
    let now = Utc::now();
    let col = color();
    let with_agent = a.agent.is_none();
    let mut headers = vec![];
    if with_agent {
        headers.push("AGENT");
    }
    headers.extend(["NAME", "IMAGE", "STATE", "STATUS", "PORTS", "CREATED"]);
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(agent, c)| {
            let mut r = vec![];
            if with_agent {
                r.push(agent.clone());
            }
            r.extend([
                c.name.clone(),
                c.image.clone(),
                paint_state(c.state.as_str(), col),
                c.status.clone(),
                ports(c),
                ago(c.created_at, now),
            ]);
            r
        })
        .collect();
    print!("{}", table(&headers, &table_rows));
    Ok(())
}

/// Finds the agent of a container when `--agent` is absent: the name (or ID prefix) must match on
/// exactly one agent.
async fn resolve_agent(
    c: &Client,
    container: &str,
    agent: Option<&zedops_proto::AgentName>,
) -> anyhow::Result<String> {
    if let Some(a) = agent {
        return Ok(a.to_string());
    }
    match c.locate(container).await?.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Exit::new(
            exit::NOT_FOUND,
            format!("no container named {container} on any agent (see `zedops ps -a`)"),
        )
        .into()),
        many => Err(Exit::usage(format!(
            "{container} is on several agents: {}; pick one with --agent",
            many.join(", ")
        ))
        .into()),
    }
}

pub async fn ping(o: &ClientOpts, a: &PingArgs) -> anyhow::Result<()> {
    let p = client(o)?.ping(a.agent.as_str(), None).await?;
    if o.output == Output::Json {
        print_json(&p);
        return Ok(());
    }
    let d = &p.pong.docker;
    let docker = match d.state {
        DockerAvailability::Available => {
            format!("Docker {}", d.version.as_deref().unwrap_or("available"))
        }
        DockerAvailability::Unavailable => format!(
            "Docker unavailable: {}",
            d.error.as_deref().unwrap_or("unknown reason")
        ),
    };
    println!(
        "{} answered in {:.1} ms (zedops {}, {docker})",
        p.pong.agent, p.round_trip_ms, p.pong.version,
    );
    Ok(())
}

pub async fn inspect(o: &ClientOpts, a: &OneContainer) -> anyhow::Result<()> {
    let c = client(o)?;
    let agent = resolve_agent(&c, &a.container, a.agent.as_ref()).await?;
    print_json(&c.inspect(&agent, &a.container, None).await?);
    Ok(())
}

/// The options of an action from its flags; `--timeout` in whole seconds, within the API's bound.
fn action_options(a: &ActionArgs) -> Result<ActionOptions, Exit> {
    let timeout_s = match a.timeout {
        None => None,
        Some(t) if t >= Duration::from_secs(1) && t.as_secs() <= MAX_TIMEOUT_S.into() => {
            Some(t.as_secs() as u32)
        }
        Some(_) => {
            return Err(Exit::usage(format!(
                "--timeout must be between 1s and {MAX_TIMEOUT_S}s"
            )))
        }
    };
    Ok(ActionOptions {
        grace_s: a.grace,
        signal: a.signal.clone(),
        timeout_s,
    })
}

pub async fn action(
    o: &ClientOpts,
    action: zedops_proto::Action,
    a: &ActionArgs,
) -> anyhow::Result<()> {
    let c = &client(o)?;
    let opts = &action_options(a)?;
    // All containers at once; results printed in the order given.
    let results = futures_util::future::join_all(a.containers.iter().map(|name| async move {
        let agent = resolve_agent(c, name, a.agent.as_ref()).await?;
        let r = c.act(&agent, name, action, opts).await?;
        Ok::<_, anyhow::Error>((agent, r))
    }))
    .await;
    let mut worst: Option<anyhow::Error> = None;
    let mut out = Vec::new();
    for (name, r) in a.containers.iter().zip(&results) {
        match r {
            Ok((agent, value)) if o.output == Output::Json => out.push(OnAgent { agent, value }),
            Ok((_, r)) => {
                let note = if r.changed { "" } else { " (no change)" };
                println!("{name}{note}");
            }
            Err(e) => {
                eprintln!("zedops: {action} {name}: {}", exit::message_of(e));
                worst = Some(Exit::new(exit::code_of(e), String::new()).into());
            }
        }
    }
    if o.output == Output::Json {
        print_json(&out);
    }
    match worst {
        // Already printed: carry only the exit code.
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub async fn logs(o: &ClientOpts, a: &LogsArgs) -> anyhow::Result<()> {
    let c = client(o)?;
    let agent = resolve_agent(&c, &a.container, a.agent.as_ref()).await?;
    crate::logs::logs(&c, o, a, &agent).await
}

/// `zedops exec`: the command's output on stdout and stderr as it wrote them, and its exit code
/// as zedops' (5 when it was killed at its deadline).
pub async fn exec(o: &ClientOpts, a: &ExecCmdArgs) -> anyhow::Result<()> {
    let c = client(o)?;
    let agent = resolve_agent(&c, &a.container, a.agent.as_ref()).await?;
    let req = zedops_proto::http::ExecRequest {
        cmd: a.cmd.clone(),
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        env: a.env.clone(),
        timeout_s: crate::args::whole_seconds(a.timeout),
    };
    let r = c.exec(&agent, &a.container, &req).await?;
    crate::actions::finish(o, &r)
}

pub async fn stats(o: &ClientOpts, a: &crate::args::StatsArgs) -> anyhow::Result<()> {
    crate::stats::stats(&client(o)?, o, a).await
}

pub async fn actions(o: &ClientOpts, a: &crate::args::ActionsArgs) -> anyhow::Result<()> {
    crate::actions::list(&client(o)?, o, a).await
}

pub async fn run_action(o: &ClientOpts, a: &crate::args::RunArgs) -> anyhow::Result<()> {
    crate::actions::run(&client(o)?, o, a).await
}

/// One event as `zedops events` prints it.
fn event_line(v: &FleetEvent, col: bool) -> String {
    let time = v.time.format("%Y-%m-%d %H:%M:%S");
    let state = paint_state(v.state.as_deref().unwrap_or_default(), col);
    let container = v.container.as_deref().unwrap_or_default();
    let action = v.action.as_deref().unwrap_or_default();
    let line = match v.kind {
        EventKind::Agent => format!("agent {} {state}", v.agent),
        EventKind::Container => {
            format!("container {}/{container} {action} → {state}", v.agent)
        }
        EventKind::Action => {
            let outcome = match (&v.ok, &v.error) {
                (Some(true), _) => "ok".to_owned(),
                (_, Some(e)) => format!("failed: {}", e.message),
                // An operator-defined action that ran and exited non-zero.
                (_, None) => "failed".to_owned(),
            };
            let on = match v.container.as_deref() {
                Some(c) => format!("{}/{c}", v.agent),
                None => v.agent.clone(),
            };
            format!("action {action} {on} {outcome}")
        }
    };
    format!("{time}  {line}")
}

pub async fn events(o: &ClientOpts) -> anyhow::Result<()> {
    let c = client(o)?;
    let mut stream = c.events().await?;
    let col = color();
    loop {
        let ev = tokio::select! {
            e = stream.next() => e,
            _ = crate::run::shutdown_signal() => return Ok(()),
        };
        let ev = match ev {
            None => {
                let closed = format!("{} closed the event stream", c.server());
                return Err(Exit::new(exit::ERROR, closed).into());
            }
            Some(Err(e @ ClientError::Decode { .. })) => {
                eprintln!("zedops: skipped an event: {e}");
                continue;
            }
            Some(e) => e?,
        };
        if o.output == Output::Json {
            println!("{}", serde_json::to_string(&ev).unwrap_or_default());
        } else {
            println!("{}", event_line(&ev, col));
        }
        let _ = std::io::stdout().flush();
    }
}

pub async fn login(o: &ClientOpts, a: &LoginArgs) -> anyhow::Result<()> {
    let token = if a.token_stdin {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s)?;
        Some(s.trim().to_owned())
    } else {
        o.token.clone()
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(
            Exit::usage("give the token with --token, ZEDOPS_TOKEN or --token-stdin").into(),
        );
    };
    let c = connect(o.server.clone(), Some(token.clone()), o.ca_file.as_deref())?;
    let who = c.whoami().await?;
    let cfg = ClientConfig {
        server: Some(c.server().to_owned()),
        token: Some(token),
    };
    let path = ClientConfig::path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::paths::write_secret(&path, &cfg.render())?;
    println!(
        "Logged in to {} as {} ({}); saved in {}",
        c.server(),
        who.token_name.as_deref().unwrap_or("anonymous"),
        who.role,
        path.display()
    );
    Ok(())
}

pub async fn token(o: &ClientOpts, t: &TokenCommand) -> anyhow::Result<()> {
    let c = client(o)?;
    match t {
        TokenCommand::Create { name, role } => {
            let new = NewToken {
                name: name.clone(),
                role: *role,
            };
            let created = c.create_token(&new).await?;
            if o.output == Output::Json {
                print_json(&created);
            } else {
                println!("{}", created.token);
                eprintln!(
                    "Token {name} ({role}) created. It is shown only this once: store it now."
                );
            }
        }
        TokenCommand::List => {
            let list = c.tokens().await?;
            if o.output == Output::Json {
                print_json(&list);
            } else {
                let now = Utc::now();
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| vec![t.name.clone(), t.role.to_string(), ago(t.created_at, now)])
                    .collect();
                print!("{}", table(&["NAME", "ROLE", "CREATED"], &rows));
            }
        }
        TokenCommand::Revoke { name } => {
            c.revoke_token(name).await?;
            println!("Token {name} revoked.");
        }
    }
    Ok(())
}

pub async fn agents_admin(o: &ClientOpts, cmd: &AgentsCommand) -> anyhow::Result<()> {
    let c = client(o)?;
    match cmd {
        AgentsCommand::Add { name, ttl } => {
            let new = NewAgent {
                name: name.to_string(),
                ttl_s: Some(u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX)),
            };
            let e = c.register_agent(&new).await?;
            if o.output == Output::Json {
                print_json(&e);
                return Ok(());
            }
            println!(
                "Agent {name} registered. On its Docker host, run (the token works once, until {}):",
                e.expires_at.to_rfc3339()
            );
            println!();
            // The server's public URL: the address this CLI used may be loopback or a tunnel.
            let server = e
                .server_url
                .clone()
                .unwrap_or_else(|| c.server().to_owned());
            println!(
                "  zedops agent --enroll {} --server {server} --name {name}",
                e.token
            );
        }
        AgentsCommand::Remove { name } => {
            c.remove_agent(name.as_str()).await?;
            println!("Agent {name} removed: its credentials no longer work.");
        }
    }
    Ok(())
}

pub async fn mqtt_user(o: &ClientOpts, cmd: &MqttUserCommand) -> anyhow::Result<()> {
    let c = client(o)?;
    match cmd {
        MqttUserCommand::Add { name, ha_commands } => {
            let new = NewMqttUser {
                name: name.clone(),
                ha_commands: *ha_commands,
            };
            let u = c.create_mqtt_user(&new).await?;
            if o.output == Output::Json {
                print_json(&u);
            } else {
                println!("username: {}", u.username);
                println!("password: {}", u.password);
                eprintln!("The password is shown only this once.");
            }
        }
    }
    Ok(())
}
