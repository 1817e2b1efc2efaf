//! HTTPS and MQTT over TLS end to end with a test CA: the API, the CLI, an agent enrolling and
//! connecting over TLS, and Mosquitto's client; plain connections to the TLS ports fail.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use zedops_tests::pki::make_ca;
use zedops_tests::procs::{zedops_bin, Proc, Serve, TempDir};
use zedops_tests::{eventually, init_logs, unique, TestClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_mqtts_end_to_end() -> anyhow::Result<()> {
    init_logs();
    let pki = TempDir::new("pki")?;
    make_ca(&pki.path, &[])?;
    let p = |f: &str| pki.path.join(f).display().to_string();
    let local = unique("tlshost");
    let serve = Serve::start(
        &[
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server.key"),
            &format!("--local-agent={local}"),
        ],
        "warn",
    )?;
    assert!(serve.http.starts_with("https://"), "{}", serve.banner);
    assert!(serve.banner.contains("mqtts://"), "{}", serve.banner);

    // HTTPS with the test CA.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.path.join("ca.pem"))?)?;
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30))
        .build()?;
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{}{path}", serve.http);
        let token = serve.admin_token.clone();
        async move {
            let r = http.get(url).bearer_auth(token).send().await?;
            let s = r.status().as_u16();
            Ok::<_, anyhow::Error>((s, r.json::<Value>().await.unwrap_or(Value::Null)))
        }
    };
    eventually(
        "the local agent online over HTTPS",
        Duration::from_secs(15),
        || async {
            let (s, v) = get(format!("/api/v1/agents/{local}")).await.ok()?;
            (s == 200 && v["online"] == true).then_some(())
        },
    )
    .await?;

    // Plain HTTP to the HTTPS port fails.
    let plain = serve.http.replacen("https://", "http://", 1);
    let r = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        r.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP must not work"
    );

    // The CLI trusts the CA when told, and refuses the server otherwise.
    let home = TempDir::new("tls-cli")?;
    let bin = zedops_bin()?;
    let cli = |extra: &[&str]| {
        Command::new(&bin)
            .args(["--server", &serve.http, "--token", &serve.admin_token])
            .args(extra)
            .env("XDG_CONFIG_HOME", home.path.join("config"))
            .env("XDG_DATA_HOME", home.path.join("data"))
            .stdin(Stdio::null())
            .output()
    };
    let out = cli(&["--ca-file", &p("ca.pem"), "agents"])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&local));
    let out = cli(&["agents"])?;
    assert_eq!(out.status.code(), Some(1), "an unknown CA is refused");

    // An agent enrolls over HTTPS and connects over MQTT with TLS.
    let remote = unique("tlsremote");
    let r = http
        .post(format!("{}/api/v1/agents", serve.http))
        .bearer_auth(&serve.admin_token)
        .json(&json!({"name": remote}))
        .send()
        .await?;
    let v: Value = r.json().await?;
    let token = v["token"].as_str().context("token")?.to_owned();
    let state = home.path.join("agent");
    let child = Command::new(zedops_bin()?)
        .args([
            "agent",
            "--enroll",
            &token,
            "--server",
            &serve.http,
            "--name",
            &remote,
        ])
        .args([
            "--broker",
            &format!("mqtts://127.0.0.1:{}", serve.mqtt.port()),
            "--ca-file",
            &p("ca.pem"),
        ])
        .args(["--state-dir", &state.display().to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    let _agent = Proc {
        child,
        what: "tls agent".into(),
    };
    eventually(
        "the remote agent online over mqtts",
        Duration::from_secs(20),
        || async {
            let (s, v) = get(format!("/api/v1/agents/{remote}")).await.ok()?;
            (s == 200 && v["online"] == true).then_some(())
        },
    )
    .await?;

    // Mosquitto's client over TLS with an MQTT user works; without the CA, or in plain text, not.
    // (It connects by name: rustls refuses an IP address as SNI, which libmosquitto would send.)
    let r = http
        .post(format!("{}/api/v1/mqtt-users", serve.http))
        .bearer_auth(&serve.admin_token)
        .json(&json!({"name": "homeassistant"}))
        .send()
        .await?;
    let v: Value = r.json().await?;
    let pw = v["password"].as_str().context("password")?.to_owned();
    let port = serve.mqtt.port().to_string();
    let sub = |tls: bool| {
        let mut c = Command::new("mosquitto_sub");
        c.args([
            "-V",
            "mqttv5",
            "-h",
            "localhost",
            "-p",
            &port,
            "-u",
            "homeassistant",
            "-P",
            &pw,
        ])
        .args([
            "-t",
            &format!("zedops/v1/agents/{local}/status"),
            "-C",
            "1",
            "-W",
            "5",
        ]);
        if tls {
            c.args(["--cafile", &p("ca.pem")]);
        }
        c.output()
    };
    // Connections that never start their TLS handshake (issue 14, item 2: rumqttd ran every
    // handshake in its accept loop, without a deadline) hold up no other client.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(std::net::TcpStream::connect(serve.mqtt)?);
    }
    let t0 = std::time::Instant::now();
    let out = sub(true)?;
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "a TLS client waited {:?} behind silent connections",
        t0.elapsed()
    );
    drop(silent);
    assert!(
        out.status.success(),
        "mosquitto_sub over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("online"));
    let out = sub(false)?;
    assert!(
        !out.status.success() || out.stdout.is_empty(),
        "plain MQTT to the TLS port must fail"
    );
    assert!(
        TestClient::connect_with(
            serve.mqtt,
            "plain",
            Some(("homeassistant", &pw)),
            Duration::from_secs(2)
        )
        .await
        .is_err(),
        "plain MQTT to the TLS port must fail"
    );
    Ok(())
}
