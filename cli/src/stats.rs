//! `zedops stats`: each container's CPU, memory, network, block I/O and PIDs, like
//! `docker stats --no-stream`, fleet-wide with an AGENT column or for one agent. Agents are asked
//! at once, not one after another.

use std::io::Write;

use zedops_client::Client;
use zedops_proto::ops::ContainerStat;

use crate::args::{ClientOpts, Output, StatsArgs};
use crate::output::{print_json, table, OnAgent};

pub async fn stats(c: &Client, o: &ClientOpts, a: &StatsArgs) -> anyhow::Result<()> {
    let agents: Vec<String> = match &a.agent {
        Some(n) => vec![n.to_string()],
        None => c
            .agents()
            .await?
            .into_iter()
            .filter(|x| x.online)
            .map(|x| x.name)
            .collect(),
    };
    let asked = futures_util::future::join_all(agents.iter().map(|n| c.stats(n, None))).await;
    let mut rows: Vec<(String, ContainerStat)> = Vec::new();
    for (agent, r) in agents.iter().zip(asked) {
        match r {
            Ok(s) => rows.extend(s.stats.into_iter().map(|st| (agent.clone(), st))),
            // One agent's answer missing is said, not fatal, fleet-wide.
            Err(e) if a.agent.is_none() => eprintln!("zedops: no stats from agent {agent}: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    let wanted = |s: &ContainerStat| {
        a.containers.is_empty()
            || a.containers
                .iter()
                .any(|c| c == &s.name || s.id.starts_with(c.as_str()))
    };
    rows.retain(|(_, s)| wanted(s));
    if o.output == Output::Json {
        let out: Vec<OnAgent<ContainerStat>> = rows
            .iter()
            .map(|(agent, value)| OnAgent { agent, value })
            .collect();
        print_json(&out);
        return Ok(());
    }
    let with_agent = a.agent.is_none();
    let mut headers = vec![];
    if with_agent {
        headers.push("AGENT");
    }
    headers.extend([
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ]);
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|(agent, s)| {
            let mut r = if with_agent {
                vec![agent.clone()]
            } else {
                vec![]
            };
            r.extend([
                s.name.clone(),
                format!("{:.2}%", s.cpu_percent),
                format!("{} / {}", binary(s.memory_usage), binary(s.memory_limit)),
                format!("{:.2}%", s.memory_percent),
                format!("{} / {}", decimal(s.net_rx), decimal(s.net_tx)),
                format!("{} / {}", decimal(s.block_read), decimal(s.block_write)),
                s.pids.to_string(),
            ]);
            r
        })
        .collect();
    let _ = std::io::stdout()
        .lock()
        .write_all(table(&headers, &lines).as_bytes());
    Ok(())
}

/// Bytes in binary units, as `docker stats` shows memory: `1.5MiB`.
pub fn binary(n: u64) -> String {
    units(n, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB"])
}

/// Bytes in decimal units, as `docker stats` shows I/O: `1.2kB`.
pub fn decimal(n: u64) -> String {
    units(n, 1000.0, &["B", "kB", "MB", "GB", "TB"])
}

fn units(n: u64, base: f64, names: &[&str]) -> String {
    let mut v = n as f64;
    let mut i = 0;
    while v >= base && i + 1 < names.len() {
        v /= base;
        i += 1;
    }
    if i == 0 {
        format!("{n}{}", names[0])
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
            + names[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_like_docker_stats() {
        assert_eq!(binary(512), "512B");
        assert_eq!(binary(1536), "1.5KiB");
        assert_eq!(binary(3 * 1024 * 1024 * 1024), "3GiB");
        assert_eq!(decimal(1200), "1.2kB");
        assert_eq!(decimal(0), "0B");
    }
}
