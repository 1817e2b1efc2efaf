//! The tables of the fleet runs: 6a (the API's (re)start at each size), 6b (the broker's
//! throughput and every process's resources).

use std::time::Duration;

use super::one_run::Run;
use super::{Profile, CONTAINERS};
use crate::procs;
use crate::stats::{fmt_bytes, fmt_dur, Table};

fn o_dur(d: Option<Duration>) -> String {
    d.map(fmt_dur).unwrap_or_else(|| "—".into())
}

/// Both tables; `snap_size` and `cont_size` are the simulated payloads' sizes, for the notes.
pub(super) fn tables(runs: &[Run], snap_size: usize, cont_size: usize) -> Vec<Table> {
    vec![scale(runs, snap_size, cont_size), throughput(runs)]
}

fn scale(runs: &[Run], snap_size: usize, cont_size: usize) -> Table {
    let mut t = Table::new(
        format!("6a. Fleet scale: API (re)start until every agent and container is visible ({CONTAINERS} containers per agent)"),
        &[
            "agents",
            "broker",
            "fleet connect + publish",
            "API up",
            "API first start → all visible",
            "API restart → all agents online",
            "API restart → all visible",
            "target",
        ],
    );
    for r in runs {
        t.row(scale_row(r));
        for note in failure_notes(r) {
            t.note(note);
        }
    }
    t.note(format!(
        "Simulated agents: rumqttc MQTT 5 clients in the benchmark process (one runtime, 2 cores shared with broker and API); per agent a {} snapshot and {CONTAINERS} per-container topics of ~{} each, retained, QoS 1. At most 200 connections are being set up at once.",
        fmt_bytes(snap_size as u64),
        fmt_bytes(cont_size as u64)
    ));
    t.note("\"API up\": spawn until `zedops serve --broker …` prints its banner. \"all visible\": /metrics shows zedops_agents_online = N and zedops_containers_known = 25 N (polled every 25 ms). The API rebuilds from retained status and snapshots, then its fleet/resync makes every agent republish within 1 s.");
    t
}

fn scale_row(r: &Run) -> Vec<String> {
    let restart_all = r.restart.as_ref().and_then(|s| s.all);
    let goal = format!("{} agents visible ≤ 10 s after a restart", r.n);
    let target = if r.profile == Profile::FullEveryResync {
        "reference".to_owned()
    } else if r.n >= 5000 && r.profile == Profile::Full && r.failure.is_some() {
        format!("{goal}: MISSED (fleet never fully connected)")
    } else if r.n >= 5000 {
        match restart_all {
            Some(d) if d <= Duration::from_secs(10) => format!("{goal}: ok"),
            _ => format!("{goal}: MISSED"),
        }
    } else {
        String::new()
    };
    vec![
        r.n.to_string(),
        r.label(),
        o_dur(r.connect),
        o_dur(r.restart.as_ref().map(|s| s.up)),
        o_dur(r.first.as_ref().and_then(|s| s.all)),
        o_dur(r.restart.as_ref().and_then(|s| s.agents)),
        o_dur(restart_all),
        target,
    ]
}

/// Why a run failed, and the connection errors and drops it saw.
fn failure_notes(r: &Run) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(f) = &r.failure {
        let seen = r
            .restart
            .as_ref()
            .or(r.first.as_ref())
            .map(|s| {
                format!(
                    " (API last saw {} agents online, {} containers)",
                    s.last_seen.0, s.last_seen.1
                )
            })
            .unwrap_or_default();
        notes.push(format!("{} agents, {}: FAILED: {f}{seen}", r.n, r.label()));
    }
    if r.errors > 0 || r.dropped > 0 {
        notes.push(format!(
            "{} agents, {}: {} connection errors, {} publishes dropped by full client queues ({})",
            r.n,
            r.label(),
            r.errors,
            r.dropped,
            r.last_error.clone().unwrap_or_default()
        ));
    }
    notes
}

fn throughput(runs: &[Run]) -> Table {
    let mut t2 = Table::new(
        "6b. Fleet scale: broker throughput and resources",
        &[
            "agents",
            "broker",
            "retained to a new subscriber (2N msgs)",
            "blast: N×27 publishes in",
            "in msg/s",
            "out msg/s (MB/s), delivered/expected",
            "CPU in blast: broker / sim agents",
            "broker RSS (peak)",
            "broker fds",
            "API RSS idle (peak)",
            "API CPU to all visible",
            "GET /api/v1/agents",
        ],
    );
    for r in runs {
        t2.row(throughput_row(r));
    }
    t2.note("Blast: a bench-only topic makes every simulated agent republish status, snapshot and 25 per-container topics at once (27 N QoS 1 publishes, acknowledged). Out: copies delivered to one subscriber with the API's filters (2 N) and the blast itself to every agent (N); the API gets another 2 N not counted here (agents no longer subscribe to their own per-container topics). Broker CPU is its process's share of one core during the blast (200 % = both cores).");
    for r in runs {
        if let Some((_, _, delivered, _)) = r.blast {
            if delivered < r.blast_expected {
                t2.note(format!(
                    "{} agents, {}: {} of {} copies never arrived: QoS 0 deliveries the broker dropped under the burst (every republish was acknowledged, so every agent got the blast).",
                    r.n,
                    r.label(),
                    r.blast_expected - delivered,
                    r.blast_expected
                ));
            }
        }
    }
    for r in runs {
        if let Some((kill, held, back, heard)) = r.node_kill {
            // The goal: back on another node and visible in the API. The per-container topics
            // follow a reconnect within `PER_CONTAINER_SPREAD` by design (the API does not
            // read them; the cluster still holds them), so "everything acknowledged" is shown
            // beside it, not judged.
            let verdict = match heard.is_some_and(|d| d <= Duration::from_secs(10)) {
                true => "goal ≤ 10 s: ok",
                false => "goal ≤ 10 s: MISSED",
            };
            let time =
                |d: Option<Duration>| d.map(fmt_dur).unwrap_or_else(|| "more than 60 s".into());
            t2.note(format!(
                "{} agents, {}: {} killed with SIGKILL after the blast: the API (on a node that stays) had heard from each of its {held} agents since the kill in {} ({verdict}); every message they republish, the per-container topics sent within 5 s of the reconnect included, acknowledged in {}. They move as `zedops agent` does (`proto/src/failover.rs`).",
                r.n,
                r.label(),
                kill.describe(),
                time(heard),
                time(back),
            ));
        }
    }
    for r in runs.iter().filter(|r| r.broker_procs.len() > 1) {
        let nodes: Vec<String> = (r.broker_procs.iter().enumerate())
            .map(|(i, (rss, hwm, cpu))| {
                let (rss, hwm) = (fmt_bytes(*rss), fmt_bytes(*hwm));
                format!("node {}: {rss} ({hwm}), {:.0} %", i + 1, cpu * 100.0)
            })
            .collect();
        t2.note(format!(
            "{} agents, {}: per broker process, RSS (peak) and CPU during the blast: {}.",
            r.n,
            r.label(),
            nodes.join("; ")
        ));
    }
    t2.note(format!(
        "Benchmark process (simulated agents) RSS, largest seen: {}. Open files limit of this process: {}.",
        fmt_bytes(runs.iter().map(|r| r.bench_rss).max().unwrap_or(0)),
        procs::nofile_limit().map(|n| n.to_string()).unwrap_or_else(|| "?".into())
    ));
    t2
}

/// The blast's cells: its duration, rates in and out, and CPU shares.
fn blast_cells(r: &Run) -> [String; 4] {
    let Some((d, acked, delivered, bytes)) = r.blast else {
        return ["—".into(), "—".into(), "—".into(), "—".into()];
    };
    let s = d.as_secs_f64().max(1e-9);
    [
        format!("{} ({} acked)", fmt_dur(d), acked),
        format!("{:.0}", acked as f64 / s),
        format!(
            "{:.0} ({:.1}), {delivered}/{}",
            delivered as f64 / s,
            bytes as f64 / s / 1e6,
            r.blast_expected
        ),
        format!(
            "{:.0} % / {:.0} %",
            r.broker_cpu * 100.0,
            r.bench_cpu * 100.0
        ),
    ]
}

fn throughput_row(r: &Run) -> Vec<String> {
    let [blast_in, in_rate, out_rate, cpu] = blast_cells(r);
    vec![
        r.n.to_string(),
        r.label(),
        r.retained
            .map(|(d, got)| format!("{} ({got})", fmt_dur(d)))
            .unwrap_or_else(|| "—".into()),
        blast_in,
        in_rate,
        out_rate,
        cpu,
        format!("{} ({})", fmt_bytes(r.broker_rss), fmt_bytes(r.broker_hwm)),
        r.broker_fds.to_string(),
        format!("{} ({})", fmt_bytes(r.api_rss_idle), fmt_bytes(r.api_hwm)),
        r.restart
            .as_ref()
            .map(|s| format!("{:.2} s", s.usage_at_all.cpu.as_secs_f64()))
            .unwrap_or_else(|| "—".into()),
        r.agents_list
            .map(|(d, listed, size)| {
                format!(
                    "{} ({listed} agents, {})",
                    fmt_dur(d),
                    fmt_bytes(size as u64)
                )
            })
            .unwrap_or_else(|| "—".into()),
    ]
}
