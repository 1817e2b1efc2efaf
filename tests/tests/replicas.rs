//! Replicas (issue 19, items 4 and 5): two `zedops serve --no-broker --broker … --database
//! postgres://…` on one PostgreSQL (Debian's, started for the test) and one three-node rmqtt
//! cluster, on the secured default: a token made on one works on the other, an agent enrolled
//! through one is commanded through the other, both see the whole fleet and its events, the audit
//! log holds both, and killing one leaves the other fully working.

use std::time::Duration;

use anyhow::{ensure, Context};
use zedops_client::{Action, ActionOptions, Client, EventKind, NewToken, Role};
use zedops_tests::cluster::{Cluster, Hook};
use zedops_tests::postgres::Postgres;
use zedops_tests::procs::{Serve, TempDir};
use zedops_tests::{eventually, free_port, init_logs, unique, TestContainer};

/// A replica on `port`, on the cluster's nodes from `node` (index), on the database `db`.
fn replica(port: u16, cluster: &Cluster, node: usize, db: &str) -> anyhow::Result<Serve> {
    let mut args = cluster.serve_args(node);
    args.extend(["--no-broker", "--database", db].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Serve::start_on(&format!("127.0.0.1:{port}"), "127.0.0.1:0", &args, "warn")
}

async fn online(c: &Client, agent: &str) -> anyhow::Result<()> {
    eventually("the agent online", Duration::from_secs(30), || async {
        c.agent(agent).await.ok()?.online.then_some(())
    })
    .await
}

async fn restart(c: &Client, agent: &str, container: &str) -> anyhow::Result<()> {
    let opts = ActionOptions::default();
    let r = c.act(agent, container, Action::Restart, &opts).await?;
    ensure!(
        r.changed,
        "the restart through {} changed nothing",
        c.server()
    );
    Ok(())
}

/// Until `events` shows a container event of `agent` (at most 20 s).
async fn saw_event_of(events: &mut zedops_client::EventStream, agent: &str) -> anyhow::Result<()> {
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = events.next().await {
            let Ok(e) = e else { continue };
            if e.kind == EventKind::Container && e.agent == agent {
                return true;
            }
        }
        false
    })
    .await
    .with_context(|| format!("no container event of {agent} within 20 s"))?;
    ensure!(seen, "the event stream ended");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_database_serve_one_fleet() -> anyhow::Result<()> {
    init_logs();
    let pg = Postgres::start().await?;
    let (port_a, port_b) = (free_port(), free_port());
    // The broker asks replica A (in production: a load balancer in front of every replica).
    let hook = Hook {
        api: format!("http://127.0.0.1:{port_a}"),
    };
    let cluster = Cluster::start(3, Some(&hook)).await?;
    let a = replica(port_a, &cluster, 0, &pg.url)?;
    a.ready().await?;
    let mut b = replica(port_b, &cluster, 2, &pg.url)?;
    b.ready().await?;
    ensure!(
        b.admin_token.is_empty(),
        "the second replica made an admin token of its own"
    );
    let admin_a = Client::new(&a.http, Some(a.admin_token.clone()), None)?;

    // A token made on A works on B.
    let made = admin_a
        .create_token(&NewToken {
            name: unique("ops"),
            role: Role::Operator,
        })
        .await?;
    let ops_b = Client::new(&b.http, Some(made.token.clone()), None)?;
    ensure!(
        ops_b.whoami().await?.role == Role::Operator,
        "A's token on B"
    );
    let admin_b = Client::new(&b.http, Some(a.admin_token.clone()), None)?;

    // An agent enrolled through A (node 1) and one through B (node 2); each replica sees both.
    let tmp = TempDir::new("replicas")?;
    let container = TestContainer::run(&unique("zt-rp"), &unique("rp"), &[])?;
    let (x, _px) = cluster
        .enrolled_agent((&a, &admin_a), 0, &tmp.path, &[])
        .await?;
    let (y, _py) = cluster
        .enrolled_agent((&b, &admin_b), 1, &tmp.path, &[])
        .await?;
    for c in [&admin_a, &ops_b] {
        online(c, &x).await?;
        online(c, &y).await?;
    }
    // Commanded through the other replica: the agent takes B's signature (one server key).
    restart(&ops_b, &x, &container.name).await?;
    restart(&admin_a, &y, &container.name).await?;

    // Both replicas' event streams show the agent enrolled through A.
    let mut streams = [admin_a.events().await?, ops_b.events().await?];
    zedops_tests::Docker::run(&["stop", "-t", "2", &container.name])?;
    for (events, which) in streams.iter_mut().zip(["A", "B"]) {
        saw_event_of(events, &x)
            .await
            .with_context(|| format!("{which}'s event stream"))?;
    }
    zedops_tests::Docker::run(&["start", &container.name])?;

    // One audit log: both restarts, whichever replica is asked.
    let log = admin_b.audit(Some(50)).await?;
    let restarts: Vec<_> = log
        .iter()
        .filter(|r| r.action == "container.restart")
        .filter_map(|r| r.agent.clone())
        .collect();
    ensure!(
        restarts.contains(&x) && restarts.contains(&y),
        "the audit log lacks a replica's restart: {restarts:?}"
    );

    // B dies; A serves the whole fleet on its own: both agents answer, a token made now works,
    // an agent enrolled now is commanded, and A's events keep coming. (B is the replica the
    // broker does not ask: with one hook URL, the hook's replica going down refuses new logins,
    // so production puts a load balancer in front of the replicas: docs/operations.md.)
    b.proc.signal("KILL")?;
    b.proc.wait_exit(Duration::from_secs(5)).await?;
    restart(&admin_a, &x, &container.name).await?;
    restart(&admin_a, &y, &container.name).await?;
    ensure!(
        admin_a.agent(&y).await?.online,
        "B's agent offline after B died"
    );
    let later = admin_a
        .create_token(&NewToken {
            name: unique("late"),
            role: Role::Operator,
        })
        .await?;
    let late = Client::new(&a.http, Some(later.token), None)?;
    let (z, _pz) = cluster
        .enrolled_agent((&a, &admin_a), 1, &tmp.path, &[])
        .await?;
    online(&late, &z).await?;
    let mut events = late.events().await?;
    restart(&late, &z, &container.name).await?;
    saw_event_of(&mut events, &z)
        .await
        .context("A's event stream after B died")?;
    Ok(())
}
