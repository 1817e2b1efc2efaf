//! Issue 17, items 4 and 5: the agent as a container and as a systemd service.
//!
//! `scripts/agent-image.sh` packs the `zedops` binary into an image `FROM scratch`; the test runs
//! it as the README says (`docker run -d … -v /var/run/docker.sock:… -v VOLUME:/state IMAGE
//! --enroll … --server …`) against a `zedops serve` reached over Docker's bridge: it enrolls,
//! serves the host's containers, survives `docker restart` (same command, token included), and
//! Home Assistant cannot stop its own container. The systemd units of `packaging/` pass
//! `systemd-analyze verify`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context};
use zedops_client::{Client, NewMqttUser};
use zedops_proto::topics;
use zedops_tests::procs::{zedops_bin, Serve, TempDir};
use zedops_tests::{eventually, free_port, init_logs, unique, Docker};

fn root() -> anyhow::Result<std::path::PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf())
}

/// Removes what the test made in Docker, whatever happens.
struct Cleanup {
    container: String,
    volume: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Docker::run(&["rm", "-f", &self.container]);
        let _ = Docker::run(&["volume", "rm", "-f", &self.volume]);
        let _ = Docker::run(&["rmi", "-f", &self.image]);
    }
}

/// When the agent's retained status says it started (changes with every start).
async fn started_at(admin: &Client, agent: &str) -> Option<String> {
    let a = admin.agent(agent).await.ok()?;
    a.online.then(|| a.started_at.map(|t| t.to_rfc3339()))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_image_enrolls_survives_a_restart_and_protects_itself() -> anyhow::Result<()> {
    init_logs();
    let agent = unique("boxed");
    let cleanup = Cleanup {
        container: agent.clone(),
        volume: format!("{agent}-state"),
        image: format!("zedops-agent-test:{agent}"),
    };
    let out = Command::new("bash")
        .arg(root()?.join("scripts/agent-image.sh"))
        .args([
            "--binary",
            &zedops_bin()?.to_string_lossy(),
            "--tag",
            &cleanup.image,
        ])
        .output()?;
    ensure!(out.status.success(), "agent-image.sh: {out:?}");

    // The server as another host sees it: Docker's bridge gateway.
    let gateway = Docker::bridge_gateway()?;
    let (http_port, mqtt_port) = (free_port(), free_port());
    let public = format!("http://{gateway}:{http_port}");
    let serve = Serve::start_on(
        &format!("0.0.0.0:{http_port}"),
        &format!("0.0.0.0:{mqtt_port}"),
        &["--public-url", &public],
        "warn",
    )?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    let token = admin
        .register_agent(&zedops_client::NewAgent {
            name: agent.clone(),
            ttl_s: None,
        })
        .await?
        .token;
    Docker::run(&[
        "run",
        "-d",
        "--name",
        &cleanup.container,
        "--label",
        "zedops.test=1",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        &format!("{}:/state", cleanup.volume),
        &cleanup.image,
        "--enroll",
        &token,
        "--server",
        &public,
        "--name",
        &agent,
        "--ha",
    ])?;
    let first = eventually("the boxed agent online", Duration::from_secs(30), || {
        started_at(&admin, &agent)
    })
    .await
    .with_context(|| Docker::run(&["logs", &cleanup.container]).unwrap_or_default())?;
    let listed = admin.locate(&cleanup.container).await?;
    ensure!(
        listed.contains(&agent),
        "the agent does not list its own container: {listed:?}"
    );

    // `docker restart` runs the same command (the used token included): the saved credentials
    // on the volume start the agent again.
    Docker::run(&["restart", "-t", "5", &cleanup.container])?;
    eventually(
        "the boxed agent back after docker restart",
        Duration::from_secs(30),
        || async {
            let again = started_at(&admin, &agent).await?;
            (again != first).then_some(())
        },
    )
    .await
    .with_context(|| Docker::run(&["logs", &cleanup.container]).unwrap_or_default())?;

    // Home Assistant cannot stop the container the agent runs in.
    let user = admin
        .create_mqtt_user(&NewMqttUser {
            name: unique("ha"),
            ha_commands: true,
        })
        .await?;
    let port = serve.mqtt.port().to_string();
    let auth = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-u",
        &user.username,
        "-P",
        &user.password,
    ];
    let result_topic = topics::container_set_result(&agent, &cleanup.container);
    let sub = tokio::process::Command::new("mosquitto_sub")
        .args(auth)
        .args(["-t", &result_topic, "-C", "1", "-W", "15"])
        .output();
    let sub = tokio::spawn(sub);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let set = topics::container_set(&agent, &cleanup.container);
    let out = Command::new("mosquitto_pub")
        .args(auth)
        .args(["-t", &set, "-m", "stop"])
        .output()?;
    ensure!(out.status.success(), "mosquitto_pub: {out:?}");
    let seen = sub.await??;
    let reply = String::from_utf8_lossy(&seen.stdout);
    ensure!(
        reply.contains("forbidden") && reply.contains("runs agent"),
        "{reply}"
    );
    assert_eq!(Docker::state(&cleanup.container)?, "running");
    drop(cleanup);
    Ok(())
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() -> anyhow::Result<()> {
    let dir = TempDir::new("units")?;
    let bin = zedops_bin()?;
    for unit in ["zedops-agent.service", "zedops.service"] {
        let text = std::fs::read_to_string(root()?.join("packaging").join(unit))?;
        ensure!(
            text.contains("ExecStart=/usr/local/bin/zedops "),
            "{unit}: ExecStart moved?"
        );
        // verify checks that ExecStart exists: point it at the binary under test.
        let local = text.replace("/usr/local/bin/zedops", &bin.to_string_lossy());
        std::fs::write(dir.path.join(unit), local)?;
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path.join(unit))
            .output()
            .context("systemd-analyze (Debian's systemd; scripts/provision.sh installs it)")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && stderr.trim().is_empty(),
            "{unit}: {stderr}"
        );
        for hardened in [
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
        ] {
            ensure!(text.contains(hardened), "{unit} lacks {hardened}");
        }
    }
    Ok(())
}
