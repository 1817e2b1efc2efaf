//! The embedded broker against hostile and old clients (issue 14, items 0, 1 and the ACLs), on the
//! secured default: a real `zedops serve` whose local agent is enrolled and signs everything it
//! publishes, driven from outside with `mosquitto_sub`/`mosquitto_pub`, raw sockets and HTTP.

use std::process::Output;
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5::{Connect, Login, Packet};
use tokio::io::AsyncWriteExt;
use zedops_tests::secured::Secured as Stack;
use zedops_tests::{eventually, init_logs, unique, TestClient};

/// `mosquitto_sub` for one message on `topic`, at most `secs` seconds.
async fn sub_one(
    port: u16,
    version: &str,
    id: &str,
    (user, pass): (&str, &str),
    topic: &str,
    secs: u32,
) -> anyhow::Result<Output> {
    tokio::process::Command::new("mosquitto_sub")
        .args(["-V", version, "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-u", user, "-P", pass, "-i", id, "-t", topic, "-C", "1"])
        .args(["-W", &secs.to_string()])
        .output()
        .await
        .context("mosquitto_sub (install mosquitto-clients: scripts/provision.sh)")
}

/// Item 0: an MQTT 3.1.1 client reads what an enrolled agent publishes (MQTT 5 user properties
/// carry its signature), again and again; rumqttd 0.20 panicked forwarding such a publish to a
/// 3.1.1 client and then refused that listener to everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt311_clients_read_signed_state_and_reconnect() -> anyhow::Result<()> {
    let s = Stack::start("hard").await?;
    let pw = s.mqtt_user("ha", false).await?;
    let port = s.serve.mqtt.port();
    for (round, version) in ["mqttv311", "mqttv311", "mqttv5", "mqttv311"]
        .iter()
        .enumerate()
    {
        let out = sub_one(
            port,
            version,
            &unique("ha"),
            ("ha", &pw),
            &s.status_topic(),
            10,
        )
        .await?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("\"online\""),
            "round {round} ({version}): status {:?}, stdout {text:?}, stderr {:?}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(s.ping().await?, 200, "the API still reaches its agent");
    Ok(())
}

/// A raw MQTT 5 CONNECT for `client_id` as `user`.
fn connect_bytes(client_id: &str, user: &str, pass: &str) -> anyhow::Result<BytesMut> {
    let mut out = BytesMut::new();
    let connect = Connect {
        keep_alive: 30,
        client_id: client_id.to_owned(),
        clean_start: true,
        properties: None,
    };
    let login = Login {
        username: user.to_owned(),
        password: pass.to_owned(),
    };
    Packet::Connect(connect, None, Some(login))
        .write(&mut out, None)
        .map_err(|e| anyhow::anyhow!("encoding CONNECT: {e}"))?;
    Ok(out)
}

/// Item 1: CONNECT then an immediate reset, many times with one client id (rumqttd 0.20 then
/// poisons its will-handler table and refuses every later connection, rumqtt issue #1062), leaves
/// the broker accepting that client id and others, and the API and agent working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_reset_does_not_wedge_the_broker() -> anyhow::Result<()> {
    let s = Stack::start("hard").await?;
    let pw = s.mqtt_user("resetter", false).await?;
    let bytes = connect_bytes("victim", "resetter", &pw)?;
    for _ in 0..30 {
        let mut c = tokio::net::TcpStream::connect(s.serve.mqtt).await?;
        c.write_all(&bytes).await?;
        // SO_LINGER 0: close sends RST, the CONNACK's write then fails on the server's side.
        c.set_zero_linger()?;
        drop(c);
    }
    // Same client id and another one, both MQTT versions: each connects and reads the status.
    for (id, version) in [
        ("victim", "mqttv5"),
        ("victim", "mqttv311"),
        ("bystander", "mqttv5"),
    ] {
        eventually(
            &format!("{id} connecting over {version}"),
            Duration::from_secs(10),
            || async {
                let out = sub_one(
                    s.serve.mqtt.port(),
                    version,
                    id,
                    ("resetter", &pw),
                    &s.status_topic(),
                    3,
                )
                .await
                .ok()?;
                // A clean exit with nothing read: the broker was still taking the reset
                // connections' CONNECTs, and one of them took this client id over. Tried again.
                let text = String::from_utf8_lossy(&out.stdout);
                (out.status.success() && text.contains("\"online\"")).then_some(())
            },
        )
        .await?;
    }
    assert_eq!(s.ping().await?, 200, "the API still reaches its agent");
    Ok(())
}

/// ACLs: an integration user may not publish an agent's state or (without Home Assistant command
/// rights) its `/set` commands; what it may publish arrives. Seen by another user's `#`
/// subscription, so a refusal is not mistaken for a lost message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integration_users_cannot_forge_state_or_send_commands_without_rights() -> anyhow::Result<()>
{
    let s = Stack::start("hard").await?;
    let reader_pw = s.mqtt_user("reader", false).await?;
    let writer_pw = s.mqtt_user("writer", false).await?;
    let mut watch = TestClient::connect_with(
        s.serve.mqtt,
        "reader",
        Some(("reader", &reader_pw)),
        Duration::from_secs(5),
    )
    .await?;
    watch.subscribe("#").await?;
    watch.drain(Duration::from_millis(500)).await;
    let set = zedops_proto::topics::container_set(&s.agent, "anything");
    // A discovery config of the agent's node: Home Assistant would obey it.
    let config = format!(
        "homeassistant/switch/zedops_{}/web_00000000/config",
        s.agent
    );
    let allowed = format!("{}/allowed", unique("integration"));
    for (version, topic, payload) in [
        ("mqttv311", s.status_topic(), "forged"),
        ("mqttv5", s.status_topic(), "forged"),
        ("mqttv311", set.clone(), "stop"),
        ("mqttv5", set.clone(), "stop"),
        ("mqttv311", config.clone(), "forged"),
        ("mqttv5", config.clone(), "forged"),
        ("mqttv5", allowed.clone(), "fine"),
    ] {
        let out = tokio::process::Command::new("mosquitto_pub")
            .args([
                "-V",
                version,
                "-h",
                "127.0.0.1",
                "-p",
                &s.serve.mqtt.port().to_string(),
            ])
            .args([
                "-u", "writer", "-P", &writer_pw, "-q", "1", "-t", &topic, "-m", payload,
            ])
            .output()
            .await?;
        let _ = out; // a refused QoS 1 publish is acknowledged with "not authorized" (MQTT 5)
    }
    let seen = watch.drain(Duration::from_secs(1)).await;
    assert!(
        seen.iter().any(|m| m.topic == allowed),
        "the allowed publish arrived: {seen:?}"
    );
    for m in &seen {
        assert!(
            !(m.topic == set
                || m.topic == config
                || (m.topic == s.status_topic() && m.payload.as_ref() == b"forged")),
            "a refused publish got through: {m:?}"
        );
    }
    // With command rights the same user's /set reaches the agent's topic, and so does a config
    // (an empty one is how such a user clears an agent's configs: docs/home-assistant.md).
    let commander_pw = s.mqtt_user("commander", true).await?;
    for topic in [&set, &config] {
        let out = tokio::process::Command::new("mosquitto_pub")
            .args([
                "-V",
                "mqttv311",
                "-h",
                "127.0.0.1",
                "-p",
                &s.serve.mqtt.port().to_string(),
            ])
            .args(["-u", "commander", "-P", &commander_pw, "-q", "1"])
            .args(["-t", topic, "-m", "stop"])
            .output()
            .await?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let seen = watch.drain(Duration::from_secs(1)).await;
    assert!(seen.iter().any(|m| m.topic == set), "{seen:?}");
    assert!(seen.iter().any(|m| m.topic == config), "{seen:?}");
    assert_eq!(s.ping().await?, 200);
    Ok(())
}

/// Item 3: `--no-auth` (an anonymous broker whose local agent runs unsigned commands) listens
/// for MQTT on loopback only, unless the operator names another address; the banner says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_keeps_the_anonymous_broker_on_loopback() -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader};
    init_logs();
    let home = zedops_tests::procs::TempDir::new("noauth")?;
    let mut child = std::process::Command::new(zedops_tests::procs::zedops_bin()?)
        .args([
            "serve",
            "--no-auth",
            "--listen",
            "127.0.0.1:0",
            "--no-mqtt311",
        ])
        .env("XDG_DATA_HOME", home.path.join("data"))
        .env("XDG_CONFIG_HOME", home.path.join("config"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let _guard = zedops_tests::procs::Proc {
        child,
        what: "zedops serve --no-auth".into(),
    };
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = l.starts_with("Next:");
            lines.push(l);
            if done {
                break;
            }
        }
        lines.join("\n")
    });
    let banner = tokio::time::timeout(Duration::from_secs(15), banner).await??;
    let mqtt = banner
        .lines()
        .find(|l| l.trim().starts_with("MQTT broker"))
        .context("MQTT line in the banner")?;
    assert!(mqtt.contains("mqtt://127.0.0.1:1883"), "{banner}");
    assert!(banner.contains("stay on loopback"), "{banner}");
    Ok(())
}

/// Fuzzing from outside: connections that send random bytes — some after a valid CONNECT of
/// either version (valid credentials), some instead of one — never take the broker down or wedge
/// it: afterwards clients connect and the API reaches its agent. Bounded: 150 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_from_clients_never_wedge_the_broker() -> anyhow::Result<()> {
    use rand::Rng;
    use tokio::io::AsyncReadExt;
    let s = Stack::start("hard").await?;
    let pw = s.mqtt_user("fuzzer", false).await?;
    let mut rng = rand::rng();
    for i in 0..150u32 {
        let mut bytes = match i % 3 {
            0 => connect_bytes(&format!("fuzz-{i}"), "fuzzer", &pw)?.to_vec(),
            1 => {
                let mut c = rumqttc::mqttbytes::v4::Connect::new(format!("fuzz-{i}"));
                c.set_login("fuzzer", pw.clone());
                let mut out = BytesMut::new();
                rumqttc::mqttbytes::v4::Packet::Connect(c)
                    .write(&mut out, 1 << 20)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                out.to_vec()
            }
            _ => Vec::new(),
        };
        let n = rng.random_range(0..400);
        bytes.extend((0..n).map(|_| rng.random::<u8>()));
        // Now and then a plausible packet type in front of the noise.
        if rng.random_bool(0.3) && bytes.len() > 2 {
            let at = if i % 3 == 2 { 0 } else { bytes.len() - n };
            if at < bytes.len() {
                bytes[at] = [0x30, 0x32, 0x82, 0x62, 0xc0, 0xe0, 0xf0][rng.random_range(0..7)];
            }
        }
        let mut c = tokio::net::TcpStream::connect(s.serve.mqtt).await?;
        let _ = c.write_all(&bytes).await;
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_millis(20), c.read(&mut sink)).await;
    }
    let out = sub_one(
        s.serve.mqtt.port(),
        "mqttv311",
        "after-fuzz",
        ("fuzzer", &pw),
        &s.status_topic(),
        10,
    )
    .await?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("online"),
        "{out:?}"
    );
    assert_eq!(s.ping().await?, 200, "the API still reaches its agent");
    Ok(())
}

/// Last Wills and session takeover as paho-mqtt sees them, over MQTT 3.1.1 and 5, on the
/// secured default (an MQTT user's login checked by the API): a killed client's will arrives, a
/// clean one's does not, a session taken over is closed (MQTT 5: reason 142) without its will,
/// and a will's delay is kept. The front end publishes wills itself (`broker/src/front/wills.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_clients_get_wills_and_takeovers_over_both_protocols() -> anyhow::Result<()> {
    let s = Stack::start("wills").await?;
    let pw = s.mqtt_user("paho-wills", false).await?;
    let script = zedops_tests::browser::workspace_root().join("tests/python/wills.py");
    let port = s.serve.mqtt.port().to_string();
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .args(["127.0.0.1", &port, "paho-wills", &pw])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run).await??;
    let said = String::from_utf8_lossy(&out.stdout);
    println!("paho: {said}");
    anyhow::ensure!(
        out.status.success(),
        "paho wills: {said}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.serve.logs()
    );
    Ok(())
}
