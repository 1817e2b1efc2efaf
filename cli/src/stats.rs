//! `zedops stats`: each container's CPU, memory, network, block I/O and PIDs, like `docker stats`,
//! fleet-wide with an AGENT column or for one agent. On a terminal it is a live table, redrawn in
//! place as each agent's stream sends a snapshot; piped, with `--no-stream` or `-o json`, one
//! snapshot. Agents are asked at once, not one after another.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use futures_util::StreamExt;
use zedops_client::{Client, StatsEvent};
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
    let live = !a.no_stream && o.output != Output::Json && std::io::stdout().is_terminal();
    if live {
        return live_table(c, a, &agents).await;
    }
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
    rows.retain(|(_, s)| wanted(a, s));
    if o.output == Output::Json {
        let out: Vec<OnAgent<ContainerStat>> = rows
            .iter()
            .map(|(agent, value)| OnAgent { agent, value })
            .collect();
        print_json(&out);
        return Ok(());
    }
    let _ = std::io::stdout()
        .lock()
        .write_all(render(&rows, a.agent.is_none()).as_bytes());
    Ok(())
}

/// Whether the command line asked for this container (all, without names).
fn wanted(a: &StatsArgs, s: &ContainerStat) -> bool {
    a.containers.is_empty()
        || a.containers
            .iter()
            .any(|c| c == &s.name || s.id.starts_with(c.as_str()))
}

/// One stats stream per agent, merged; the table is redrawn whenever one sends a snapshot, until
/// Ctrl-C (exit 0) or every stream has ended.
async fn live_table(c: &Client, a: &StatsArgs, agents: &[String]) -> anyhow::Result<()> {
    let opened = futures_util::future::join_all(
        agents
            .iter()
            .map(|n| c.stats_stream(n, None, Some(a.interval))),
    )
    .await;
    let mut streams = futures_util::stream::SelectAll::new();
    for (agent, r) in agents.iter().zip(opened) {
        match r {
            Ok(s) => {
                let agent = agent.clone();
                let events = futures_util::stream::unfold(s, |mut s| async move {
                    s.next().await.map(|e| (e, s))
                });
                streams.push(events.map(move |e| (agent.clone(), e)).boxed());
            }
            Err(e) if a.agent.is_none() => eprintln!("zedops: no stats from agent {agent}: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    let mut latest: BTreeMap<String, Vec<ContainerStat>> = BTreeMap::new();
    let _ = std::io::stdout().write_all(b"\x1b[2J");
    loop {
        let next = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            n = streams.next() => n,
        };
        let Some((agent, event)) = next else {
            return Ok(());
        };
        match event {
            Ok(StatsEvent::Stats(s)) => {
                latest.insert(
                    agent,
                    s.stats.into_iter().filter(|s| wanted(a, s)).collect(),
                );
            }
            Ok(StatsEvent::End(end)) => {
                let why = end
                    .error
                    .map_or_else(|| end.reason.as_str().to_owned(), |e| e.message);
                eprintln!("zedops: the stats of agent {agent} ended: {why}");
                latest.remove(&agent);
                continue;
            }
            Err(e) => {
                eprintln!("zedops: the stats of agent {agent} broke off: {e}");
                continue;
            }
        }
        let rows: Vec<(String, ContainerStat)> = latest
            .iter()
            .flat_map(|(agent, rows)| rows.iter().map(|r| (agent.clone(), r.clone())))
            .collect();
        // Home, the table, then clear what an older, longer table left below it.
        let frame = format!("\x1b[H{}\x1b[J", render(&rows, a.agent.is_none()));
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(frame.as_bytes());
        let _ = out.flush();
    }
}

/// The table `docker stats` prints, with an AGENT column fleet-wide.
fn render(rows: &[(String, ContainerStat)], with_agent: bool) -> String {
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
    table(&headers, &lines)
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
