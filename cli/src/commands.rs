//! The client commands: each calls the HTTP API and prints a table or JSON.

use std::io::Write;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use crate::args::{
    ActionArgs, AgentsCommand, ClientOpts, LoginArgs, LogsArgs, MqttUserCommand, OneContainer,
    Output, PingArgs, PsArgs, TokenCommand,
};
use crate::client::{Client, ClientConfig};
use crate::exit::{self, Exit};
use crate::output::{ago, color, paint_state, parse_time, table};

fn client(o: &ClientOpts) -> anyhow::Result<Client> {
    Client::new(o.server.clone(), o.token.clone(), o.ca_file.as_deref())
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Percent-encodes a path segment or query value (names are already restricted; be safe anyway).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn agents(o: &ClientOpts) -> anyhow::Result<()> {
    let c = client(o)?;
    let v: Value = c.get("/api/v1/agents").await?;
    if o.output == Output::Json {
        print_json(&v);
        return Ok(());
    }
    let now = Utc::now();
    let col = color();
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let state = if a["online"] == true {
                "online"
            } else {
                "offline"
            };
            let docker = match a["docker"]["state"].as_str() {
                Some("available") => a["docker"]["version"]
                    .as_str()
                    .unwrap_or("available")
                    .to_owned(),
                Some(s) => s.to_owned(),
                None => "-".into(),
            };
            vec![
                a["name"].as_str().unwrap_or_default().to_owned(),
                paint_state(state, col),
                a["hostname"].as_str().unwrap_or("-").to_owned(),
                docker,
                format!("{}/{}", a["counts"]["running"], a["counts"]["total"]),
                parse_time(&a["last_seen"])
                    .map(|t| ago(t, now))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["AGENT", "STATE", "HOST", "DOCKER", "RUNNING", "LAST SEEN"],
            &rows
        )
    );
    Ok(())
}

fn is_active(c: &Value) -> bool {
    matches!(
        c["state"].as_str(),
        Some("running" | "paused" | "restarting")
    )
}

fn ports(c: &Value) -> String {
    c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p["public_port"].as_u64() {
            Some(pub_port) => format!(
                "{}->{}/{}",
                pub_port,
                p["private_port"],
                p["protocol"].as_str().unwrap_or("tcp")
            ),
            None => format!(
                "{}/{}",
                p["private_port"],
                p["protocol"].as_str().unwrap_or("tcp")
            ),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn ps(o: &ClientOpts, a: &PsArgs) -> anyhow::Result<()> {
    let c = client(o)?;
    // Rows of (agent, container).
    let rows: Vec<(String, Value)> = match &a.agent {
        Some(agent) => {
            let v: Value = c
                .get(&format!(
                    "/api/v1/agents/{}/containers",
                    enc(agent.as_str())
                ))
                .await?;
            v["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| (agent.to_string(), x.clone()))
                .collect()
        }
        None => {
            let v: Value = c.get("/api/v1/containers").await?;
            v.as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    (
                        r["agent"].as_str().unwrap_or_default().to_owned(),
                        r["container"].clone(),
                    )
                })
                .collect()
        }
    };
    let rows: Vec<(String, Value)> = rows
        .into_iter()
        .filter(|(_, c)| a.all || is_active(c))
        .collect();
    if o.output == Output::Json {
        let arr: Vec<Value> = rows
            .into_iter()
            .map(|(agent, mut c)| {
                c["agent"] = json!(agent);
                c
            })
            .collect();
        print_json(&Value::Array(arr));
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
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["image"].as_str().unwrap_or_default().to_owned(),
                paint_state(c["state"].as_str().unwrap_or_default(), col),
                c["status"].as_str().unwrap_or_default().to_owned(),
                ports(c),
                parse_time(&c["created_at"])
                    .map(|t| ago(t, now))
                    .unwrap_or_default(),
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
    let v: Value = c
        .get(&format!(
            "/api/v1/containers?name={}&exact=true",
            enc(container)
        ))
        .await?;
    let mut agents: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["agent"].as_str().map(str::to_owned))
        .collect();
    if agents.is_empty() && container.len() >= 4 && container.bytes().all(|b| b.is_ascii_hexdigit())
    {
        let all: Value = c.get("/api/v1/containers").await?;
        agents = all
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| {
                r["container"]["id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(container))
            })
            .filter_map(|r| r["agent"].as_str().map(str::to_owned))
            .collect();
    }
    agents.sort();
    agents.dedup();
    match agents.as_slice() {
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
    let c = client(o)?;
    let v: Value = c
        .get(&format!("/api/v1/agents/{}/ping", enc(a.agent.as_str())))
        .await?;
    if o.output == Output::Json {
        print_json(&v);
        return Ok(());
    }
    let docker = match v["docker"]["state"].as_str() {
        Some("available") => format!(
            "Docker {}",
            v["docker"]["version"].as_str().unwrap_or("available")
        ),
        _ => format!(
            "Docker unavailable: {}",
            v["docker"]["error"].as_str().unwrap_or("unknown reason")
        ),
    };
    println!(
        "{} answered in {:.1} ms (zedops {}, {docker})",
        v["agent"].as_str().unwrap_or(a.agent.as_str()),
        v["round_trip_ms"].as_f64().unwrap_or_default(),
        v["version"].as_str().unwrap_or("?"),
    );
    Ok(())
}

pub async fn inspect(o: &ClientOpts, a: &OneContainer) -> anyhow::Result<()> {
    let c = client(o)?;
    let agent = resolve_agent(&c, &a.container, a.agent.as_ref()).await?;
    let v: Value = c
        .get(&format!(
            "/api/v1/agents/{}/containers/{}",
            enc(&agent),
            enc(&a.container)
        ))
        .await?;
    print_json(&v);
    Ok(())
}

pub async fn action(
    o: &ClientOpts,
    action: zedops_proto::Action,
    a: &ActionArgs,
) -> anyhow::Result<()> {
    let c = client(o)?;
    let timeout = a.timeout.unwrap_or(Duration::from_secs(30));
    if timeout.as_secs() == 0 || timeout.as_secs() > 300 {
        return Err(Exit::usage("--timeout must be between 1s and 300s").into());
    }
    let mut query = vec![format!("timeout_s={}", timeout.as_secs())];
    if let Some(g) = a.grace {
        query.push(format!("grace_s={g}"));
    }
    if let Some(s) = &a.signal {
        query.push(format!("signal={}", enc(s)));
    }
    let query = query.join("&");
    let c = &c;
    // All containers at once; results printed in the order given.
    let results = futures_util::future::join_all(a.containers.iter().map(|name| {
        let query = query.clone();
        async move {
            let agent = resolve_agent(c, name, a.agent.as_ref()).await?;
            let path = format!(
                "/api/v1/agents/{}/containers/{}/{action}?{query}",
                enc(&agent),
                enc(name)
            );
            let v: Value = c
                .request(Method::POST, &path, None, timeout + Duration::from_secs(5))
                .await?;
            Ok::<_, anyhow::Error>((agent, v))
        }
    }))
    .await;
    let mut worst: Option<anyhow::Error> = None;
    let mut out = Vec::new();
    for (name, r) in a.containers.iter().zip(results) {
        match r {
            Ok((agent, v)) => {
                if o.output == Output::Json {
                    let mut v = v;
                    v["agent"] = json!(agent);
                    out.push(v);
                } else {
                    let note = if v["changed"] == false {
                        " (no change)"
                    } else {
                        ""
                    };
                    println!("{name}{note}");
                }
            }
            Err(e) => {
                eprintln!("zedops: {action} {name}: {e:#}");
                worst = Some(e);
            }
        }
    }
    if o.output == Output::Json {
        print_json(&Value::Array(out));
    }
    match worst {
        // Already printed: carry only the exit code.
        Some(e) => Err(Exit::new(exit::code_of(&e), String::new()).into()),
        None => Ok(()),
    }
}

pub async fn logs(o: &ClientOpts, a: &LogsArgs) -> anyhow::Result<()> {
    let c = client(o)?;
    let agent = resolve_agent(&c, &a.container, a.agent.as_ref()).await?;
    let v: Value = c
        .get(&format!(
            "/api/v1/agents/{}/containers/{}/logs?tail={}&timestamps={}",
            enc(&agent),
            enc(&a.container),
            a.tail,
            a.timestamps
        ))
        .await?;
    if o.output == Output::Json {
        print_json(&v);
        return Ok(());
    }
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    for l in v["lines"].as_array().into_iter().flatten() {
        let text = l["text"].as_str().unwrap_or_default();
        if l["stream"] == "stderr" {
            let _ = writeln!(stderr.lock(), "{text}");
        } else {
            let _ = writeln!(stdout.lock(), "{text}");
        }
    }
    Ok(())
}

pub async fn events(o: &ClientOpts) -> anyhow::Result<()> {
    let c = client(o)?;
    let resp = c.stream("/api/v1/events").await?;
    let mut stream = resp.bytes_stream();
    let mut buf = zedops_proto::sse::SseBuffer::new();
    let col = color();
    loop {
        let chunk = tokio::select! {
            c = stream.next() => c,
            _ = crate::run::shutdown_signal() => return Ok(()),
        };
        let Some(chunk) = chunk else {
            return Err(
                Exit::new(exit::ERROR, format!("{} closed the event stream", c.server)).into(),
            );
        };
        let chunk =
            chunk.map_err(|e| Exit::new(exit::ERROR, format!("event stream failed: {e}")))?;
        buf.push(&chunk);
        while let Some(ev) = buf.next_event() {
            let v: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
            if o.output == Output::Json {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
            } else {
                let time = v["time"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(19)
                    .collect::<String>()
                    .replace('T', " ");
                let line = match v["kind"].as_str() {
                    Some("agent") => format!(
                        "agent {} {}",
                        v["agent"].as_str().unwrap_or_default(),
                        paint_state(v["state"].as_str().unwrap_or_default(), col)
                    ),
                    Some("container") => format!(
                        "container {}/{} {} → {}",
                        v["agent"].as_str().unwrap_or_default(),
                        v["container"].as_str().unwrap_or_default(),
                        v["action"].as_str().unwrap_or_default(),
                        paint_state(v["state"].as_str().unwrap_or_default(), col)
                    ),
                    Some("action") => format!(
                        "action {} {}/{} {}",
                        v["action"].as_str().unwrap_or_default(),
                        v["agent"].as_str().unwrap_or_default(),
                        v["container"].as_str().unwrap_or_default(),
                        if v["ok"] == true {
                            "ok".to_owned()
                        } else {
                            format!(
                                "failed: {}",
                                v["error"]["message"].as_str().unwrap_or_default()
                            )
                        }
                    ),
                    _ => ev.data.clone(),
                };
                println!("{time}  {line}");
            }
            let _ = std::io::stdout().flush();
        }
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
    let c = Client::new(o.server.clone(), Some(token.clone()), o.ca_file.as_deref())?;
    let who: Value = c.get("/api/v1/whoami").await?;
    let cfg = ClientConfig {
        server: Some(c.server.clone()),
        token: Some(token),
    };
    let path = ClientConfig::path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::paths::write_secret(&path, &cfg.render())?;
    println!(
        "Logged in to {} as {} ({}); saved in {}",
        c.server,
        who["token_name"].as_str().unwrap_or("anonymous"),
        who["role"].as_str().unwrap_or("?"),
        path.display()
    );
    Ok(())
}

pub async fn token(o: &ClientOpts, t: &TokenCommand) -> anyhow::Result<()> {
    let c = client(o)?;
    match t {
        TokenCommand::Create { name, role } => {
            let v: Value = c
                .request(
                    Method::POST,
                    "/api/v1/tokens",
                    Some(&json!({"name": name, "role": role})),
                    Duration::from_secs(30),
                )
                .await?;
            if o.output == Output::Json {
                print_json(&v);
            } else {
                println!("{}", v["token"].as_str().unwrap_or_default());
                eprintln!(
                    "Token {name} ({role}) created. It is shown only this once: store it now."
                );
            }
        }
        TokenCommand::List => {
            let v: Value = c.get("/api/v1/tokens").await?;
            if o.output == Output::Json {
                print_json(&v);
            } else {
                let now = Utc::now();
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        vec![
                            t["name"].as_str().unwrap_or_default().to_owned(),
                            t["role"].as_str().unwrap_or_default().to_owned(),
                            parse_time(&t["created_at"])
                                .map(|x| ago(x, now))
                                .unwrap_or_default(),
                        ]
                    })
                    .collect();
                print!("{}", table(&["NAME", "ROLE", "CREATED"], &rows));
            }
        }
        TokenCommand::Revoke { name } => {
            let _: Value = c
                .request(
                    Method::DELETE,
                    &format!("/api/v1/tokens/{}", enc(name)),
                    None,
                    Duration::from_secs(30),
                )
                .await?;
            println!("Token {name} revoked.");
        }
    }
    Ok(())
}

pub async fn agents_admin(o: &ClientOpts, cmd: &AgentsCommand) -> anyhow::Result<()> {
    let c = client(o)?;
    match cmd {
        AgentsCommand::Add { name, ttl } => {
            let v: Value = c
                .request(
                    Method::POST,
                    "/api/v1/agents",
                    Some(&json!({"name": name.as_str(), "ttl_s": ttl.as_secs()})),
                    Duration::from_secs(30),
                )
                .await?;
            if o.output == Output::Json {
                print_json(&v);
                return Ok(());
            }
            let token = v["token"].as_str().unwrap_or_default();
            println!("Agent {name} registered. On its Docker host, run (the token works once, until {}):", v["expires_at"].as_str().unwrap_or("?"));
            println!();
            println!(
                "  zedops agent --enroll {token} --server {} --name {name}",
                c.server
            );
        }
        AgentsCommand::Remove { name } => {
            let _: Value = c
                .request(
                    Method::DELETE,
                    &format!("/api/v1/agents/{}", enc(name.as_str())),
                    None,
                    Duration::from_secs(30),
                )
                .await?;
            println!("Agent {name} removed: its credentials no longer work.");
        }
    }
    Ok(())
}

pub async fn mqtt_user(o: &ClientOpts, cmd: &MqttUserCommand) -> anyhow::Result<()> {
    let c = client(o)?;
    match cmd {
        MqttUserCommand::Add { name, ha_commands } => {
            let v: Value = c
                .request(
                    Method::POST,
                    "/api/v1/mqtt-users",
                    Some(&json!({"name": name, "ha_commands": ha_commands})),
                    Duration::from_secs(30),
                )
                .await?;
            if o.output == Output::Json {
                print_json(&v);
            } else {
                println!("username: {}", v["username"].as_str().unwrap_or_default());
                println!("password: {}", v["password"].as_str().unwrap_or_default());
                eprintln!("The password is shown only this once.");
            }
        }
    }
    Ok(())
}
