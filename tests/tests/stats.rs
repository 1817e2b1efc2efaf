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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_a_busy_container_busy_as_docker_stats_does() -> anyhow::Result<()> {
    init_logs();
    let run = unique("stats");
    let busy = TestContainer::cpu_loop(&unique("zt-busy"), &run, None)?;
    let idle = TestContainer::run(&unique("zt-idle"), &run, &[])?;
    let agent = unique("stats");
    let serve = Serve::start(&[&format!("--local-agent={agent}")], "warn")?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    eventually(
        "the agent online with both containers",
        Duration::from_secs(15),
        || async {
            // Online too: a snapshot can arrive before the status does.
            admin.agent(&agent).await.ok()?.online.then_some(())?;
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
    let docker = Docker::cpu_percent(&busy.name)?;
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

/// `--ha-stats`: the agent publishes its containers' use every interval; Home Assistant gets a CPU
/// and a memory sensor per container (their templates rendered by Jinja2 against what the agent
/// published, read with mosquitto_sub over MQTT 3.1.1), and the server's `/metrics` the gauges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_stats_feed_home_assistant_sensors_and_metrics() -> anyhow::Result<()> {
    use zedops_tests::ha::{mosquitto_sub, render_one, Mqtt311};
    init_logs();
    let run = unique("hastats");
    let busy = TestContainer::cpu_loop(&unique("zt-busy"), &run, Some("0.25"))?;
    let agent = unique("hastats");
    let serve = Serve::start(
        &[
            &format!("--local-agent={agent}"),
            "--ha",
            "--ha-stats",
            "1s",
            "--mqtt311-listen",
            "127.0.0.1:0",
        ],
        "warn",
    )?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    let m = Mqtt311::user_of(&serve, &admin, false).await?;
    let node = format!("zedops_{agent}");
    let filter = format!("homeassistant/sensor/{node}/+/config");
    let sensors = eventually(
        "the CPU and memory sensors",
        Duration::from_secs(20),
        || {
            let (m, filter, name) = (m.clone(), filter.clone(), busy.name.clone());
            async move {
                let seen = mosquitto_sub(&m, &filter, 2).await.ok()?;
                let find = |suffix: &str| {
                    seen.iter()
                        .filter(|s| s.retain && s.topic.ends_with(&format!("{suffix}/config")))
                        .filter_map(|s| serde_json::from_str::<serde_json::Value>(&s.payload).ok())
                        .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with(&name)))
                };
                Some((find("_cpu")?, find("_memory")?))
            }
        },
    )
    .await?;
    let (cpu, memory) = sensors;
    assert_eq!(cpu["unit_of_measurement"], "%");
    assert_eq!(memory["unit_of_measurement"], "MiB");
    assert_eq!(cpu["state_class"], "measurement");
    let state_topic = cpu["state_topic"]
        .as_str()
        .context("state_topic")?
        .to_owned();
    assert_eq!(state_topic, format!("zedops/v1/agents/{agent}/stats"));

    // What the agent publishes, rendered as Home Assistant would.
    let published = eventually("a stats message", Duration::from_secs(15), || {
        let (m, t) = (m.clone(), state_topic.clone());
        async move {
            let seen = mosquitto_sub(&m, &t, 3).await.ok()?;
            seen.into_iter()
                .map(|s| s.payload)
                .find(|p| p.contains("cpu_percent"))
        }
    })
    .await?;
    let cpu_value: f64 = render_one(&cpu["value_template"], &published)
        .await?
        .parse()
        .with_context(|| format!("the CPU template on {published}"))?;
    let mem_value: f64 = render_one(&memory["value_template"], &published)
        .await?
        .parse()?;
    println!("Home Assistant would show: CPU {cpu_value} %, memory {mem_value} MiB");
    ensure!(cpu_value > 10.0, "CPU {cpu_value} of a quarter-core loop");
    ensure!(mem_value > 0.0, "memory {mem_value}");
    // A container the snapshot does not have renders Home Assistant's unknown.
    let other = cpu["value_template"]
        .as_str()
        .unwrap_or_default()
        .replace(busy.name.as_str(), "not-there");
    let unknown = render_one(&serde_json::Value::String(other), &published).await?;
    assert_eq!(unknown, "None");

    // The server's /metrics.
    let line = eventually("the CPU gauge", Duration::from_secs(15), || async {
        let text = reqwest::get(format!("{}/metrics", serve.http))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let want = format!(
            "zedops_container_cpu_percent{{agent=\"{agent}\",container=\"{}\"}} ",
            busy.name
        );
        text.lines()
            .find(|l| l.starts_with(&want))
            .map(str::to_owned)
    })
    .await?;
    let value: f64 = line.rsplit(' ').next().unwrap_or_default().parse()?;
    println!("/metrics: {line}");
    ensure!(value > 10.0, "{line}");
    Ok(())
}
