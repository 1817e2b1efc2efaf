//! Processes the tests start: the `zedops` binary, Mosquitto, and in-process agents.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use zedops_agent::AgentConfig;
use zedops_proto::{AgentName, BrokerUrl};

/// Runs `cmd` to its end: its output when it exits 0, else an error naming `what`, with what it
/// wrote to stderr.
pub fn run_ok(cmd: &mut Command, what: &str) -> anyhow::Result<std::process::Output> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    ensure!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// Path of the `zedops` binary of the same build as the running executable (or `$ZEDOPS_BIN`):
/// `target/<profile>/zedops`, next to a binary such as `zedops-bench` or one level above a test
/// executable in `target/<profile>/deps/`.
pub fn zedops_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("ZEDOPS_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let here = exe.parent().context("unexpected executable location")?;
    let candidates = [Some(here), here.parent()];
    if let Some(bin) = candidates
        .iter()
        .flatten()
        .map(|d| d.join("zedops"))
        .find(|b| b.is_file())
    {
        return Ok(bin);
    }
    bail!(
        "no zedops binary next to {}: build it first (`cargo build --workspace --bins`; scripts/test.sh and scripts/bench.sh do)",
        exe.display()
    )
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()?;
        if !st.success() {
            bail!("kill -{sig} {} failed", self.what);
        }
        Ok(())
    }

    /// Waits for exit up to `limit`; returns the exit status.
    pub async fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if start.elapsed() > limit {
                bail!("{} did not exit within {limit:?}", self.what);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command line of `zedops agent --name NAME --broker mqtt://ADDR EXTRA…`, its log filter
/// from the environment variable `log_env` (default `warn`), stdout discarded, stderr shown.
pub fn agent_command(
    name: &str,
    broker: SocketAddr,
    extra: &[&str],
    log_env: &str,
) -> anyhow::Result<Command> {
    agent_command_on(name, &format!("mqtt://{broker}"), extra, log_env)
}

/// [`agent_command`] with `--broker brokers` as it is (a list of URLs, say).
pub fn agent_command_on(
    name: &str,
    brokers: &str,
    extra: &[&str],
    log_env: &str,
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(zedops_bin()?);
    cmd.args(["agent", "--name", name, "--broker", brokers])
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var(log_env).unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    Ok(cmd)
}

/// Starts `zedops agent` as a separate process.
pub fn spawn_agent_process(name: &str, broker: SocketAddr, extra: &[&str]) -> anyhow::Result<Proc> {
    let child = agent_command(name, broker, extra, "ZEDOPS_TEST_AGENT_LOG")?
        .spawn()
        .context("starting zedops agent")?;
    Ok(Proc {
        child,
        what: format!("agent {name}"),
    })
}

/// Starts `zedops agent --enroll TOKEN --server <serve's URL>` on `serve`'s broker, keeping its
/// credentials in `state_dir`: the secured default's first start of an agent.
pub fn spawn_enrolled_agent(
    serve: &Serve,
    name: &str,
    token: &str,
    state_dir: &std::path::Path,
) -> anyhow::Result<Proc> {
    let args = enroll_args(serve, token, state_dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_agent_process(name, serve.mqtt, &args)
}

/// An agent of `serve` enrolled with `token` (state in `state_dir`) on the brokers `brokers`
/// (`--broker` as it is: the nodes of a cluster, say), with `extra` flags.
pub fn spawn_agent_on(
    serve: &Serve,
    (name, token): (&str, &str),
    state_dir: &std::path::Path,
    brokers: &str,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    let mut args = enroll_args(serve, token, state_dir);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = agent_command_on(name, brokers, &args, "ZEDOPS_TEST_AGENT_LOG")?
        .spawn()
        .context("starting zedops agent")?;
    Ok(Proc {
        child,
        what: format!("agent {name}"),
    })
}

/// `--enroll TOKEN --server URL --state-dir DIR` of an agent of `serve`.
fn enroll_args(serve: &Serve, token: &str, state_dir: &std::path::Path) -> Vec<String> {
    let dir = state_dir.to_string_lossy().into_owned();
    let args = [
        "--enroll",
        token,
        "--server",
        &serve.http,
        "--state-dir",
        &dir,
    ];
    args.map(str::to_owned).to_vec()
}

/// [`spawn_enrolled_agent`] with `extra` flags, logging at `log` (a `RUST_LOG` filter) into the
/// string returned beside it.
pub fn spawn_logged_agent(
    serve: &Serve,
    name: &str,
    token: &str,
    state_dir: &std::path::Path,
    extra: &[&str],
    log: &str,
) -> anyhow::Result<(Proc, std::sync::Arc<std::sync::Mutex<String>>)> {
    use std::io::{BufRead, BufReader};
    let mut args = enroll_args(serve, token, state_dir);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = agent_command(name, serve.mqtt, &args, "ZEDOPS_TEST_AGENT_LOG")?
        .env("RUST_LOG", log)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting zedops agent")?;
    let err = child.stderr.take().context("stderr")?;
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if let Ok(mut s) = sink.lock() {
                s.push_str(&l);
                s.push('\n');
            }
        }
    });
    let what = format!("agent {name}");
    Ok((Proc { child, what }, text))
}

/// An agent running in this process; stops (publishing `offline`) on [`InProcAgent::stop`] or drop.
pub struct InProcAgent {
    pub name: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl InProcAgent {
    pub fn start(
        name: &str,
        broker: SocketAddr,
        tweak: impl FnOnce(&mut AgentConfig),
    ) -> anyhow::Result<Self> {
        let url = BrokerUrl {
            host: broker.ip().to_string(),
            port: broker.port(),
            tls: false,
        };
        let mut cfg = AgentConfig::new(AgentName::new(name)?, url);
        cfg.reconnect_max = Duration::from_millis(500);
        tweak(&mut cfg);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = zedops_agent::run(cfg, async move {
                let _ = rx.await;
            })
            .await;
        });
        Ok(Self {
            name: name.to_owned(),
            stop: Some(tx),
            task: Some(task),
        })
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Drop for InProcAgent {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Debian's Mosquitto on a free loopback port, anonymous access, MQTT 5 and 3.1.1.
pub struct Mosquitto {
    pub addr: SocketAddr,
    _proc: Proc,
    _dir: TempDir,
}

impl Mosquitto {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Access::Anonymous).await
    }

    /// [`Mosquitto::start`] refusing anonymous clients: only `user` with `password` connects
    /// (a password file made with Debian's `mosquitto_passwd`).
    pub async fn with_user(user: &str, password: &str) -> anyhow::Result<Self> {
        Self::start_with(Access::User(user, password)).await
    }

    /// [`Mosquitto::start`] over TLS only, with the server certificate of `pki`
    /// ([`crate::pki::make_ca`]), letting in only clients that show a certificate of its CA.
    pub async fn with_client_certs(pki: &std::path::Path) -> anyhow::Result<Self> {
        Self::start_with(Access::ClientCert(pki)).await
    }

    async fn start_with(how: Access<'_>) -> anyhow::Result<Self> {
        let dir = TempDir::new("mosquitto")?;
        let port = crate::free_port();
        let conf = dir.path.join("mosquitto.conf");
        let access = match how {
            Access::Anonymous => "allow_anonymous true\n".to_owned(),
            Access::User(u, p) => {
                let file = dir.path.join("passwd");
                let st = Command::new("mosquitto_passwd")
                    .args(["-b", "-c", &file.to_string_lossy(), u, p])
                    .status()
                    .context("running mosquitto_passwd (Debian's mosquitto has it)")?;
                ensure!(st.success(), "mosquitto_passwd: {st}");
                format!("allow_anonymous false\npassword_file {}\n", file.display())
            }
            Access::ClientCert(pki) => {
                // Mosquitto drops root for its own user: it reads copies it may read.
                for name in ["ca.pem", "server.pem", "server.key"] {
                    let copy = dir.path.join(name);
                    std::fs::copy(pki.join(name), &copy)?;
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644))?;
                }
                let f = |name: &str| dir.path.join(name).display().to_string();
                format!(
                    "allow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\n",
                    f("ca.pem"),
                    f("server.pem"),
                    f("server.key")
                )
            }
        };
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n{access}persistence false\nlog_dest stderr\nlog_type error\nmax_packet_size 16777216\n"
            ),
        )?;
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .context("mosquitto is not installed: run scripts/provision.sh")?;
        let child = Command::new(bin)
            .args(["-c", &conf.to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting mosquitto")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let proc = Proc {
            child,
            what: "mosquitto".into(),
        };
        crate::eventually(
            "mosquitto to listen",
            Duration::from_secs(5),
            || async move { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) },
        )
        .await?;
        Ok(Self {
            addr,
            _proc: proc,
            _dir: dir,
        })
    }
}

/// Who Mosquitto lets in.
enum Access<'a> {
    Anonymous,
    User(&'a str, &'a str),
    /// Over TLS, clients with a certificate of the CA in this directory.
    ClientCert(&'a std::path::Path),
}

/// A temporary directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(crate::unique(&format!("zedops-{prefix}")));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    /// Removes the directory, unless `ZEDOPS_KEEP_TEMP` is set (to read a broker's or a
    /// server's log after a run).
    fn drop(&mut self) {
        if std::env::var_os("ZEDOPS_KEEP_TEMP").is_some() {
            eprintln!("kept {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `zedops serve` as a child process on ephemeral ports, with a private data dir.
pub struct Serve {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`
    pub http: String,
    pub mqtt: SocketAddr,
    /// The MQTT 3.1.1 listener, when `extra` opened one (`--mqtt311-listen 127.0.0.1:0`).
    pub mqtt311: Option<SocketAddr>,
    pub home: TempDir,
    pub admin_token: String,
    /// What `serve` printed on start.
    pub banner: String,
    /// Everything the server wrote to stderr (its logs), for secret checks.
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Serve {
    pub fn start(extra: &[&str], log: &str) -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0", "127.0.0.1:0", extra, log)
    }

    /// [`Serve::start`] with the HTTP and MQTT 5 listeners on these addresses.
    pub fn start_on(listen: &str, mqtt: &str, extra: &[&str], log: &str) -> anyhow::Result<Self> {
        use std::io::{BufRead, BufReader};
        let home = TempDir::new("serve")?;
        let no_311 = (!extra.contains(&"--mqtt311-listen")).then_some("--no-mqtt311");
        let mut child = Command::new(zedops_bin()?)
            .args(["serve", "--listen", listen, "--mqtt-listen", mqtt])
            .args(no_311)
            .args(extra)
            .env("XDG_DATA_HOME", home.path.join("data"))
            .env("XDG_CONFIG_HOME", home.path.join("config"))
            .env("RUST_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting zedops serve")?;
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        let proc = Proc {
            child,
            what: "zedops serve".into(),
        };
        let log_buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let lb = log_buf.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("ZEDOPS_TEST_SHOW_SERVE_LOG").is_some() {
                    eprintln!("serve: {line}");
                }
                if let Ok(mut b) = lb.lock() {
                    b.push_str(&line);
                    b.push('\n');
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut banner = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !banner.iter().any(|l: &String| l.starts_with("Next:")) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx.recv_timeout(left).with_context(|| {
                let log = log_buf.lock().map(|s| s.clone()).unwrap_or_default();
                format!("the serve banner (its log: {log})")
            })?;
            banner.push(line);
        }
        let http = banner
            .iter()
            .find_map(|l| l.trim().strip_prefix("HTTP API"))
            .map(|l| l.trim().trim_end_matches("/api/v1/agents").to_owned())
            .context("API URL in the banner")?;
        let mqtt: SocketAddr = banner
            .iter()
            .find_map(|l| l.trim().strip_prefix("MQTT broker"))
            .map(str::trim)
            .and_then(|l| {
                l.strip_prefix("mqtt://")
                    .or_else(|| l.strip_prefix("mqtts://"))
            })
            .and_then(|l| l.split_whitespace().next())
            .and_then(|a| a.trim_end_matches(',').parse().ok())
            .context("MQTT address in the banner")?;
        // `MQTT broker   mqtt://A (MQTT 5), mqtt://B (MQTT 3.1.1)`
        let mqtt311 = banner
            .iter()
            .find_map(|l| l.trim().strip_prefix("MQTT broker"))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|l| l.strip_prefix("mqtt://"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        let admin_token = std::fs::read_to_string(home.path.join("data/zedops/admin.token"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        Ok(Self {
            proc,
            http,
            mqtt,
            mqtt311,
            home,
            admin_token,
            banner: banner.join("\n"),
            stderr: log_buf,
        })
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200 (connected to its broker, warmed up), up to 30 s; the
    /// error carries the server's log.
    pub async fn ready(&self) -> anyhow::Result<()> {
        crate::eventually("zedops serve ready", Duration::from_secs(30), || async {
            let r = reqwest::get(format!("{}/readyz", self.http)).await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await
        .with_context(|| self.logs())
    }
}
