//! The resource use that agents publish with `--ha-stats` (`zedops/v1/agents/{agent}/stats`), as
//! Prometheus gauges on `/metrics`: CPU % and memory per container. Only signed snapshots newer
//! than the last one taken count (with security on, the signing time), and a snapshot older than
//! [`STALE`] is no longer shown, so a stopped agent's containers leave the metrics.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zedops_proto::ops::Stats;

/// How long a snapshot is shown after it arrived.
pub const STALE: Duration = Duration::from_secs(300);
/// Agents remembered (the fleet's size bounds this with security on; this bounds it without).
const MAX_AGENTS: usize = 10_000;

struct Sample {
    ts_ms: u64,
    at: Instant,
    stats: Stats,
}

#[derive(Default)]
pub struct Usage {
    by_agent: Mutex<HashMap<String, Sample>>,
}

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usage").finish_non_exhaustive()
    }
}

impl Usage {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sample>> {
        self.by_agent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `agent`'s snapshot signed (or received) at `ts_ms`; false when it is malformed or
    /// not newer than the one held.
    pub fn apply(&self, agent: &str, ts_ms: u64, payload: &[u8]) -> bool {
        let Ok(stats) = serde_json::from_slice::<Stats>(payload) else {
            return false;
        };
        let mut map = self.lock();
        if map.get(agent).is_some_and(|s| s.ts_ms >= ts_ms) {
            return false;
        }
        if map.len() >= MAX_AGENTS && !map.contains_key(agent) {
            map.retain(|_, s| s.at.elapsed() < STALE);
            if map.len() >= MAX_AGENTS {
                return false;
            }
        }
        let at = Instant::now();
        map.insert(agent.to_owned(), Sample { ts_ms, at, stats });
        true
    }

    /// Appends the gauges of every fresh snapshot to `out` (Prometheus text format).
    pub fn render(&self, out: &mut String) {
        let map = self.lock();
        let mut rows: Vec<(&String, &Sample)> =
            map.iter().filter(|(_, s)| s.at.elapsed() < STALE).collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        type Field = fn(&zedops_proto::ops::ContainerStat) -> f64;
        let gauges: [(&str, &str, Field); 3] = [
            (
                "zedops_container_cpu_percent",
                "CPU use of a running container, % of one core (agents with --ha-stats).",
                |c| c.cpu_percent,
            ),
            (
                "zedops_container_memory_usage_bytes",
                "Memory used by a running container, without the page cache (agents with --ha-stats).",
                |c| c.memory_usage as f64,
            ),
            (
                "zedops_container_memory_limit_bytes",
                "Memory limit of a running container (agents with --ha-stats).",
                |c| c.memory_limit as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (agent, s) in &rows {
                for c in &s.stats.stats {
                    let (a, n) = (label(agent), label(&c.name));
                    let _ = writeln!(
                        out,
                        "{name}{{agent=\"{a}\",container=\"{n}\"}} {}",
                        value(c)
                    );
                }
            }
        }
    }
}

/// A label value, escaped as the text format wants (`\`, `"` and newlines).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(name: &str, cpu: f64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"stats": [{
            "id": "abc", "name": name, "cpu_percent": cpu, "memory_usage": 1048576,
            "memory_limit": 2097152, "memory_percent": 50.0, "net_rx": 0, "net_tx": 0,
            "block_read": 0, "block_write": 0, "pids": 1
        }]}))
        .unwrap()
    }

    #[test]
    fn newer_snapshots_only_and_escaped_labels() {
        let u = Usage::default();
        assert!(u.apply("m", 10, &stats("web", 12.5)));
        assert!(!u.apply("m", 10, &stats("web", 99.0)), "a replay");
        assert!(!u.apply("m", 9, &stats("web", 99.0)), "an older one");
        assert!(!u.apply("m", 11, b"not json"));
        assert!(u.apply("n", 1, &stats("we\"b", 1.0)));
        let mut out = String::new();
        u.render(&mut out);
        assert!(
            out.contains("zedops_container_cpu_percent{agent=\"m\",container=\"web\"} 12.5"),
            "{out}"
        );
        assert!(out.contains(
            "zedops_container_memory_usage_bytes{agent=\"m\",container=\"web\"} 1048576"
        ));
        assert!(out.contains("container=\"we\\\"b\""), "{out}");
        assert!(out.contains("# TYPE zedops_container_memory_limit_bytes gauge"));
    }
}
