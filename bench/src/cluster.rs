//! Scenario 9: a real `zedops agent` on a three-node rmqtt cluster (`zedops_tests::cluster`).
//!
//! 1. `ping` round trip through two nodes (client on node 3, agent on node 1) beside the same
//!    through one node (client on node 1), and through Mosquitto, in the same run.
//! 2. Failover: the node that carries the agent is killed; the time until the agent answers a
//!    client on another node again. Once for a node that is not the raft leader, once for the
//!    leader (another cluster), since the leader's death adds an election.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use zedops_tests::cluster::Cluster;
use zedops_tests::procs::{agent_command_on, Mosquitto, Proc};
use zedops_tests::TestClient;

use crate::rtt::client;
use crate::stats::{fmt_dur, verdict, Samples, Table};
use crate::Opts;

const AGENT: &str = "bench-cluster-agent";

/// Time to the first `ping` that `c` gets answered, trying every 100 ms (each try waits 500 ms).
async fn until_answered(c: &mut TestClient, limit: Duration) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let r = c
            .request(AGENT, "ping", json!({}), Duration::from_millis(500))
            .await;
        if r.is_ok_and(|r| r.ok) {
            return Ok(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the agent did not answer within {limit:?}")
}

async fn ping(c: &mut TestClient) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let r = c
        .request(AGENT, "ping", json!({}), Duration::from_secs(5))
        .await?;
    anyhow::ensure!(r.ok, "ping failed: {:?}", r.error);
    Ok(t0.elapsed())
}

/// The agent on `brokers` (a `--broker` list), without enrollment.
fn agent(brokers: &str) -> anyhow::Result<Proc> {
    let child = agent_command_on(AGENT, brokers, &[], "ZEDOPS_BENCH_AGENT_LOG")?
        .spawn()
        .context("starting zedops agent")?;
    Ok(Proc {
        child,
        what: "agent".into(),
    })
}

/// Longer than a screen on purpose, like the other scenarios: it reads top to bottom in the order
/// it measures.
pub async fn run(o: &Opts) -> anyhow::Result<Vec<Table>> {
    let n = if o.quick { 400 } else { 2000 };
    let rounds = 4;
    let mut c = Cluster::start(3, None).await?;
    let _agent = agent(&c.urls_from(0))?;
    let mut same = client(c.nodes[0].mqtt, "same").await?;
    let mut cross = client(c.nodes[2].mqtt, "cross").await?;
    until_answered(&mut same, Duration::from_secs(30)).await?;
    until_answered(&mut cross, Duration::from_secs(30)).await?;
    let mosq = Mosquitto::start().await?;
    let _mosq_agent = agent(&format!("mqtt://{}", mosq.addr))?;
    let mut mq = client(mosq.addr, "mosq").await?;
    until_answered(&mut mq, Duration::from_secs(30)).await?;
    for _ in 0..200 {
        ping(&mut same).await?;
        ping(&mut cross).await?;
        ping(&mut mq).await?;
    }
    let (mut s1, mut s2, mut sm) = (Samples::new(), Samples::new(), Samples::new());
    for _ in 0..rounds {
        for _ in 0..n / rounds {
            s1.push(ping(&mut same).await?);
        }
        for _ in 0..n / rounds {
            s2.push(ping(&mut cross).await?);
        }
        for _ in 0..n / rounds {
            sm.push(ping(&mut mq).await?);
        }
    }
    let mut t =
        Table::latency("9a. Cluster: `ping` round trip through one rmqtt node and through two");
    let ratio = s2.p50().as_secs_f64() / s1.p50().as_secs_f64().max(1e-9);
    t.lat(
        "client on node 3 → node 3 → node 1 → agent → back",
        &s2,
        &verdict("p50 ≤ 2× one node", s2.p50(), s1.p50() * 2),
    );
    t.lat("reference: client and agent on node 1", &s1, "reference");
    t.lat(
        "reference: the same agent and client through Mosquitto",
        &sm,
        "reference",
    );
    t.note(format!("ratio two nodes / one node at p50: {ratio:.2}; rmqtt 0.24, three raft nodes on loopback; {rounds} rounds alternating after 200 warm-up requests each."));

    // Failover: the agent's node dies (node 1 is the raft leader).
    drop(same);
    let killed = Instant::now();
    c.kill(0);
    let leader = until_answered(&mut cross, Duration::from_secs(60)).await;
    let leader_back = killed.elapsed();
    drop(cross);
    drop(c);
    let mut c = Cluster::start(3, None).await?;
    let _agent2 = agent(&c.urls_from(1))?;
    let mut other = client(c.nodes[0].mqtt, "other").await?;
    until_answered(&mut other, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = Instant::now();
    c.kill(1);
    let follower = until_answered(&mut other, Duration::from_secs(60)).await;
    let follower_back = killed.elapsed();
    let mut f = Table::new(
        "9b. Cluster: the agent's node killed, until it answers again from another node",
        &["what", "time", "target"],
    );
    let show = |r: &anyhow::Result<Duration>, back: Duration| match r {
        Ok(_) => fmt_dur(back),
        Err(e) => format!("{e} (after {})", fmt_dur(back)),
    };
    let ok = |r: &anyhow::Result<Duration>, back: Duration| {
        if r.is_ok() && back <= Duration::from_secs(10) {
            "≤ 10 s: ok"
        } else {
            "≤ 10 s: MISSED"
        }
    };
    f.row(vec![
        "a node that is not the raft leader".into(),
        show(&follower, follower_back),
        ok(&follower, follower_back).into(),
    ]);
    f.row(vec![
        "the raft leader (adds an election)".into(),
        show(&leader, leader_back),
        ok(&leader, leader_back).into(),
    ]);
    f.note("A real `zedops agent --broker n1,n2,n3` (its node first); its client asks on a node that stays. The agent retries its dead node once after a random wait up to 1.5 s, then goes round the nodes (~100 ms apart within a round, a doubling delay with full jitter between rounds), each attempt waiting 3 s for a CONNACK until attempts time out (proto/src/failover.rs). rmqtt-cluster-raft with try_lock_timeout at 2 s and node_grpc_client_timeout at 1 s (docs/operations.md).");
    Ok(vec![t, f])
}
