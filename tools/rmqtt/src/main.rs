//! zedops' clustered test broker: rmqtt's server with five plugins, set up as `rmqttd` sets it up
//! (its allocator, and the circuit breaker of `rmqtt.toml`).
//!
//! It reads the same configuration as `rmqttd` (`-f rmqtt.toml --id N`, a plugin directory of
//! `<plugin>.toml` files; `tests/src/cluster.rs` writes them) and serves plain TCP listeners only:
//! the cluster tests need no TLS, WebSocket or QUIC on the broker side. It exits on SIGTERM or
//! Ctrl-C.

use anyhow::{anyhow, Context};
use clap::Parser;
use rmqtt::context::{
    CircuitBreakerConfig, CountBasedWindowConfig, ServerContext, TimeBasedWindowConfig,
    WindowConfig,
};
use rmqtt::net::Builder;
use rmqtt::node::Node;
use rmqtt::server::MqttServer;
use rmqtt_conf::listener::Listener;
use rmqtt_conf::Settings;

/// The plugins this binary carries: (name, whether it may be stopped once started). Each starts
/// when the configuration's `plugins.default_startups` names it.
const PLUGINS: [(&str, bool); 5] = [
    ("rmqtt-cluster-raft", true),
    ("rmqtt-retainer", false),
    ("rmqtt-shared-subscription", false),
    ("rmqtt-acl", false),
    ("rmqtt-auth-http", false),
];

/// As `rmqttd` does on Linux (rmqtt-bin/src/server.rs): rmqtt allocates per message and per
/// task, and with glibc's allocator malloc and free were the largest item of the nodes' profile
/// at 10 000 agents (docs/benchmarks.md).
#[cfg(target_os = "linux")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("zedops-rmqtt: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let opts = rmqtt_conf::Options::parse();
    if opts.version {
        println!(
            "zedops-rmqtt {} (rmqtt {})",
            env!("CARGO_PKG_VERSION"),
            Node::version()
        );
        return Ok(());
    }
    let conf = Settings::init(opts).map_err(|e| anyhow!("configuration: {e}"))?;
    let level = if conf.log.to.off() {
        "off"
    } else {
        conf.log.level.as_str()
    };
    tracing_subscriber::fmt()
        .with_env_filter(level)
        .with_writer(std::io::stderr)
        .init();
    let scx = context(conf).await;
    scx.node.start_grpc_server(
        scx.clone(),
        conf.rpc.server_addr,
        conf.rpc.reuseaddr,
        conf.rpc.reuseport,
    );
    register_plugins(&scx, conf).await?;
    let mut server = MqttServer::new(scx);
    for cfg in Settings::instance().listeners.tcps.values() {
        let bound = listener(cfg).bind().map_err(|e| anyhow!("{e}"));
        let tcp = bound.and_then(|l| l.tcp().map_err(|e| anyhow!("{e}")));
        server = server.listener(tcp.with_context(|| format!("MQTT listener on {}", cfg.addr))?);
    }
    server.build().start();
    shutdown_signal().await;
    Ok(())
}

async fn context(conf: &'static Settings) -> ServerContext {
    let node = Node::new(
        conf.node.id,
        conf.node.busy.loadavg,
        conf.node.busy.cpuloadavg,
        conf.node.busy.update_interval,
    );
    let args = rmqtt::args::CommandArgs {
        node_id: conf.opts.node_id,
        plugins_default_startups: conf.opts.plugins_default_startups.clone(),
        node_grpc_addrs: conf.opts.node_grpc_addrs.clone(),
        raft_peer_addrs: conf.opts.raft_peer_addrs.clone(),
        raft_leader_id: conf.opts.raft_leader_id,
    };
    ServerContext::new()
        .args(args)
        .node(node)
        .task_exec_workers(conf.task.exec_workers)
        .task_exec_queue_max(conf.task.exec_queue_max)
        .busy_check_enable(conf.node.busy.check_enable)
        .busy_handshaking_limit(conf.node.busy.handshaking)
        .mqtt_max_sessions(conf.mqtt.max_sessions)
        .plugins_config_dir(conf.plugins.dir.as_str())
        .circuit_breaker_config(circuit_breaker(&conf.circuit_breaker))
        .build()
        .await
}

/// The circuit breaker of the gRPC clients between nodes, from `rmqtt.toml`'s `circuit_breaker`
/// section, as `rmqttd` reads it (rmqtt 0.24's `ServerContext` otherwise keeps its default, and
/// ignores the section).
///
/// Why it matters: with rmqtt's default, a `TimeBased` window of 45 s, the breaker
/// (tower-resilience-circuitbreaker 0.10, `Circuit::time_based_stats`) keeps a record of every
/// call in the window and counts them all again on every call, so each gRPC call between nodes
/// costs as much as the number of calls of the last 45 s. At 10 000 agents a node forwards tens of
/// thousands of retained messages a second, and the nodes spent their time counting. The
/// cluster's configuration (`tests/src/cluster.rs`, `docs/operations.md`) names `CountBased`,
/// which keeps counters only.
fn circuit_breaker(c: &rmqtt_conf::CircuitBreaker) -> CircuitBreakerConfig {
    let window = if c.sliding_window_type.eq_ignore_ascii_case("CountBased") {
        WindowConfig::CountBased(CountBasedWindowConfig {
            sliding_window_size: c.sliding_window_size,
        })
    } else {
        WindowConfig::TimeBased(TimeBasedWindowConfig {
            sliding_window_duration: c.sliding_window_duration,
            sliding_window_size: c.sliding_window_size,
        })
    };
    CircuitBreakerConfig {
        failure_rate_threshold: c.failure_rate_threshold,
        window,
        minimum_number_of_calls: c.minimum_number_of_calls,
        wait_duration_in_open: c.wait_duration_in_open,
        slow_call_duration_threshold: c.slow_call_duration_threshold,
        slow_call_rate_threshold: c.slow_call_rate_threshold,
        name: "grpc".into(),
    }
}

async fn register_plugins(scx: &ServerContext, conf: &Settings) -> anyhow::Result<()> {
    let listed = |names: &[String], name: &str| names.iter().any(|s| s == name);
    for (name, immutable) in PLUGINS {
        let start = listed(&conf.plugins.default_startups, name)
            && !listed(&conf.plugins.disabled_default_startups, name);
        let r = match name {
            "rmqtt-cluster-raft" => {
                rmqtt_cluster_raft::register_named(scx, name, start, immutable).await
            }
            "rmqtt-retainer" => rmqtt_retainer::register_named(scx, name, start, immutable).await,
            "rmqtt-shared-subscription" => {
                rmqtt_shared_subscription::register_named(scx, name, start, immutable).await
            }
            "rmqtt-acl" => rmqtt_acl::register_named(scx, name, start, immutable).await,
            _ => rmqtt_auth_http::register_named(scx, name, start, immutable).await,
        };
        r.map_err(|e| anyhow!("plugin {name}: {e}"))?;
    }
    Ok(())
}

/// An rmqtt listener builder from one `[listener.tcp.*]` section.
fn listener(cfg: &Listener) -> Builder {
    Builder::new()
        .name(cfg.name.as_str())
        .laddr(cfg.addr)
        .max_connections(cfg.max_connections)
        .max_handshaking_limit(cfg.max_handshaking_limit)
        .max_packet_size(cfg.max_packet_size.as_u32())
        .backlog(cfg.backlog)
        .nodelay(cfg.nodelay)
        .reuseaddr(cfg.reuseaddr)
        .reuseport(cfg.reuseport)
        .tcp_keepalive(cfg.tcp_keepalive)
        .allow_anonymous(cfg.allow_anonymous)
        .min_keepalive(cfg.min_keepalive)
        .max_keepalive(cfg.max_keepalive)
        .allow_zero_keepalive(cfg.allow_zero_keepalive)
        .keepalive_backoff(cfg.keepalive_backoff)
        .max_inflight(cfg.max_inflight)
        .handshake_timeout(cfg.handshake_timeout)
        .max_mqueue_len(cfg.max_mqueue_len)
        .mqueue_rate_limit(cfg.mqueue_rate_limit.0, cfg.mqueue_rate_limit.1)
        .max_clientid_len(cfg.max_clientid_len)
        .max_qos_allowed(cfg.max_qos_allowed)
        .max_topic_levels(cfg.max_topic_levels)
        .session_expiry_interval(cfg.session_expiry_interval)
        .max_session_expiry_interval(cfg.max_session_expiry_interval)
        .message_retry_interval(cfg.message_retry_interval)
        .message_expiry_interval(cfg.message_expiry_interval)
        .max_subscriptions(cfg.max_subscriptions)
        .max_topic_aliases(cfg.max_topic_aliases)
        .limit_subscription(cfg.limit_subscription)
        .idle_timeout(cfg.idle_timeout)
}

async fn shutdown_signal() {
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
