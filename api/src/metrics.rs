//! Prometheus metrics, rendered as text by hand (a few counters and one histogram need no crate).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

#[derive(Debug, Default)]
struct Inner {
    /// (op, outcome) → count
    requests: BTreeMap<(String, String), u64>,
    /// op → (bucket counts, sum seconds, count)
    latency: BTreeMap<String, ([u64; BUCKETS.len()], f64, u64)>,
    /// The broker hook's questions: (auth, publish or subscribe; allow or deny) → count
    hook: BTreeMap<(&'static str, &'static str), u64>,
    /// The broker hook's reads of the database.
    hook_reads: u64,
}

/// The values of the moment that [`Metrics::render`] shows as gauges.
#[derive(Debug, Default)]
pub struct Gauges {
    pub agents_known: usize,
    pub agents_online: usize,
    pub containers: usize,
    pub sse_clients: usize,
    pub requests_in_flight: usize,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Records one request: its op, its outcome (`ok` or an error code) and its duration.
    pub fn record(&self, op: &str, outcome: &str, took: Duration) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m.requests
            .entry((op.to_owned(), outcome.to_owned()))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        let h = m
            .latency
            .entry(op.to_owned())
            .or_insert(([0; BUCKETS.len()], 0.0, 0));
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.0[i] += 1;
            }
        }
        h.1 += secs;
        h.2 += 1;
    }

    /// One question of the broker hook (`auth`, `publish` or `subscribe`) and its answer.
    pub fn hook_question(&self, question: &'static str, allowed: bool) {
        let answer = if allowed { "allow" } else { "deny" };
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m.hook.entry((question, answer)).or_default() += 1;
    }

    /// One read of the database by the broker hook.
    pub fn hook_database_read(&self) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.hook_reads += 1;
    }

    /// The Prometheus text exposition, after the gauges of the moment.
    pub fn render(&self, gauges: &Gauges) -> String {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = String::new();
        for (name, help, value) in [
            (
                "zedops_agents_online",
                "Agents whose retained status says online.",
                gauges.agents_online,
            ),
            (
                "zedops_agents_known",
                "Agents in the fleet cache.",
                gauges.agents_known,
            ),
            (
                "zedops_containers_known",
                "Containers in the fleet cache.",
                gauges.containers,
            ),
            (
                "zedops_sse_clients",
                "Connected Server-Sent Events clients.",
                gauges.sse_clients,
            ),
            (
                "zedops_requests_in_flight",
                "Requests to agents waiting for their replies.",
                gauges.requests_in_flight,
            ),
        ] {
            let _ = writeln!(s, "# HELP {name} {help}");
            let _ = writeln!(s, "# TYPE {name} gauge");
            let _ = writeln!(s, "{name} {value}");
        }
        let _ = writeln!(
            s,
            "# HELP zedops_requests_total Requests to agents by op and outcome."
        );
        let _ = writeln!(s, "# TYPE zedops_requests_total counter");
        for ((op, outcome), n) in &m.requests {
            let _ = writeln!(
                s,
                "zedops_requests_total{{op=\"{op}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        render_hook(&mut s, &m);
        let _ = writeln!(
            s,
            "# HELP zedops_request_duration_seconds Round trip of requests to agents."
        );
        let _ = writeln!(s, "# TYPE zedops_request_duration_seconds histogram");
        for (op, (buckets, sum, count)) in &m.latency {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "zedops_request_duration_seconds_bucket{{op=\"{op}\",le=\"{b}\"}} {}",
                    buckets[i]
                );
            }
            let _ = writeln!(
                s,
                "zedops_request_duration_seconds_bucket{{op=\"{op}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                s,
                "zedops_request_duration_seconds_sum{{op=\"{op}\"}} {sum}"
            );
            let _ = writeln!(
                s,
                "zedops_request_duration_seconds_count{{op=\"{op}\"}} {count}"
            );
        }
        s
    }
}

/// The broker hook's counters (all zero, and shown, on a server that is not a hook).
fn render_hook(s: &mut String, m: &Inner) {
    let _ = writeln!(
        s,
        "# HELP zedops_broker_hook_questions_total Questions of the external broker to the hook, by question and answer."
    );
    let _ = writeln!(s, "# TYPE zedops_broker_hook_questions_total counter");
    for ((question, answer), n) in &m.hook {
        let _ = writeln!(
            s,
            "zedops_broker_hook_questions_total{{question=\"{question}\",answer=\"{answer}\"}} {n}"
        );
    }
    let _ = writeln!(
        s,
        "# HELP zedops_broker_hook_database_reads_total Database reads of the hook (a connection's identity, read once per connection and TTL)."
    );
    let _ = writeln!(s, "# TYPE zedops_broker_hook_database_reads_total counter");
    let _ = writeln!(
        s,
        "zedops_broker_hook_database_reads_total {}",
        m.hook_reads
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.record("ping", "ok", Duration::from_micros(300));
        m.record("ping", "timeout", Duration::from_secs(2));
        let t = m.render(&Gauges {
            agents_known: 2,
            agents_online: 1,
            containers: 5,
            sse_clients: 0,
            requests_in_flight: 3,
        });
        assert!(t.contains("zedops_requests_in_flight 3"));
        assert!(t.contains("zedops_agents_online 1"));
        assert!(t.contains("zedops_requests_total{op=\"ping\",outcome=\"ok\"} 1"));
        assert!(t.contains("zedops_request_duration_seconds_bucket{op=\"ping\",le=\"0.0005\"} 1"));
        assert!(t.contains("zedops_request_duration_seconds_count{op=\"ping\"} 2"));
    }
}
