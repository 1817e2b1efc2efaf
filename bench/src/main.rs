//! `zedops-bench`: benchmarks of the control path and of fleet scale, each printed beside a
//! reference measured in the same run. `scripts/bench.sh` builds, provisions and runs `all`.
//!
//! Scenarios (see docs/benchmarks.md):
//! 1. `mqtt`      — `ping` round trip through the embedded broker vs Mosquitto;
//! 2. `http`      — HTTP → API → agent → reply, beside its parts;
//! 3. `list`      — `zedops ps` vs `docker ps`; list throughput of the API vs the Docker API;
//! 4. `restart`   — `zedops restart` vs `docker restart`;
//! 5. `events`    — Docker event → SSE and MQTT per-container topic;
//! 6. `fleet`     — N simulated agents: API restart until all visible, broker throughput, memory;
//! 7. `footprint` — idle agent RSS and CPU, binary size;
//! 8. `streams`   — follow latency and throughput vs `docker logs -f`, a stats stream's cost;
//! 9. `cluster`   — a three-node rmqtt cluster: round trip through two nodes, a killed node;
//! 10. `hook`     — one question of an external broker to the API's auth hook, per database.

mod cluster;
mod events;
mod fleet;
mod footprint;
mod hook;
mod http;
mod list;
mod procs;
mod restart;
mod rtt;
mod stack;
mod stats;
mod streams;

use std::net::SocketAddr;
use std::time::Instant;

use clap::{Parser, Subcommand};

use crate::stack::Stack;
use crate::stats::Table;

#[derive(Debug, Parser)]
#[command(
    name = "zedops-bench",
    about = "Benchmarks of zedops beside references measured in the same run"
)]
struct Cli {
    /// A short smoke run: fewer samples, shorter windows, smaller fleets.
    #[arg(long, global = true)]
    quick: bool,

    /// Fleet sizes for `fleet` (default 100,1000,5000; with --quick 100,1000).
    #[arg(long, global = true, value_delimiter = ',')]
    fleet_sizes: Option<Vec<usize>>,

    /// Brokers for `fleet`: embedded (zedops-broker alone in a process), mosquitto, and/or
    /// cluster (three rmqtt nodes: agents spread over them, the API on the last).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "embedded,mosquitto"
    )]
    fleet_brokers: Vec<String>,

    /// Which cluster node `fleet` kills after the blast: node 1, the raft leader (its death adds
    /// an election, and rmqtt-raft's leader cache), or node 2, a follower.
    #[arg(long, global = true, value_enum, default_value = "leader")]
    fleet_kill: fleet::Kill,

    /// Test containers on the local engine for the control-path scenarios.
    #[arg(long, global = true, default_value_t = 25)]
    containers: usize,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Every scenario, 1 to 10.
    All,
    /// 1. MQTT ping round trip: embedded broker vs Mosquitto.
    Mqtt,
    /// 2. HTTP → API → agent → reply, beside its parts.
    Http,
    /// 3. `zedops ps` vs `docker ps`; list throughput vs the Docker API.
    List,
    /// 4. `zedops restart` vs `docker restart`.
    Restart,
    /// 5. Docker event → SSE and MQTT per-container topic.
    Events,
    /// 6. Fleet scale with simulated agents.
    Fleet,
    /// 7. Idle agent footprint and binary size.
    Footprint,
    /// 8. Streams: follow latency and throughput, a stats stream's cost.
    Streams,
    /// 9. A three-node rmqtt cluster: round trip through two nodes, failover of a killed node.
    Cluster,
    /// 10. The broker hook: one ACL question, identity from the database or kept; SQLite, PostgreSQL.
    Hook,
    /// (internal) The embedded broker alone in this process, until SIGTERM.
    #[command(hide = true)]
    Broker {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

/// Options every scenario reads.
#[derive(Debug, Clone)]
pub struct Opts {
    pub quick: bool,
    pub fleet_sizes: Vec<usize>,
    pub containers: usize,
    pub fleet_brokers: Vec<String>,
    pub fleet_kill: fleet::Kill,
}

fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let mem = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .map(|k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let docker = zedops_tests::Docker::run(&[
        "version",
        "--format",
        "{{.Server.Version}} (API {{.Server.APIVersion}})",
    ])
    .unwrap_or_else(|_| "unavailable".into());
    let load = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{cores} cores ({cpu}), {mem} RAM, Linux {kernel}, Docker {docker}, zedops {}; load average {load}",
        zedops_proto::VERSION
    )
}

async fn broker(listen: SocketAddr) -> anyhow::Result<()> {
    let b = zedops_broker::start(zedops_broker::BrokerConfig {
        v5_listen: listen,
        v4_listen: None,
        ..zedops_broker::BrokerConfig::default()
    })
    .await?;
    println!("broker mqtt://{}", b.v5_addr());
    interrupted().await;
    tokio::task::spawn_blocking(move || b.stop()).await?;
    Ok(())
}

/// Runs a scenario, printing its tables at once and keeping them for the summary.
async fn step<F, Fut>(all: &mut Vec<Table>, what: &str, f: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<Table>>>,
{
    eprintln!("\n==> {what}");
    let t0 = Instant::now();
    match f().await {
        Ok(tables) => {
            for t in &tables {
                t.print();
            }
            all.extend(tables);
        }
        Err(e) => {
            let mut t = Table::new(format!("{what}: FAILED"), &["error"]);
            t.row(vec![format!("{e:#}")]);
            t.print();
            all.push(t);
        }
    }
    eprintln!("==> {what}: {:.1} s", t0.elapsed().as_secs_f64());
}

/// Resolves on SIGTERM or SIGINT, with the exit code a shell expects for that signal.
async fn interrupted() -> i32 {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => 143,
        _ = tokio::signal::ctrl_c() => 130,
    }
}

/// One thread for the measuring client (see the fleet scenario for the exception).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    if let Cmd::Broker { listen } = cli.command {
        return broker(listen).await;
    }
    tokio::select! {
        r = run(cli) => r,
        code = interrupted() => {
            // The scenario in progress is abandoned (the fleet's runtime runs on its own thread
            // and ends with the process): stop what it started, then leave.
            eprintln!("\n==> interrupted: stopping the benchmark's processes and test containers");
            procs::stop_children(std::time::Duration::from_secs(3));
            stack::remove_leftovers();
            std::process::exit(code);
        }
    }
}

/// Longer than a screen on purpose: one arm per scenario, each a few lines that start what it
/// needs and print its table; the list of scenarios reads best in one place.
async fn run(cli: Cli) -> anyhow::Result<()> {
    let o = Opts {
        quick: cli.quick,
        fleet_sizes: cli.fleet_sizes.clone().unwrap_or_else(|| {
            if cli.quick {
                vec![100, 1000]
            } else {
                vec![100, 1000, 5000]
            }
        }),
        containers: cli.containers.max(3),
        fleet_brokers: cli.fleet_brokers.clone(),
        fleet_kill: cli.fleet_kill,
    };

    let started = Instant::now();
    println!(
        "# zedops benchmarks{}\n",
        if o.quick { " (--quick)" } else { "" }
    );
    println!("Machine: {}", machine());
    println!("Run: {}", chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"));

    let which = &cli.command;
    let wants = |c: &str| {
        matches!(which, Cmd::All)
            || matches!(
                (c, which),
                ("mqtt", Cmd::Mqtt)
                    | ("http", Cmd::Http)
                    | ("list", Cmd::List)
                    | ("restart", Cmd::Restart)
                    | ("events", Cmd::Events)
                    | ("fleet", Cmd::Fleet)
                    | ("footprint", Cmd::Footprint)
                    | ("streams", Cmd::Streams)
                    | ("cluster", Cmd::Cluster)
                    | ("hook", Cmd::Hook)
            )
    };
    let mut tables: Vec<Table> = Vec::new();
    let needs_stack = [
        "mqtt",
        "http",
        "list",
        "restart",
        "events",
        "footprint",
        "streams",
    ]
    .iter()
    .any(|c| wants(c));
    if needs_stack {
        eprintln!(
            "==> starting zedops serve, zedops agent and {} test containers",
            o.containers
        );
        let stack = Stack::start(o.containers).await?;
        let mut ping = None;
        if wants("mqtt") {
            step(&mut tables, "1. MQTT round trip", || async {
                let (t, r) = rtt::mqtt_ping(&stack, &o).await?;
                ping = Some(r.embedded);
                Ok(vec![t])
            })
            .await;
        }
        if wants("http") {
            step(&mut tables, "2. HTTP round trip", || async {
                Ok(vec![rtt::http_round_trip(&stack, &o, ping.as_ref()).await?])
            })
            .await;
        }
        if wants("list") {
            step(&mut tables, "3. Listing", || list::run(&stack, &o)).await;
        }
        if wants("restart") {
            step(&mut tables, "4. Restart", || async {
                Ok(vec![restart::run(&stack, &o).await?])
            })
            .await;
        }
        if wants("events") {
            step(&mut tables, "5. Events", || async {
                Ok(vec![events::run(&stack, &o).await?])
            })
            .await;
        }
        if wants("streams") {
            step(&mut tables, "8. Streams", || streams::run(&stack, &o)).await;
        }
        if wants("footprint") {
            step(&mut tables, "7. Footprint", || async {
                Ok(vec![footprint::run(&stack, &o).await?])
            })
            .await;
        }
        drop(stack);
    }
    if wants("cluster") {
        step(&mut tables, "9. Cluster", || cluster::run(&o)).await;
    }
    if wants("hook") {
        step(&mut tables, "10. Broker hook", || hook::run(&o)).await;
    }
    if wants("fleet") {
        // Thousands of simulated agents: they get a multi-threaded runtime of their own, while the
        // latency scenarios keep the client on one thread (as lean as a client can be).
        step(&mut tables, "6. Fleet scale", || async {
            let o = o.clone();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            tokio::task::spawn_blocking(move || rt.block_on(fleet::run(&o))).await?
        })
        .await;
    }
    stack::remove_leftovers();

    // Summary in scenario order (footprint ran before the fleet to keep the machine quiet).
    tables.sort_by_key(|t| t.order());
    println!("\n## Summary ({:.0} s)\n", started.elapsed().as_secs_f64());
    println!("Machine: {}", machine());
    for t in &tables {
        t.print();
    }
    Ok(())
}
