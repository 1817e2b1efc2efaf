//! Issue 18, the one-shot part of stats: `container.stats` on the secured default and real
//! Docker, through the typed client and the CLI. A container running a CPU loop shows busy,
//! within a few points of `docker stats --no-stream` measured in the same run, and an idle one
//! does not; memory, PIDs and the table's columns are there.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context};
use zedops_client::Client;
use zedops_tests::procs::{zedops_bin, Serve};
use zedops_tests::{eventually, init_logs, unique, Docker, TestContainer};

/// `docker stats --no-stream` CPU % of `name`.
fn docker_cpu(name: &str) -> anyhow::Result<f64> {
    let out = Docker::run(&["stats", "--no-stream", "--format", "{{.CPUPerc}}", name])?;
    out.trim()
        .trim_end_matches('%')
        .parse()
        .with_context(|| format!("docker stats said {out:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_a_busy_container_busy_as_docker_stats_does() -> anyhow::Result<()> {
    init_logs();
    let run = unique("stats");
    let busy = TestContainer::run_script(&unique("zt-busy"), &run, &[], "while :; do :; done")?;
    let idle = TestContainer::run(&unique("zt-idle"), &run, &[])?;
    let agent = unique("stats");
    let serve = Serve::start(&[&format!("--local-agent={agent}")], "warn")?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    eventually(
        "both containers in the fleet",
        Duration::from_secs(15),
        || async {
            let a = admin.locate(&busy.name).await.ok()?;
            let b = admin.locate(&idle.name).await.ok()?;
            (a == [agent.clone()] && b == [agent.clone()]).then_some(())
        },
    )
    .await?;

    // One container, through the typed client; then ours and Docker's, one after the other.
    let one = admin.stats(&agent, Some(busy.name.as_str())).await?;
    ensure!(
        one.stats.len() == 1 && one.stats[0].name == busy.name,
        "{one:?}"
    );
    let ours = one.stats[0].cpu_percent;
    let docker = docker_cpu(&busy.name)?;
    println!("busy loop: zedops {ours:.1} %, docker stats {docker:.1} %");
    ensure!(ours > 30.0, "a CPU loop at {ours:.1} %");
    ensure!(
        (ours - docker).abs() <= 25.0,
        "zedops {ours:.1} % vs docker stats {docker:.1} %"
    );
    let s = &one.stats[0];
    ensure!(
        s.memory_usage > 0 && s.memory_limit >= s.memory_usage && s.pids >= 1,
        "{s:?}"
    );

    // Every running container of the agent, through the CLI: JSON and the table.
    let cli = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(zedops_bin()?)
            .args(["--server", &serve.http, "--token", &serve.admin_token])
            .args(args)
            .output()?;
        ensure!(out.status.success(), "zedops {args:?}: {out:?}");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&cli(&["stats", "--no-stream", "-o", "json"])?)?;
    let find = |name: &str| json.iter().find(|r| r["name"] == name).cloned();
    let (b, i) = (
        find(&busy.name).context("busy")?,
        find(&idle.name).context("idle")?,
    );
    assert_eq!(b["agent"], agent.as_str());
    let (bc, ic) = (
        b["cpu_percent"].as_f64().unwrap_or(0.0),
        i["cpu_percent"].as_f64().unwrap_or(100.0),
    );
    ensure!(bc > 30.0 && ic < 10.0, "busy {bc:.1} %, idle {ic:.1} %");
    let table = cli(&["stats", "--no-stream", &busy.name])?;
    for want in [
        "AGENT",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
        busy.name.as_str(),
    ] {
        ensure!(table.contains(want), "{want} not in:\n{table}");
    }
    ensure!(
        !table.contains(&idle.name),
        "the filter by name kept {}:\n{table}",
        idle.name
    );
    Ok(())
}
