//! Child processes (the `zedops` binary in its roles, this binary as a bare broker) and their
//! resource use read from `/proc`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub use zedops_tests::procs::zedops_bin;

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits up to `limit` for the exit, then SIGKILL.
    pub fn terminate(&mut self, limit: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < limit {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "{} did not exit within {limit:?} of SIGTERM; killing it",
            self.what
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn usage(&self) -> Usage {
        Usage::of(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(3));
    }
}

/// Stops every child of this process (SIGTERM, then SIGKILL after `limit`): what an interrupted
/// benchmark leaves running, whichever scenario started it (`zedops serve`, agents, brokers,
/// Mosquitto, `docker` invocations).
pub fn stop_children(limit: Duration) {
    let signal_all = |sig: &str| {
        let pids = children_of(std::process::id());
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .args(pids.iter().map(u32::to_string))
                .stderr(Stdio::null())
                .status();
        }
        pids
    };
    if signal_all("TERM").is_empty() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
        // Children that exited are zombies until reaped; they count as gone.
        if children_of(std::process::id())
            .iter()
            .all(|p| state_of(*p) == Some('Z'))
        {
            return;
        }
    }
    for pid in signal_all("KILL") {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        eprintln!(
            "{} (pid {pid}) did not exit within {limit:?} of SIGTERM; killed it",
            comm.replace('\0', " ").trim()
        );
    }
}

/// Processes whose parent is `parent`, from `/proc/<pid>/stat`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat_fields(*pid).and_then(|f| f.get(1)?.parse().ok()) == Some(parent))
        .collect()
}

fn state_of(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The fields of `/proc/<pid>/stat` after the command name (which may contain spaces and
/// parentheses): state, ppid, …
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// What `zedops serve` printed in its banner.
#[derive(Debug, Clone)]
pub struct Banner {
    pub mqtt: Option<SocketAddr>,
    pub http: SocketAddr,
}

/// Reads lines from the child's stdout until `done` says the banner is complete (up to `limit`);
/// keeps draining stdout afterwards so that the child never blocks on a full pipe.
fn read_banner(
    child: &mut Child,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<String>> {
    let out = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Nobody listens any more: keep draining.
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let end = done(&l);
                lines.push(l);
                if end {
                    return Ok(lines);
                }
            }
            Err(_) => bail!("no complete banner within {limit:?}; got {lines:?}"),
        }
    }
}

fn addr_after(line: &str, scheme: &str) -> Option<SocketAddr> {
    let i = line.find(scheme)? + scheme.len();
    let rest = &line[i..];
    let end = rest.find(['/', ' ']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `zedops serve --no-auth` on ephemeral ports; `broker` = Some(url) runs the API alone against
/// an external broker.
pub fn spawn_serve(
    broker: Option<&str>,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<(Proc, Banner)> {
    let mut cmd = Command::new(zedops_bin()?);
    cmd.args(["serve", "--no-auth", "--listen", "127.0.0.1:0"]);
    match broker {
        Some(url) => {
            cmd.args(["--broker", url]);
        }
        None => {
            cmd.args(["--mqtt-listen", "127.0.0.1:0", "--no-mqtt311"]);
        }
    }
    cmd.env(
        "RUST_LOG",
        std::env::var("ZEDOPS_BENCH_SERVE_LOG").unwrap_or_else(|_| "error,rumqttd=off".into()),
    )
    .envs(extra_env.iter().copied())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let mut child = cmd.spawn().context("starting zedops serve")?;
    let lines = read_banner(&mut child, Duration::from_secs(20), |l| {
        l.starts_with("Next:")
    });
    let lines = match lines {
        Ok(l) => l,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let mut mqtt = None;
    let mut http = None;
    for l in &lines {
        if l.contains("MQTT broker") {
            mqtt = addr_after(l, "mqtt://");
        }
        if l.contains("HTTP API") {
            http = addr_after(l, "http://");
        }
    }
    let proc = Proc {
        child,
        what: "zedops serve".into(),
    };
    let http = http.context("the banner names no HTTP address")?;
    Ok((proc, Banner { mqtt, http }))
}

/// `zedops agent --name NAME --broker mqtt://ADDR`.
pub fn spawn_agent(name: &str, broker: SocketAddr) -> anyhow::Result<Proc> {
    let child = zedops_tests::procs::agent_command(name, broker, &[], "ZEDOPS_BENCH_AGENT_LOG")?
        .spawn()
        .context("starting zedops agent")?;
    Ok(Proc {
        child,
        what: format!("agent {name}"),
    })
}

/// This binary's `broker` subcommand: the embedded broker (zedops-broker, the configuration
/// `zedops serve` uses) alone in its own process.
pub fn spawn_broker() -> anyhow::Result<(Proc, SocketAddr)> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["broker", "--listen", "127.0.0.1:0"])
        .env(
            "RUST_LOG",
            std::env::var("ZEDOPS_BENCH_BROKER_LOG").unwrap_or_else(|_| "error,rumqttd=off".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the broker process")?;
    let lines = read_banner(&mut child, Duration::from_secs(10), |l| {
        l.starts_with("broker ")
    })?;
    let addr = lines
        .iter()
        .find_map(|l| addr_after(l, "mqtt://"))
        .context("the broker printed no address")?;
    Ok((
        Proc {
            child,
            what: "broker".into(),
        },
        addr,
    ))
}

/// Resident memory and CPU time of a process, from `/proc/<pid>/status` and `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub rss: u64,
    /// Peak resident memory (VmHWM).
    pub hwm: u64,
    pub threads: u64,
    /// User + system CPU time.
    pub cpu: Duration,
    pub at: Option<Instant>,
}

impl Usage {
    pub fn of(pid: u32) -> Self {
        let mut u = Usage {
            at: Some(Instant::now()),
            ..Default::default()
        };
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for l in s.lines() {
                let kb = || {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                if l.starts_with("VmRSS:") {
                    u.rss = kb() * 1024;
                } else if l.starts_with("VmHWM:") {
                    u.hwm = kb() * 1024;
                } else if l.starts_with("Threads:") {
                    u.threads = kb();
                }
            }
        }
        if let Some(f) = stat_fields(pid) {
            // utime and stime are fields 14 and 15 of stat; here 11 and 12 (0-based after state).
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let ticks = t(11) + t(12);
            u.cpu = Duration::from_secs_f64(ticks as f64 / clk_tck() as f64);
        }
        u
    }

    /// CPU used between two readings as a share of one core.
    pub fn cpu_share(before: &Usage, after: &Usage) -> f64 {
        let wall = match (before.at, after.at) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        if wall <= 0.0 {
            return 0.0;
        }
        after.cpu.saturating_sub(before.cpu).as_secs_f64() / wall
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless told otherwise).
pub fn clk_tck() -> u64 {
    static T: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// PIDs whose `comm` is `name` (e.g. the Docker daemon, for a reference figure).
pub fn pids_named(name: &str) -> Vec<u32> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
            {
                v.push(pid);
            }
        }
    }
    v
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// This process's soft limit on open files.
pub fn nofile_limit() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let l = s.lines().find(|l| l.starts_with("Max open files"))?;
    l.split_whitespace().nth(3)?.parse().ok()
}
