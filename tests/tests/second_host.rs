//! Issue 17, items 1–3: tour step 2 ("a second agent on another host") as a new user does it, with
//! the agent in a network namespace of its own (its own address; the server reachable only at the
//! veth pair's address, not at 127.0.0.1): register on the server, copy the printed command as it
//! is, run it on the "other host"; the agent finds the broker from its enrollment (non-default
//! ports, TLS, an external Mosquitto), `zedops ps` on the server shows its containers and a
//! restart through the API reaches it. A broker that is down is reported within seconds, and a
//! removed agent exits with a clear message instead of retrying in silence.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context};
use zedops_client::Client;
use zedops_tests::api::reaches;
use zedops_tests::netns::OtherHost;
use zedops_tests::pki::{make_ca, make_client_cert};
use zedops_tests::procs::{zedops_bin, Mosquitto, Proc, Serve, TempDir};
use zedops_tests::{eventually, free_port, init_logs, unique, TestContainer};

/// `zedops agents add NAME` on the server, as an admin; the command it prints, split.
fn agents_add(
    serve: &Serve,
    server: &str,
    name: &str,
    ca: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let mut cmd = Command::new(zedops_bin()?);
    cmd.args(["--server", server, "--token", &serve.admin_token]);
    if let Some(ca) = ca {
        cmd.args(["--ca-file", ca]);
    }
    let out = cmd.args(["agents", "add", name]).output()?;
    ensure!(out.status.success(), "agents add: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("zedops agent --enroll"))
        .with_context(|| format!("no command in:\n{text}"))?;
    Ok(line.split_whitespace().map(str::to_owned).collect())
}

/// The printed command run as it is in `other` (this host with `None`; its `zedops` is our
/// binary), its state under `home`; `extra` only for what a user adds on purpose (`--ca-file`).
fn run_printed(
    other: Option<&OtherHost>,
    printed: &[String],
    home: &TempDir,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    let bin = zedops_bin()?;
    let child = other
        .map_or_else(|| Command::new(&bin), |o| o.command(&bin))
        .args(&printed[1..])
        .args(extra)
        .env("XDG_STATE_HOME", home.path.join("state"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the agent")?;
    Ok(Proc {
        child,
        what: "agent".into(),
    })
}

/// Tour step 2 with the agent in `other`; `ports`: the HTTP and MQTT ports (`None`: free ones).
async fn step_two(other: &OtherHost, tls: bool, ports: Option<(u16, u16)>) -> anyhow::Result<()> {
    init_logs();
    let pki = TempDir::new("pki")?;
    make_ca(&pki.path, &[&other.host_ip])?;
    let p = |f: &str| pki.path.join(f).display().to_string();
    let (http_port, mqtt_port) = ports.unwrap_or_else(|| (free_port(), free_port()));
    let scheme = if tls { "https" } else { "http" };
    let public = format!("{scheme}://{}:{http_port}", other.host_ip);
    let mut extra = vec!["--public-url".to_owned(), public.clone()];
    if tls {
        extra.extend([
            "--tls-cert".into(),
            p("server.pem"),
            "--tls-key".into(),
            p("server.key"),
        ]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let serve = Serve::start_on(
        &format!("0.0.0.0:{http_port}"),
        &format!("0.0.0.0:{mqtt_port}"),
        &extra,
        "warn",
    )?;
    let ca = tls.then(|| p("ca.pem"));
    // From the namespace, 127.0.0.1 is its own loopback: the server is not there.
    let probe = other
        .command(&zedops_bin()?)
        .args([
            "--server",
            &format!("{scheme}://127.0.0.1:{http_port}"),
            "agents",
        ])
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        !probe.status.success(),
        "the namespace reaches the server on loopback"
    );
    let container = TestContainer::run(&unique("zt-other"), &unique("other"), &[])?;
    let agent = unique("other");
    let here = format!("{scheme}://127.0.0.1:{http_port}");
    let printed = agents_add(&serve, &here, &agent, ca.as_deref())?;
    let server_arg = printed
        .iter()
        .position(|a| a == "--server")
        .map(|i| &printed[i + 1]);
    assert_eq!(server_arg, Some(&public), "printed: {printed:?}");

    let home = TempDir::new("other-host")?;
    let ca_args: Vec<&str> = ca.iter().flat_map(|c| ["--ca-file", c.as_str()]).collect();
    let _proc = run_printed(Some(other), &printed, &home, &ca_args)?;
    let ca_path = ca.as_deref().map(std::path::Path::new);
    let admin = Client::new(&here, Some(serve.admin_token.clone()), ca_path)?;
    reaches(&admin, &agent, &container).await?;
    // `zedops ps` on the server shows the other host's containers.
    let mut ps = Command::new(zedops_bin()?);
    ps.args([
        "--server",
        &here,
        "--token",
        &serve.admin_token,
        "ps",
        "--agent",
        &agent,
    ]);
    if let Some(ca) = &ca {
        ps.args(["--ca-file", ca]);
    }
    let out = ps.output()?;
    let listed = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && listed.contains(&container.name),
        "zedops ps: {listed}"
    );
    // The credentials remember the broker the server named, so later starts need nothing.
    let creds = std::fs::read_to_string(home.path.join("state/zedops-agent/credentials.json"))?;
    let mqtt = if tls { "mqtts" } else { "mqtt" };
    ensure!(
        creds.contains(&format!("{mqtt}://{}:{mqtt_port}", other.host_ip)),
        "the credentials name no broker: {creds}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tour_step_two_from_another_network_namespace() -> anyhow::Result<()> {
    let other = OtherHost::new(41)?;
    step_two(&other, false, None).await
}

/// The same on the default ports (8420, 1883), where the old guess of "the server's host, port
/// 1883" happened to be right: now the broker comes from the enrollment answer there too. Fails
/// with the port's name when something on this machine holds one (a `zedops serve` of one's own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tour_step_two_on_the_default_ports() -> anyhow::Result<()> {
    for port in [8420, 1883] {
        ensure!(
            std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(),
            "port {port} is taken on this machine: this test needs the default ports free"
        );
    }
    let other = OtherHost::new(43)?;
    step_two(&other, false, Some((8420, 1883))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tour_step_two_over_tls_from_another_network_namespace() -> anyhow::Result<()> {
    let other = OtherHost::new(42)?;
    step_two(&other, true, None).await
}

/// `serve --broker` an external Mosquitto: the enrollment answer names it, and the enrolled
/// agent connects there with no `--broker`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enrollment_answer_names_the_external_broker() -> anyhow::Result<()> {
    init_logs();
    let mosquitto = Mosquitto::start().await?;
    let broker = format!("mqtt://{}", mosquitto.addr);
    let serve = Serve::start(&["--broker", &broker], "warn")?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    let container = TestContainer::run(&unique("zt-ext"), &unique("ext"), &[])?;
    let agent = unique("ext");
    let printed = agents_add(&serve, &serve.http, &agent, None)?;
    let home = TempDir::new("ext-host")?;
    let _proc = run_printed(None, &printed, &home, &[])?;
    reaches(&admin, &agent, &container).await?;
    let creds = std::fs::read_to_string(home.path.join("state/zedops-agent/credentials.json"))?;
    ensure!(
        creds.contains(&broker),
        "the credentials name no broker: {creds}"
    );
    Ok(())
}

/// `serve --broker` an external Mosquitto that refuses anonymous clients (issue 19, item 2, in
/// part): with `--broker-username` and `--broker-password` the API and the local agent log in, and a restart through the API reaches the agent; with a
/// wrong password the server says the broker refused it and names the flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_in_to_an_authenticated_external_broker() -> anyhow::Result<()> {
    init_logs();
    let mosquitto = Mosquitto::with_user("zedops", "s3cret-broker").await?;
    let broker = format!("mqtt://{}", mosquitto.addr);
    let container = TestContainer::run(&unique("zt-auth"), &unique("auth"), &[])?;
    let agent = unique("auth");
    let serve = Serve::start(
        &[
            "--broker",
            &broker,
            "--broker-username",
            "zedops",
            "--broker-password",
            "s3cret-broker",
            &format!("--local-agent={agent}"),
        ],
        "warn",
    )?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    reaches(&admin, &agent, &container).await?;

    let wrong = Serve::start(
        &[
            "--broker",
            &broker,
            "--broker-username",
            "zedops",
            "--broker-password",
            "bad-pass-8841",
        ],
        "warn",
    )?;
    let said = eventually(
        "the refusal in the log",
        Duration::from_secs(15),
        || async {
            let log = wrong.logs();
            log.contains("refused the API's connection").then_some(log)
        },
    )
    .await?;
    ensure!(said.contains("--broker-password"), "{said}");
    ensure!(
        !said.contains("bad-pass-8841"),
        "the password is in the log: {said}"
    );
    let ready = reqwest::get(format!("{}/readyz", wrong.http)).await?;
    ensure!(ready.status() == 503, "{}", ready.status());
    Ok(())
}

/// `serve --broker mqtts://…` shows a client certificate to a broker that lets in nobody
/// without one (Mosquitto's `require_certificate`): the API and the local agent get in, and a
/// restart reaches the agent. Without the certificate the server is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_shows_a_client_certificate_to_an_external_broker() -> anyhow::Result<()> {
    init_logs();
    let pki = TempDir::new("pki")?;
    make_ca(&pki.path, &[])?;
    make_client_cert(&pki.path, "zedops-api")?;
    let p = |f: &str| pki.path.join(f).display().to_string();
    let mosquitto = Mosquitto::with_client_certs(&pki.path).await?;
    let broker = format!("mqtts://127.0.0.1:{}", mosquitto.addr.port());
    let container = TestContainer::run(&unique("zt-mtls"), &unique("mtls"), &[])?;
    let agent = unique("mtls");
    let tls = ["--broker", &broker, "--broker-ca-file", &p("ca.pem")];
    let mut args = tls.to_vec();
    let (cert, key) = (p("client.pem"), p("client.key"));
    args.extend(["--broker-cert", &cert, "--broker-key", &key]);
    let local = format!("--local-agent={agent}");
    args.push(&local);
    let serve = Serve::start(&args, "warn")?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    reaches(&admin, &agent, &container).await?;

    let without = Serve::start(&tls, "warn")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ready = reqwest::get(format!("{}/readyz", without.http)).await?;
    ensure!(
        ready.status() == 503,
        "ready without a client certificate: {}",
        ready.status()
    );
    Ok(())
}

/// Nothing listens where the agent looks for its broker: it says so, with the cause, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_is_reported_within_seconds() -> anyhow::Result<()> {
    let port = free_port();
    let mut child = tokio::process::Command::new(zedops_bin()?)
        .args(["agent", "--name", &unique("lonely")])
        .args(["--broker", &format!("mqtt://127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let mut seen = String::new();
    let read = async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        while !seen.contains("retrying") {
            let n = stderr.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .with_context(|| format!("no warning within 5 s; the agent said: {seen}"))??;
    ensure!(
        seen.contains("cannot connect to the broker") && seen.contains("nothing listens at"),
        "{seen}"
    );
    Ok(())
}

/// An agent removed on the server (`zedops agents remove`) stops with a clear message and exit
/// code 6 at its next start instead of retrying in silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_agent_stops_with_a_clear_message() -> anyhow::Result<()> {
    init_logs();
    let serve = Serve::start(&[], "warn")?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    let agent = unique("gone");
    let printed = agents_add(&serve, &serve.http, &agent, None)?;
    let home = TempDir::new("gone-host")?;
    let spawn = |args: &[String]| -> anyhow::Result<std::process::Child> {
        Ok(Command::new(zedops_bin()?)
            .args(args)
            .env("XDG_STATE_HOME", home.path.join("state"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?)
    };
    let mut first = Proc {
        child: spawn(&printed[1..])?,
        what: "agent".into(),
    };
    eventually("the agent online", Duration::from_secs(20), || async {
        admin.agent(&agent).await.ok()?.online.then_some(())
    })
    .await?;
    first.signal("TERM")?;
    first.wait_exit(Duration::from_secs(10)).await?;
    admin.remove_agent(&agent).await?;

    let again = spawn(&["agent".to_owned()])?;
    let out = tokio::task::spawn_blocking(move || again.wait_with_output());
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .context("the removed agent kept retrying for 30 s")???;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    ensure!(
        stderr.contains("refuses this agent's credentials"),
        "{stderr}"
    );
    Ok(())
}
