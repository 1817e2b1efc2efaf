//! Scenario 6: fleet scale with simulated agents.
//!
//! A simulated agent is a plain MQTT 5 client (rumqttc, as the agent) that does on the wire what
//! `zedops agent` does, with a simulated container runtime: Last Will (offline status, retained);
//! after every CONNACK it subscribes to its request topics and `fleet/resync` (shared-subscription
//! groups of its own, `topics::agent_subscriptions`), and once the SUBACKs are in publishes its
//! retained status, snapshot (25 containers) and per-container topics (QoS 1, like the agent); on `fleet/resync` it
//! republishes status and snapshot after a random delay of up to 1 s. Many share this process and
//! its runtime.
//!
//! For each fleet size N, with the broker as its own process and the API as another:
//! 1. connect N simulated agents and let them publish;
//! 2. start the API (`zedops serve --no-auth --broker …`), stop it, start it again, and time each
//!    start until the API shows every agent online and every container (`/metrics`);
//! 3. a subscriber with the API's filters subscribes (retained delivery of 2N messages);
//! 4. blast: every simulated agent republishes at once (27 N publishes) — broker throughput;
//! 5. resident memory and CPU of broker and API;
//! 6. on the cluster, a node killed (the leader, or with `--fleet-kill follower` a follower): the
//!    time until every agent it held is back on another node with its state acknowledged, and
//!    until the API (on a node that stays) has heard from each of them since the kill.
//!
//! The reference is the same run with Mosquitto as the broker.
//!
//! # Layout
//! - [`sim`]: the simulated agents and their fleet.
//! - [`probe`]: what watches a run: the API's counts, its start, a counting subscriber.
//! - [`one_run`]: one fleet size on one broker, step by step.
//! - [`report`]: the tables of the runs.

mod one_run;
mod probe;
mod report;
mod sim;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use zedops_proto::{AgentState, AgentStatus};

use crate::stats::{fmt_dur, Table};
use crate::Opts;

use one_run::one_run;
use sim::SimAgent;

/// Containers per simulated agent.
pub const CONTAINERS: usize = 25;
/// Seconds a simulated agent waits for its CONNACK. rumqttc's default (and the agent's) is 5 s;
/// during a connection storm rumqttd answers later than that, and the resulting reconnects with
/// the same client id make rumqttd 0.20 panic (see docs/benchmarks.md). 30 s measures the fleet
/// rather than that failure.
const SIM_CONNECT_TIMEOUT: u64 = 30;
/// Outgoing QoS 1 publishes in flight per simulated client.
const SIM_INFLIGHT: u16 = 100;
/// Bench-only topic: every simulated agent republishes everything at once (no jitter).
const BLAST: &str = "zedops-bench/blast";

/// Which cluster node the fleet scenario kills (`--fleet-kill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kill {
    /// Node 1, the raft leader at start.
    Leader,
    /// Node 2, a follower.
    Follower,
}

impl Kill {
    /// The node's index.
    fn node(self) -> usize {
        match self {
            Kill::Leader => 0,
            Kill::Follower => 1,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kill::Leader => "node 1 (the raft leader at start)",
            Kill::Follower => "node 2 (a follower)",
        }
    }
}

/// What a simulated agent does on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Exactly what `zedops agent` does: publishes status, snapshot and 25 per-container topics.
    Full,
    /// What `zedops agent --no-container-topics` does: publishes status and snapshot only.
    Lean,
    /// `Full` as agents before targeted resyncs did (before 2026-12-02, `proto/src/resync.rs`):
    /// every `fleet/resync` makes them republish, whoever it names — the reference for the
    /// API's gap filling at large fleets.
    FullEveryResync,
}

impl Profile {
    fn pubs_per_agent(self) -> usize {
        match self {
            Profile::Full | Profile::FullEveryResync => CONTAINERS + 2,
            Profile::Lean => 2,
        }
    }
}

pub async fn run(o: &Opts) -> anyhow::Result<Vec<Table>> {
    let sizes: Vec<usize> = o.fleet_sizes.clone();
    let max = sizes.iter().copied().max().unwrap_or(0);
    let t0 = Instant::now();
    let sims: Vec<Arc<SimAgent>> = (0..max).map(|i| Arc::new(SimAgent::new(i))).collect();
    // The payloads must parse as the API parses them.
    if let Some(s) = sims.first() {
        serde_json::from_slice::<zedops_proto::Snapshot>(&s.snapshot(1))
            .context("simulated snapshot")?;
        serde_json::from_slice::<AgentStatus>(&s.status(AgentState::Online))
            .context("simulated status")?;
    }
    let snap_size = sims.first().map(|s| s.snapshot(1).len()).unwrap_or(0);
    let cont_size = sims
        .first()
        .map(|s| s.containers.iter().map(|(_, b)| b.len()).sum::<usize>() / CONTAINERS.max(1))
        .unwrap_or(0);
    eprintln!(
        "[fleet] prepared {max} simulated agents in {}",
        fmt_dur(t0.elapsed())
    );

    let mut runs = Vec::new();
    for &n in &sizes {
        for kind in o.fleet_brokers.iter().map(String::as_str) {
            let kind: &'static str = match kind {
                "mosquitto" => "mosquitto",
                "cluster" => "cluster",
                _ => "embedded",
            };
            let kill = o.fleet_kill;
            runs.push(one_run(kind, Profile::Full, n, &sims, o.quick, kill).await);
            // Where the embedded broker cannot take the full profile at this size, also measure the
            // API against it with agents that publish no per-container topics.
            let failed = runs.last().is_some_and(|r| r.failure.is_some());
            // On the cluster, the same beside it: what per-container topics cost a node kill.
            if (kind == "embedded" && (failed || n >= 5000)) || (kind == "cluster" && n >= 5000) {
                runs.push(one_run(kind, Profile::Lean, n, &sims, o.quick, kill).await);
            }
            // Where a busy broker drops copies, the API's gap filling matters: beside the same
            // fleet as agents answered every resync before they honoured targeted ones.
            if kind == "mosquitto" && n >= 5000 {
                let old = Profile::FullEveryResync;
                runs.push(one_run(kind, old, n, &sims, o.quick, kill).await);
            }
        }
    }

    Ok(report::tables(&runs, snap_size, cont_size))
}

#[cfg(test)]
mod tests {
    /// rumqttc 0.25 (v5) allocates `vec![None; inflight_limit + 1]` of `Option<Publish>` per client,
    /// with a default limit of u16::MAX: the size of that table is what an MQTT client (agent, API,
    /// simulated agent) holds resident unless the limit is lowered.
    #[test]
    fn default_inflight_table_size() {
        let slot = std::mem::size_of::<Option<rumqttc::v5::mqttbytes::v5::Publish>>();
        let table = slot * (u16::MAX as usize + 1);
        println!("Option<Publish>: {slot} bytes; default in-flight table: {table} bytes");
        assert!(table > 8 * 1024 * 1024, "{table}");
    }
}
