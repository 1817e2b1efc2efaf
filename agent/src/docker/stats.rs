//! `container.stats`: what `docker stats --no-stream` shows of each container, computed the way
//! the docker CLI computes it (CPU % from the delta between the two samples Docker returns, memory
//! without the page cache). Containers are read concurrently, at most [`CONCURRENCY`] at once: one
//! read waits for Docker's second sample (about a second), so reading them one after another would
//! cost a second per container.

use std::time::Duration;

use bollard::models::{ContainerCpuStats, ContainerStatsResponse};
use bollard::query_parameters::StatsOptions;
use zedops_proto::ops::{ContainerStat, Stats};

use super::*;

/// Containers read at once. Each read waits for Docker's stats collector (a tick a second, even
/// with `one-shot` on Docker 20.10), so reads in flight cost a connection each and no CPU: 64 at
/// once read 50 containers in one tick (16 took four, measured in docs/benchmarks.md § Streams).
pub const CONCURRENCY: usize = 64;
/// One container's read: Docker takes about a second for the second sample.
const STATS_TIMEOUT: Duration = Duration::from_secs(10);

impl Driver {
    /// The stats of `target`, or of every running container without one. A container that goes
    /// away meanwhile is left out of the list (only a named target's error is an error).
    pub async fn stats(&self, target: Option<&Resolved>) -> Result<Stats, DriverError> {
        self.sample(target, &mut Sampler::default()).await
    }

    /// [`Driver::stats`], for the next of a series of snapshots: a container read before is asked
    /// for one sample (Docker's `one-shot`) and its CPU % is taken over the time since
    /// `sampler`'s last read of it; one new to the series gets Docker's two samples.
    pub async fn sample(
        &self,
        target: Option<&Resolved>,
        sampler: &mut Sampler,
    ) -> Result<Stats, DriverError> {
        let docker = self.docker()?;
        let targets: Vec<(String, String)> = match target {
            Some(t) => vec![(t.id.clone(), t.name.clone())],
            None => self
                .list(false)
                .await?
                .into_iter()
                .filter(|c| c.state == zedops_proto::ContainerState::Running)
                .map(|c| (c.id, c.name))
                .collect(),
        };
        let reads = futures_util::stream::iter(targets).map(|(id, name)| {
            let before = sampler.prev.get(&id).cloned();
            self.stat(&docker, id, name, before)
        });
        let results: Vec<_> = reads.buffer_unordered(CONCURRENCY).collect().await;
        if let (Some(_), Some(Err(e))) = (target, results.first()) {
            return Err(e.clone());
        }
        sampler.prev.clear();
        let mut stats = Vec::new();
        for (row, cpu) in results.into_iter().flatten() {
            if let Some(cpu) = cpu {
                sampler.prev.insert(row.id.clone(), cpu);
            }
            stats.push(row);
        }
        stats.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Stats { stats })
    }

    /// One container's row, and its CPU counters for the next read of a series.
    async fn stat(
        &self,
        docker: &Docker,
        id: String,
        name: String,
        before: Option<ContainerCpuStats>,
    ) -> Result<(ContainerStat, Option<ContainerCpuStats>), DriverError> {
        let opts = StatsOptions {
            stream: false,
            one_shot: before.is_some(),
        };
        let read = async {
            let mut s = Box::pin(docker.stats(&id, Some(opts)));
            s.next().await.unwrap_or_else(|| {
                Err(BollardError::DockerResponseServerError {
                    status_code: 500,
                    message: "Docker sent no stats".into(),
                })
            })
        };
        let mut s = self
            .call("read the container's stats", STATS_TIMEOUT, read)
            .await?;
        if before.is_some() {
            s.precpu_stats = before;
        }
        let cpu = s.cpu_stats.clone();
        Ok((row_of(id, name, &s), cpu))
    }
}

/// The CPU counters of a series' last read, by container ID (only the containers of that read).
#[derive(Debug, Default)]
pub struct Sampler {
    prev: HashMap<String, ContainerCpuStats>,
}

/// One row from Docker's answer: the docker CLI's arithmetic.
pub fn row_of(id: String, name: String, s: &ContainerStatsResponse) -> ContainerStat {
    let mem = s.memory_stats.as_ref();
    let usage = mem.and_then(|m| m.usage).unwrap_or(0);
    let cache = mem.and_then(|m| m.stats.as_ref()).map_or(0, |st| {
        // cgroup v1 `total_inactive_file`, else v2 `inactive_file` (docker/cli's
        // calculateMemUsageUnixNoCache).
        st.get("total_inactive_file")
            .or_else(|| st.get("inactive_file"))
            .copied()
            .unwrap_or(0)
    });
    let used = if cache < usage { usage - cache } else { usage };
    let limit = mem.and_then(|m| m.limit).unwrap_or(0);
    let (net_rx, net_tx) = s
        .networks
        .iter()
        .flatten()
        .fold((0, 0), |(rx, tx), (_, n)| {
            (rx + n.rx_bytes.unwrap_or(0), tx + n.tx_bytes.unwrap_or(0))
        });
    let (block_read, block_write) = block_io(s);
    ContainerStat {
        id,
        name,
        cpu_percent: cpu_percent(s),
        memory_usage: used,
        memory_limit: limit,
        memory_percent: if limit > 0 {
            used as f64 / limit as f64 * 100.0
        } else {
            0.0
        },
        net_rx,
        net_tx,
        block_read,
        block_write,
        pids: s.pids_stats.as_ref().and_then(|p| p.current).unwrap_or(0),
    }
}

/// CPU % between Docker's two samples: the container's share of the host's CPU time, times the
/// number of CPUs (100 % = one core busy), as docker/cli's calculateCPUPercentUnix.
fn cpu_percent(s: &ContainerStatsResponse) -> f64 {
    let (Some(now), Some(before)) = (s.cpu_stats.as_ref(), s.precpu_stats.as_ref()) else {
        return 0.0;
    };
    let total = |c: &bollard::models::ContainerCpuStats| {
        c.cpu_usage
            .as_ref()
            .and_then(|u| u.total_usage)
            .unwrap_or(0)
    };
    let cpu_delta = total(now).saturating_sub(total(before)) as f64;
    let system_delta = now
        .system_cpu_usage
        .unwrap_or(0)
        .saturating_sub(before.system_cpu_usage.unwrap_or(0)) as f64;
    let cpus = now.online_cpus.map(f64::from).unwrap_or_else(|| {
        now.cpu_usage
            .as_ref()
            .and_then(|u| u.percpu_usage.as_ref())
            .map_or(1.0, |p| p.len().max(1) as f64)
    });
    if cpu_delta > 0.0 && system_delta > 0.0 {
        cpu_delta / system_delta * cpus * 100.0
    } else {
        0.0
    }
}

/// Bytes read and written, summed over devices (`io_service_bytes_recursive`).
fn block_io(s: &ContainerStatsResponse) -> (u64, u64) {
    let entries = s
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref());
    entries.into_iter().flatten().fold((0, 0), |(r, w), e| {
        let v = e.value.unwrap_or(0);
        match e.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => (r + v, w),
            Some("write") => (r, w + v),
            _ => (r, w),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_cli_arithmetic() {
        let s: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000u64}, "system_cpu_usage": 20_000_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000u64}, "system_cpu_usage": 18_000_000_000u64},
            "memory_stats": {"usage": 300, "limit": 1000, "stats": {"inactive_file": 100}},
            "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}},
            "blkio_stats": {"io_service_bytes_recursive": [
                {"major": 8, "minor": 0, "op": "read", "value": 5}, {"major": 8, "minor": 0, "op": "Write", "value": 7}
            ]},
            "pids_stats": {"current": 4}
        }))
        .unwrap();
        let r = row_of("i".into(), "n".into(), &s);
        // 1e9 of 2e9 system time, 2 CPUs: one core busy = 100 %.
        assert!((r.cpu_percent - 100.0).abs() < 1e-9, "{}", r.cpu_percent);
        assert_eq!((r.memory_usage, r.memory_limit), (200, 1000));
        assert!((r.memory_percent - 20.0).abs() < 1e-9);
        assert_eq!(
            (r.net_rx, r.net_tx, r.block_read, r.block_write, r.pids),
            (11, 22, 5, 7, 4)
        );
        let empty = row_of("i".into(), "n".into(), &ContainerStatsResponse::default());
        assert_eq!((empty.cpu_percent, empty.memory_percent), (0.0, 0.0));
    }
}
