//! Commands delivered by the embedded broker's front end (issue 19, item 6): an agent's
//! subscription to its own command topics is served by the front end, not by rumqttd's router
//! (`broker/src/front/routes.rs`). On the secured default — a real `zedops serve` whose local
//! agent is enrolled and signs — clients nobody here wrote subscribe to an agent's requests over
//! MQTT 5 and 3.1.1 while the agent keeps answering, and an unsubscribed client gets no more.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use rumqttc::v5::mqttbytes::QoS;
use zedops_tests::secured::Secured as Stack;
use zedops_tests::{unique, TestClient};

/// `mosquitto_sub` waiting for one message on the agent's request filter.
fn watch_requests(
    s: &Stack,
    version: &str,
    user: (&str, &str),
) -> anyhow::Result<tokio::process::Child> {
    let filter = zedops_proto::topics::requests_of(&s.agent);
    let port = s.serve.mqtt.port().to_string();
    tokio::process::Command::new("mosquitto_sub")
        .args(["-V", version, "-h", "127.0.0.1", "-p", &port])
        .args(["-u", user.0, "-P", user.1, "-i", &unique("watch")])
        .args([
            "-t",
            &filter,
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "20",
            "-F",
            "%t|%q|%R|%P",
        ])
        // -d prints the SUBACK: "Subscribed (mid: 1): 0" is the QoS granted.
        .arg("-d")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("mosquitto_sub (install mosquitto-clients: scripts/provision.sh)")
}

/// Plain subscribers to one agent's requests, over MQTT 5 and 3.1.1, each get the API's signed
/// ping with its MQTT 5 properties where the protocol has them, at QoS 0; the agent, whose own
/// subscription is a shared group, answers every ping meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_of_an_agents_requests_get_them_over_both_protocols() -> anyhow::Result<()> {
    let s = Stack::start("routes").await?;
    let pw = s.mqtt_user("watcher", false).await?;
    let v5 = watch_requests(&s, "mqttv5", ("watcher", &pw))?;
    let v4 = watch_requests(&s, "mqttv311", ("watcher", &pw))?;
    // Ping until both watchers have had one (each exits after its first message).
    let done = async {
        let (a, b) = tokio::join!(v5.wait_with_output(), v4.wait_with_output());
        Ok::<_, std::io::Error>((a?, b?))
    };
    tokio::pin!(done);
    let mut pings = Vec::new();
    let (out5, out4) = loop {
        tokio::select! {
            r = &mut done => break r?,
            _ = tokio::time::sleep(Duration::from_millis(300)) => pings.push(s.ping().await?),
        }
    };
    let request = zedops_proto::topics::request(&s.agent, "ping");
    let (text5, granted5) = message_and_grant(&out5.stdout, &request);
    let (text4, granted4) = message_and_grant(&out4.stdout, &request);
    // The front end serves the subscription (rumqttd would grant the QoS 1 asked for).
    assert_eq!(
        (granted5.as_deref(), granted4.as_deref()),
        (Some("0"), Some("0"))
    );
    let fields: Vec<&str> = text5.trim().splitn(4, '|').collect();
    assert!(
        out5.status.success() && fields.len() == 4,
        "MQTT 5 watcher: {text5:?} {:?}",
        String::from_utf8_lossy(&out5.stderr)
    );
    assert_eq!(fields[0], request);
    assert_eq!(fields[1], "0", "commands are delivered at QoS 0");
    assert!(fields[2].starts_with("zedops/v1/replies/"), "{text5}");
    assert!(
        fields[3].contains(zedops_proto::sign::SIG_PROPERTY),
        "{text5}"
    );
    assert!(
        out4.status.success() && text4.starts_with(&format!("{request}|0|")),
        "MQTT 3.1.1 watcher: {text4:?} {:?}",
        String::from_utf8_lossy(&out4.stderr)
    );
    assert!(
        !pings.is_empty() && pings.iter().all(|p| *p == 200),
        "{pings:?}"
    );
    assert_eq!(s.ping().await?, 200);
    Ok(())
}

/// From `mosquitto_sub -d` output: the line of the message on `topic`, and the QoS its SUBACK
/// granted.
fn message_and_grant(stdout: &[u8], topic: &str) -> (String, Option<String>) {
    let text = String::from_utf8_lossy(stdout);
    let message = text
        .lines()
        .find(|l| l.starts_with(&format!("{topic}|")))
        .unwrap_or_default()
        .to_owned();
    let granted = text
        .lines()
        .find(|l| l.starts_with("Subscribed (mid:"))
        .and_then(|l| l.rsplit(':').next())
        .map(|q| q.trim().to_owned());
    (message, granted)
}

/// After UNSUBSCRIBE a client gets no more of the agent's requests, and a client that goes
/// away leaves nothing behind: the agent still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribed_client_gets_no_more_requests() -> anyhow::Result<()> {
    let s = Stack::start("routes").await?;
    let pw = s.mqtt_user("leaver", false).await?;
    let filter = zedops_proto::topics::requests_of(&s.agent);
    let mut c = TestClient::connect_with(
        s.serve.mqtt,
        &unique("leaver"),
        Some(("leaver", &pw)),
        Duration::from_secs(5),
    )
    .await?;
    c.subscribe(&filter).await?;
    assert_eq!(s.ping().await?, 200);
    let ping = zedops_proto::topics::request(&s.agent, "ping");
    c.wait_for("the ping request", Duration::from_secs(5), |m| {
        m.topic == ping
    })
    .await?;
    c.client.unsubscribe(&filter).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.ping().await?, 200);
    let after = c.drain(Duration::from_secs(1)).await;
    assert!(after.iter().all(|m| m.topic != ping), "{after:?}");
    // Subscribing again works, at QoS 0 whatever was asked.
    c.client.subscribe(&filter, QoS::AtLeastOnce).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.ping().await?, 200);
    c.wait_for("the ping request again", Duration::from_secs(5), |m| {
        m.topic == ping
    })
    .await?;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.ping().await?, 200);
    Ok(())
}
