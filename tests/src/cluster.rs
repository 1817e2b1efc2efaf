//! A real clustered MQTT 5 broker for the tests: three (or more) rmqtt nodes in one raft cluster on
//! loopback, built and cached by `scripts/provision-cluster.sh`.
//!
//! What it takes (`docs/operations.md` § "A clustered broker"):
//! - the `rmqtt-cluster-raft` plugin with every node's gRPC and raft address; node 1 starts first
//!   and is named the leader (`leader_id = 1`): nodes started together each elect
//!   themselves, three one-node clusters that forward nothing;
//! - `rmqtt-shared-subscription`: without it `$share/…` subscriptions (agents take requests
//!   through one) receive nothing;
//! - `rmqtt-retainer`, in memory with the cluster's full synchronisation;
//! - packets up to zedops' limit (rmqtt's default is 1 MiB), retained messages that never
//!   expire;
//! - with a hook, `rmqtt-auth-http` asking the API (`POST /api/v1/broker/{auth,acl}`), and
//!   `rmqtt-acl` denying whatever the hook leaves open;
//! - fresh ports for every cluster (raft binds without `SO_REUSEADDR`), and the HTTP-API plugin off
//!   (it starts by default on one fixed port).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context};

use crate::procs::{Proc, TempDir};

/// The broker's process name (`comm`): `tools/rmqtt`, rmqtt 0.24's server with the plugins
/// zedops uses, built by `scripts/provision-cluster.sh`.
pub const RMQTT_BIN: &str = "zedops-rmqtt";

/// The cluster broker's binary: `$ZEDOPS_RMQTT` (e.g. a full `rmqttd`, which reads the same
/// configuration), else the cache `scripts/provision-cluster.sh` fills.
pub fn rmqtt_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("ZEDOPS_RMQTT") {
        return Ok(PathBuf::from(p));
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| Path::new(&h).join(".cache")))
        .context("no HOME")?;
    let bin = cache.join(format!("zedops/rmqtt/bin/{RMQTT_BIN}"));
    ensure!(
        bin.is_file(),
        "{} is missing: run scripts/provision-cluster.sh (scripts/test.sh does)",
        bin.display()
    );
    Ok(bin)
}

/// The server's own login on a hooked cluster (`--broker-username`, `--broker-password`): the
/// hook lets it in, and nothing else may use it.
pub const API_LOGIN: (&str, &str) = ("zedops-api", "cluster-login-5531");

/// The secret the nodes' rmqtt-auth-http shows the hook (`--broker-auth-hook-secret`).
pub const HOOK_SECRET: &str = "cluster-hook-secret-7f3a9c21";

/// Where the broker's authentication hook is, and the login it takes as the server's.
#[derive(Debug, Clone)]
pub struct Hook {
    /// `http://127.0.0.1:PORT` of a `zedops serve --broker-auth-hook`.
    pub api: String,
}

/// One node of the cluster.
pub struct Node {
    pub id: u64,
    /// Its MQTT listener (MQTT 5 and 3.1.1 on one port).
    pub mqtt: SocketAddr,
    proc: Option<Proc>,
    args: Vec<String>,
}

impl Node {
    /// `mqtt://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.mqtt)
    }
}

/// A running rmqtt cluster; dropping it stops every node.
pub struct Cluster {
    pub nodes: Vec<Node>,
    dir: TempDir,
    bin: PathBuf,
}

/// What rmqtt logs when a port it was given is taken.
const PORT_CLASH: &str = "Address already in use";

/// The ports one node uses.
struct Ports {
    mqtt: u16,
    grpc: u16,
    raft: u16,
}

impl Cluster {
    /// `n` nodes; with `hook`, every connection and topic is decided by the API's hook.
    ///
    /// Ports are picked free and then bound by rmqtt, and raft binds without SO_REUSEADDR: with
    /// several clusters starting at once (the tests run in parallel) a port can be taken in
    /// between. Such a clash starts the whole cluster again on fresh ports, up to three times.
    pub async fn start(n: usize, hook: Option<&Hook>) -> anyhow::Result<Self> {
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::start_once(n, hook).await {
                Err(e) if tries < 3 && format!("{e:#}").contains(PORT_CLASH) => {
                    eprintln!("rmqtt cluster: a port was taken meanwhile; starting again");
                }
                done => return done,
            }
        }
    }

    async fn start_once(n: usize, hook: Option<&Hook>) -> anyhow::Result<Self> {
        let bin = rmqtt_bin()?;
        let dir = TempDir::new("rmqtt")?;
        let ports: Vec<Ports> = (0..n)
            .map(|_| Ports {
                mqtt: crate::free_port(),
                grpc: crate::free_port(),
                raft: crate::free_port(),
            })
            .collect();
        let plugins = dir.path.join("plugins");
        std::fs::create_dir_all(&plugins)?;
        write_plugin_configs(&plugins, &ports, hook)?;
        let mut nodes = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            let conf = dir.path.join(format!("rmqtt-{id}.toml"));
            std::fs::write(&conf, node_config(id, p, &plugins, hook.is_some()))?;
            let args = vec![
                "-f".to_owned(),
                conf.to_string_lossy().into_owned(),
                "--id".into(),
                id.to_string(),
            ];
            nodes.push(Node {
                id,
                mqtt: ([127, 0, 0, 1], p.mqtt).into(),
                proc: None,
                args,
            });
        }
        let mut cluster = Self { nodes, dir, bin };
        // Node 1 first, and listening, before the others join it.
        for i in 0..n {
            cluster.spawn(i)?;
            cluster.listening(i).await?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::File::create(self.dir.path.join(format!("node-{}.log", node.id)))?;
        let child = Command::new(&self.bin)
            .args(&node.args)
            // Its working directory holds no rmqtt.toml of anyone else's.
            .current_dir(&self.dir.path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        node.proc = Some(Proc {
            child,
            what: format!("rmqtt node {}", node.id),
        });
        Ok(())
    }

    /// Until node `i` listens; a port clash in its log ends the wait at once.
    async fn listening(&self, i: usize) -> anyhow::Result<()> {
        let addr = self.nodes[i].mqtt;
        let log = self.dir.path.join(format!("node-{}.log", i + 1));
        let clashed = || std::fs::read_to_string(&log).is_ok_and(|t| t.contains(PORT_CLASH));
        let listening = crate::eventually(
            &format!("rmqtt node {} to listen on {addr}", i + 1),
            Duration::from_secs(20),
            || async move {
                if clashed() {
                    return Some(false);
                }
                tokio::net::TcpStream::connect(addr)
                    .await
                    .ok()
                    .map(|_| true)
            },
        )
        .await
        .with_context(|| self.log(i))?;
        anyhow::ensure!(listening, "{}", self.log(i));
        Ok(())
    }

    /// Every node's MQTT URL, comma-separated in node order: a `--broker` list.
    pub fn urls(&self) -> String {
        let all: Vec<String> = self.nodes.iter().map(Node::url).collect();
        all.join(",")
    }

    /// The nodes' URLs starting at node `i` (index), round: a `--broker` list preferring it.
    pub fn urls_from(&self, i: usize) -> String {
        let n = self.nodes.len();
        let all: Vec<String> = (0..n).map(|k| self.nodes[(i + k) % n].url()).collect();
        all.join(",")
    }

    /// The flags of a `zedops serve` on this cluster, its nodes from `node` (index) on, logging
    /// in with [`API_LOGIN`] and answering the broker's hook.
    pub fn serve_args(&self, node: usize) -> Vec<String> {
        let (user, password) = API_LOGIN;
        [
            "--broker",
            &self.urls_from(node),
            "--broker-username",
            user,
            "--broker-password",
            password,
            "--broker-auth-hook",
            "--broker-auth-hook-secret",
            HOOK_SECRET,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// A new agent registered through `through` (a server and its admin client) and enrolled
    /// there, on this cluster's nodes from `node` (index) on, its state under `state_root`.
    pub async fn enrolled_agent(
        &self,
        through: (&crate::procs::Serve, &zedops_client::Client),
        node: usize,
        state_root: &Path,
        extra: &[&str],
    ) -> anyhow::Result<(String, Proc)> {
        let name = crate::unique("cl");
        let new = zedops_client::NewAgent {
            name: name.clone(),
            ttl_s: None,
        };
        let enrollment = through.1.register_agent(&new).await?;
        let state = state_root.join(&name);
        let login = (name.as_str(), enrollment.token.as_str());
        let brokers = self.urls_from(node);
        let proc = crate::procs::spawn_agent_on(through.0, login, &state, &brokers, extra)?;
        Ok((name, proc))
    }

    /// SIGKILL of node `i` (index): its clients lose their connection at once.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].proc = None;
    }

    /// What node `i` (index) logged, for a failure's context.
    pub fn log(&self, i: usize) -> String {
        let path = self.dir.path.join(format!("node-{}.log", i + 1));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let mut out = format!("rmqtt node {} log (last lines):\n", i + 1);
        for l in tail.into_iter().rev() {
            let _ = writeln!(out, "  {l}");
        }
        out
    }
}

fn node_config(id: u64, p: &Ports, plugins: &Path, hook: bool) -> String {
    let mut startups = vec![
        "rmqtt-cluster-raft",
        "rmqtt-retainer",
        "rmqtt-shared-subscription",
        "rmqtt-acl",
    ];
    if hook {
        startups.push("rmqtt-auth-http");
    }
    let startups: Vec<String> = startups.iter().map(|s| format!("{s:?}")).collect();
    format!(
        r#"[node]
id = {id}
busy.check_enable = false

[rpc]
server_addr = "127.0.0.1:{grpc}"
reuseaddr = true

[log]
to = "console"
level = "{log}"

[plugins]
dir = "{dir}"
default_startups = [{startups}]
disabled_default_startups = ["rmqtt-http-api"]

# rmqtt's default TimeBased window counts every gRPC call of the last 45 s again on each call
# between nodes (tools/rmqtt/src/main.rs); CountBased keeps counters only.
[circuit_breaker]
sliding_window_type = "CountBased"
sliding_window_size = 100

[listener.tcp.external]
addr = "127.0.0.1:{mqtt}"
allow_anonymous = {anonymous}
max_packet_size = "{max_packet}B"
nodelay = true
max_inflight = 128
max_mqueue_len = 10000
message_expiry_interval = "0s"
session_expiry_interval = "60s"
"#,
        grpc = p.grpc,
        mqtt = p.mqtt,
        dir = plugins.display(),
        startups = startups.join(", "),
        anonymous = !hook,
        max_packet = zedops_proto::MAX_PACKET_BYTES,
        // ZEDOPS_TEST_RMQTT_LOG=debug to see what the nodes do.
        log = std::env::var("ZEDOPS_TEST_RMQTT_LOG").unwrap_or_else(|_| "warn".into()),
    )
}

fn write_plugin_configs(dir: &Path, ports: &[Ports], hook: Option<&Hook>) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("rmqtt-retainer.toml"),
        format!(
            "storage.type = \"ram\"\nmax_payload_size = \"{}B\"\nretained_message_ttl = \"0m\"\n",
            zedops_proto::MAX_PACKET_BYTES
        ),
    )?;
    std::fs::write(dir.join("rmqtt-shared-subscription.toml"), "")?;
    let addrs = |port: fn(&Ports) -> u16| -> String {
        let all: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("\"{}@127.0.0.1:{}\"", i + 1, port(p)))
            .collect();
        all.join(", ")
    };
    std::fs::write(
        dir.join("rmqtt-cluster-raft.toml"),
        format!(
            "worker_threads = 2\nleader_id = 1\ntry_lock_timeout = \"2s\"\nnode_grpc_client_timeout = \"1s\"\nnode_grpc_addrs = [{}]\nraft_peer_addrs = [{}]\n",
            addrs(|p| p.grpc),
            addrs(|p| p.raft)
        ),
    )?;
    let acl = match hook {
        // The hook decides; whatever it leaves undecided is refused.
        Some(_) => "disconnect_if_pub_rejected = true\nrules = [[\"deny\", \"all\"]]\n",
        None => "rules = [[\"allow\", \"all\"]]\n",
    };
    std::fs::write(dir.join("rmqtt-acl.toml"), acl)?;
    if let Some(h) = hook {
        std::fs::write(
            dir.join("rmqtt-auth-http.toml"),
            format!(
                r#"http_timeout = "5s"
deny_if_error = true
disconnect_if_pub_rejected = true
http_headers.accept = "application/json"
http_headers.authorization = "Bearer {secret}"
http_auth_req.url = "{api}/api/v1/broker/auth"
http_auth_req.method = "post"
http_auth_req.headers.content-type = "application/x-www-form-urlencoded"
http_auth_req.params = {{ clientid = "%c", username = "%u", password = "%P" }}
http_acl_req.url = "{api}/api/v1/broker/acl"
http_acl_req.method = "post"
http_acl_req.headers.content-type = "application/x-www-form-urlencoded"
http_acl_req.params = {{ access = "%A", username = "%u", clientid = "%c", topic = "%t" }}
"#,
                api = h.api,
                secret = HOOK_SECRET,
            ),
        )?;
    }
    Ok(())
}
