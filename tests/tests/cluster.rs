//! Past one machine (issue 19): a real three-node rmqtt cluster on loopback as the external
//! broker, with the API as its authentication and ACL authority, on the secured default
//! (enrolled, signing agents; tokens; every broker login checked by the hook).
//!
//! The layout of the first test, as `docs/operations.md` draws it: agent A on node 1, agent B on
//! node 2, the API on node 3. Everything the API and Home Assistant see of A and B crossed the
//! cluster.

use std::time::Duration;

use anyhow::{ensure, Context};
use zedops_client::{Client, ContainerState, EventKind, ListOptions, NewMqttUser};
use zedops_tests::api::{counter_sum, reaches};
use zedops_tests::cluster::{Cluster, Hook, API_LOGIN};
use zedops_tests::ha::{mosquitto_sub, Mqtt311};
use zedops_tests::procs::{Proc, Serve, TempDir};
use zedops_tests::{eventually, free_port, init_logs, unique, TestClient, TestContainer};

/// The cluster, a `zedops serve --broker-auth-hook` on node `api_node` (index) and after it the
/// other nodes, and its admin client.
struct Stack {
    cluster: Cluster,
    serve: Serve,
    admin: Client,
    tmp: TempDir,
}

async fn stack(api_node: usize) -> anyhow::Result<Stack> {
    let port = free_port();
    let hook = Hook {
        api: format!("http://127.0.0.1:{port}"),
    };
    let cluster = Cluster::start(3, Some(&hook)).await?;
    let args = cluster.serve_args(api_node);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let listen = format!("127.0.0.1:{port}");
    let serve = Serve::start_on(&listen, "127.0.0.1:0", &args, "warn,zedops_api=info")?;
    let admin = Client::new(&serve.http, Some(serve.admin_token.clone()), None)?;
    serve.ready().await.with_context(|| cluster.log(api_node))?;
    Ok(Stack {
        cluster,
        serve,
        admin,
        tmp: TempDir::new("cluster")?,
    })
}

/// A new agent enrolled through the API, on the cluster's nodes starting at `node` (index).
async fn agent_on(s: &Stack, node: usize, extra: &[&str]) -> anyhow::Result<(String, Proc)> {
    let through = (&s.serve, &s.admin);
    s.cluster
        .enrolled_agent(through, node, &s.tmp.path, extra)
        .await
}

/// An enrolled agent's broker login, from its credentials file.
fn login_of(s: &Stack, agent: &str) -> anyhow::Result<(String, String)> {
    let file = s.tmp.path.join(agent).join("credentials.json");
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&file)?)?;
    let field = |k: &str| c[k].as_str().map(str::to_owned).context(k.to_owned());
    Ok((field("mqtt_username")?, field("mqtt_password")?))
}

/// Agents on nodes 1 and 2 and the API on node 3: retained status and snapshots, commands with
/// correlation data, events and the Last Will all cross the cluster; Home Assistant, over MQTT
/// 3.1.1 on node 2, discovers and reads the agent of node 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_works_across_the_nodes_of_a_cluster() -> anyhow::Result<()> {
    init_logs();
    let s = stack(2).await?;
    let ca = TestContainer::run(&unique("zt-cl"), &unique("cla"), &[])?;
    let (a, _pa) = agent_on(&s, 0, &["--ha"]).await?;
    let (b, pb) = agent_on(&s, 1, &[]).await?;
    // Status and snapshot (retained, signed) from node 1; a restart from node 3 answered there.
    reaches(&s.admin, &a, &ca).await?;
    eventually("agent B online", Duration::from_secs(30), || async {
        s.admin.agent(&b).await.ok()?.online.then_some(())
    })
    .await?;

    // Retained state across nodes: a client that subscribes on node 3 now gets A's status and
    // snapshot, published on node 1 before it subscribed.
    let mut late = TestClient::connect_with(
        s.cluster.nodes[2].mqtt,
        &format!("zedops-api-late-{}", std::process::id()),
        Some(API_LOGIN),
        Duration::from_secs(5),
    )
    .await?;
    for topic in [
        zedops_proto::topics::status(&a),
        zedops_proto::topics::snapshot(&a),
    ] {
        late.subscribe(&topic).await?;
        let m = late
            .wait_for(
                "A's retained state on node 3",
                Duration::from_secs(5),
                |m| m.topic == topic,
            )
            .await?;
        ensure!(
            m.retain,
            "{topic} arrived on node 3 without its retain flag"
        );
    }
    drop(late);

    // Events: Docker's stop reaches the API's stream through the cluster, from agent A on node
    // 1 (B, on the same Docker engine here, reports it too).
    let mut events = s.admin.events().await?;
    zedops_tests::Docker::run(&["stop", "-t", "2", &ca.name])?;
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = events.next().await {
            let Ok(e) = e else { continue };
            let this = e.container.as_deref() == Some(ca.name.as_str());
            if e.kind == EventKind::Container && this && e.agent == a {
                return true;
            }
        }
        false
    })
    .await
    .context("no container event of agent A within 20 s")?;
    ensure!(seen, "the event stream ended");

    // Home Assistant on node 2 (MQTT 3.1.1, an MQTT user the hook lets in) reads A's discovery.
    let user = s
        .admin
        .create_mqtt_user(&NewMqttUser {
            name: unique("ha"),
            ha_commands: false,
        })
        .await?;
    let ha = Mqtt311 {
        port: s.cluster.nodes[1].mqtt.port(),
        user: user.username,
        pass: user.password,
    };
    let discovery = mosquitto_sub(&ha, "homeassistant/+/+/+/config", 3).await?;
    ensure!(
        discovery.iter().any(|m| m.retain && m.payload.contains(&a)),
        "no retained discovery of {a} on node 2: {discovery:?}"
    );

    // The Last Will: B dies without a word; node 2 publishes its will, the API on node 3 sees it.
    pb.signal("KILL")?;
    eventually("agent B offline", Duration::from_secs(60), || async {
        (!s.admin.agent(&b).await.ok()?.online).then_some(())
    })
    .await?;
    Ok(())
}

/// The hook's ACLs on the cluster: agent A's own login cannot take B's requests nor publish B's
/// status or B's Home Assistant discovery, on any node; wrong passwords and stolen client ids are
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_login_reaches_only_its_own_topics_on_the_cluster() -> anyhow::Result<()> {
    init_logs();
    let s = stack(2).await?;
    let (a, mut pa) = agent_on(&s, 0, &[]).await?;
    let (b, _pb) = agent_on(&s, 1, &[]).await?;
    for agent in [&a, &b] {
        eventually("the agents online", Duration::from_secs(30), || async {
            s.admin.agent(agent).await.ok()?.online.then_some(())
        })
        .await?;
    }
    let (user, pass) = login_of(&s, &a)?;
    let node2 = s.cluster.nodes[1].mqtt;
    let limit = Duration::from_secs(5);
    let a_id = format!("zedops-agent-{a}");

    // Refused at the door: a wrong password; A's password under B's client id.
    let wrong = TestClient::connect_with(node2, &a_id, Some((&user, "nope")), limit).await;
    ensure!(wrong.is_err(), "a wrong password was let in");
    let b_id = format!("zedops-agent-{b}");
    let stolen = TestClient::connect_with(node2, &b_id, Some((&user, &pass)), limit).await;
    ensure!(stolen.is_err(), "A's login was let in under B's client id");

    // A trusted watcher on node 3 sees whatever reaches B's status and discovery topics.
    let mut watch = TestClient::connect_with(
        s.cluster.nodes[2].mqtt,
        &format!("zedops-api-watch-{}", std::process::id()),
        Some(API_LOGIN),
        limit,
    )
    .await?;
    let status_b = zedops_proto::topics::status(&b);
    let config_b = format!("homeassistant/switch/zedops_{b}/web_00000000/config");
    watch.subscribe(&status_b).await?;
    watch.subscribe(&config_b).await?;

    // A's credentials on node 2, with agent A stopped (it would take its session back): B's
    // requests are refused in the SUBACK, A's own granted.
    pa.signal("TERM")?;
    pa.wait_exit(Duration::from_secs(10)).await?;
    let mut forger = TestClient::connect_with(node2, &a_id, Some((&user, &pass)), limit)
        .await
        .context("A's own login on node 2")?;
    for theirs in [
        format!("$share/steal/zedops/v1/agents/{b}/req/+"),
        format!("zedops/v1/agents/{b}/req/#"),
        "zedops/v1/agents/+/req/+".to_owned(),
    ] {
        forger.subscribe_refused(&theirs).await?;
    }
    forger
        .subscribe(&format!("$share/own/zedops/v1/agents/{a}/req/+"))
        .await
        .context("A's own requests")?;
    // B's requests go to B only: a ping through the API is answered by B. A request to A, sent
    // by the watcher after it, reaches the forger: its session was up all along.
    let ping = s.admin.ping(&b, None).await?;
    ensure!(ping.pong.agent == b, "{ping:?}");
    let own = zedops_proto::topics::request(&a, "ping");
    watch.publish(&own, false, b"{}".to_vec()).await?;
    let got = forger.drain(Duration::from_secs(1)).await;
    ensure!(
        got.iter().any(|m| m.topic == own),
        "the forger's session did not receive a request to A: {got:?}"
    );
    ensure!(
        got.iter()
            .all(|m| !m.topic.contains(&format!("/agents/{b}/"))),
        "A's login received B's requests: {got:?}"
    );
    drop(forger);
    watch.drain(Duration::from_millis(500)).await;

    // Each forged publish on a connection of its own: rmqtt disconnects a refused publisher.
    for topic in [&status_b, &config_b] {
        let forger = TestClient::connect_with(node2, &a_id, Some((&user, &pass)), limit).await?;
        let body = br#"{"state":"offline","forged":true}"#.to_vec();
        forger.publish(topic, true, body).await.ok();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let forged = watch.drain(Duration::from_secs(2)).await;
    ensure!(
        forged
            .iter()
            .all(|m| !String::from_utf8_lossy(&m.payload).contains("forged")),
        "A's forged status or discovery of B reached node 3: {forged:?}"
    );
    ensure!(
        s.admin.agent(&b).await?.online,
        "the forged offline status took hold"
    );
    Ok(())
}

/// The hook's cost: an agent's connection costs one database read however many questions its
/// publishes and subscriptions raise, and its status and snapshot, republished every second
/// here, are asked about once per connection: rmqtt keeps the hook's `allow` (`X-Cache`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_repeated_state_costs_the_hook_nothing() -> anyhow::Result<()> {
    init_logs();
    let s = stack(2).await?;
    let reads = "zedops_broker_hook_database_reads_total";
    let questions = "zedops_broker_hook_questions_total";
    let http = s.serve.http.as_str();
    let reads_before = counter_sum(http, reads).await?;
    let extra = ["--no-container-topics", "--resync-interval", "1s"];
    let (a, _pa) = agent_on(&s, 0, &extra).await?;
    eventually("agent A online", Duration::from_secs(30), || async {
        s.admin.agent(&a).await.ok()?.online.then_some(())
    })
    .await?;
    // The first connection: its login, two subscriptions, status and snapshot at least.
    let asked = counter_sum(http, questions).await?;
    let read = counter_sum(http, reads).await? - reads_before;
    ensure!(asked >= 5, "the hook was asked {asked} questions");
    ensure!(
        read <= 2,
        "{read} database reads for one agent's connection ({asked} questions)"
    );

    // A trusted watcher on node 3 counts A's republished status.
    let mut watch = TestClient::connect_with(
        s.cluster.nodes[2].mqtt,
        &format!("zedops-api-watch-{}", std::process::id()),
        Some(API_LOGIN),
        Duration::from_secs(5),
    )
    .await?;
    watch.subscribe(&zedops_proto::topics::status(&a)).await?;
    // A's events topic asked about once before the count: other tests' containers make A
    // publish events at any moment, and the first publish on a topic is a question of its own.
    let _event = TestContainer::run(&unique("zt-hk"), &unique("hk"), &[])?;
    watch.drain(Duration::from_millis(1500)).await;
    let publish = format!("{questions}{{question=\"publish\"");
    let published = counter_sum(http, &publish).await?;
    let seen = watch.drain(Duration::from_secs(5)).await.len();
    let asked = counter_sum(http, &publish).await? - published;
    ensure!(seen >= 3, "A republished its status {seen} times in 5 s");
    ensure!(
        asked == 0,
        "{asked} publish questions for {seen} republished statuses (and snapshots)"
    );
    Ok(())
}

/// Failover: the node that carries agent A and the API dies (node 2, a follower); both move to
/// the next node of their lists, the API shows A online again (never a stale offline), and
/// commands to A and to B (on node 3 all along) work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_loses_no_agent_and_no_api() -> anyhow::Result<()> {
    fails_over(1, 2).await
}

/// The same when the node that dies is the raft leader (node 1), whose death adds an election:
/// the other nodes refuse every CONNECT (*server unavailable*) for several seconds and then take
/// ~2 s to give up the dead node's session, so the agent and the API keep going round the nodes
/// without backing off far (`docs/operations.md` § Failover).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leader_loses_no_agent_and_no_api() -> anyhow::Result<()> {
    fails_over(0, 2).await
}

/// The node under agent A dies (node 2, a follower) while the API, on node 3, stays up: A moves
/// to another node, and a container stopped while A had no broker shows as stopped once A is
/// back (A republishes its state on the new node: nothing stays stale).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_dead_node_leaves_nothing_stale() -> anyhow::Result<()> {
    init_logs();
    let mut s = stack(2).await?;
    let ca = TestContainer::run(&unique("zt-fs"), &unique("fsa"), &[])?;
    let (a, _pa) = agent_on(&s, 1, &[]).await?;
    reaches(&s.admin, &a, &ca).await?;

    let killed = std::time::Instant::now();
    s.cluster.kill(1);
    zedops_tests::Docker::run(&["stop", "-t", "1", &ca.name])?;
    let all = ListOptions {
        all: Some(true),
        ..Default::default()
    };
    let back = eventually(
        "A's stopped container shown as stopped",
        Duration::from_secs(45),
        || async {
            let listing = s.admin.containers(&a, &all).await.ok()?;
            let c = listing.containers.iter().find(|c| c.name == ca.name)?;
            (c.state != ContainerState::Running).then(|| killed.elapsed())
        },
    )
    .await
    .with_context(|| format!("{}\n{}", s.serve.logs(), s.cluster.log(2)))?;
    eprintln!("node 2 killed: A's stopped container shown after {back:?}");
    // Visible means reachable: the first request after that is answered (the agent publishes
    // its state only once the broker has answered its subscriptions; before, this request was
    // lost for ~2 s while the cluster added A's new subscription to its routes).
    let p = s.admin.ping(&a, Some(5)).await?;
    ensure!(p.pong.agent == a, "{p:?}");
    ensure!(s.admin.agent(&a).await?.online, "A shown offline");
    Ok(())
}

/// Agent A and the API on node `dies` (index), agent B on node `stays`; kills node `dies`.
async fn fails_over(dies: usize, stays: usize) -> anyhow::Result<()> {
    init_logs();
    let mut s = stack(dies).await?;
    let ca = TestContainer::run(&unique("zt-fo"), &unique("foa"), &[])?;
    let (a, _pa) = agent_on(&s, dies, &[]).await?;
    let (b, _pb) = agent_on(&s, stays, &[]).await?;
    reaches(&s.admin, &a, &ca).await?;
    eventually("agent B online", Duration::from_secs(30), || async {
        s.admin.agent(&b).await.ok()?.online.then_some(())
    })
    .await?;

    let killed = std::time::Instant::now();
    s.cluster.kill(dies);
    let back = eventually(
        "A answers again through the API",
        Duration::from_secs(45),
        || async {
            let p = s.admin.ping(&a, Some(2)).await.ok()?;
            (p.pong.agent == a).then(|| killed.elapsed())
        },
    )
    .await
    .with_context(|| format!("{}\n{}", s.serve.logs(), s.cluster.log(stays)))?;
    eprintln!(
        "node {} killed: agent A answers through the API again after {back:?}",
        dies + 1
    );
    reaches(&s.admin, &a, &ca).await?;
    let pb = s.admin.ping(&b, None).await?;
    ensure!(pb.pong.agent == b, "{pb:?}");
    ensure!(
        s.admin.agent(&a).await?.online,
        "A shown offline after the failover"
    );
    Ok(())
}
