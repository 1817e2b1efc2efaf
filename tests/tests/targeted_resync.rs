//! A targeted `fleet/resync` (`proto/src/resync.rs`): the API fills the gaps a busy broker left
//! by asking only the agents whose state is incomplete, instead of another blast from the whole
//! fleet. On Debian's Mosquitto (anonymous, so this test may publish the resync as the API does)
//! with two enrolled, signing `zedops agent` processes: a resync naming A brings A's status again
//! and not B's; an empty one brings both.

use std::time::Duration;

use anyhow::ensure;
use zedops_client::{Client, NewAgent};
use zedops_proto::topics;
use zedops_tests::procs::{spawn_agent_on, Mosquitto, Proc, Serve, TempDir};
use zedops_tests::{eventually, init_logs, unique, TestClient};

/// Status messages published live (not a retained copy) during `window`, by topic.
async fn live_statuses(spy: &mut TestClient, window: Duration) -> Vec<String> {
    let got = spy.drain(window).await;
    got.into_iter()
        .filter(|m| !m.retain)
        .map(|m| m.topic)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targeted_resync_asks_only_the_agents_it_names() -> anyhow::Result<()> {
    init_logs();
    let mosquitto = Mosquitto::start().await?;
    let broker = format!("mqtt://{}", mosquitto.addr);
    let serve = Serve::start(&["--broker", &broker], "warn")?;
    serve.ready().await?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    let tmp = TempDir::new("resync")?;
    let mut agents: Vec<(String, Proc)> = Vec::new();
    for prefix in ["rsa", "rsb"] {
        let name = unique(prefix);
        let new = NewAgent {
            name: name.clone(),
            ttl_s: None,
        };
        let e = admin.register_agent(&new).await?;
        let state = tmp.path.join(&name);
        // No periodic republish during the test: only resyncs make them publish.
        let extra = ["--resync-interval", "1h"];
        let p = spawn_agent_on(&serve, (&name, &e.token), &state, &broker, &extra)?;
        agents.push((name, p));
    }
    let (a, b) = (agents[0].0.clone(), agents[1].0.clone());
    for n in [&a, &b] {
        eventually("the agent online", Duration::from_secs(30), || async {
            admin.agent(n).await.ok()?.online.then_some(())
        })
        .await?;
    }
    let mut spy = TestClient::connect(mosquitto.addr, &unique("spy")).await?;
    spy.subscribe(topics::ALL_STATUS).await?;
    spy.drain(Duration::from_secs(2)).await; // the retained copies, anything still in flight

    // Named: A answers (after its random delay ≤ 1 s), B does not.
    let named = zedops_proto::resync::payload(std::slice::from_ref(&a));
    spy.publish(topics::RESYNC, false, named).await?;
    let seen = live_statuses(&mut spy, Duration::from_secs(3)).await;
    let from = |seen: &[String], n: &str| seen.iter().any(|t| *t == topics::status(n));
    ensure!(
        from(&seen, &a),
        "A did not answer a resync naming it: {seen:?}"
    );
    ensure!(
        !from(&seen, &b),
        "B answered a resync naming only A: {seen:?}"
    );

    // Empty: everyone answers.
    spy.publish(topics::RESYNC, false, Vec::new()).await?;
    let seen = live_statuses(&mut spy, Duration::from_secs(3)).await;
    ensure!(
        from(&seen, &a) && from(&seen, &b),
        "not both answered an empty resync: {seen:?}"
    );
    Ok(())
}
