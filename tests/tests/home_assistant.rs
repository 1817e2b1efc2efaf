//! Home Assistant through MQTT discovery (`docs/home-assistant.md`), as Home Assistant would see it:
//! clients we did not write (`mosquitto_sub`/`mosquitto_pub` over MQTT 3.1.1, the protocol Home
//! Assistant speaks to the embedded broker's compatibility listener), the discovery configs
//! checked against what each platform requires, and their templates rendered by Jinja2 (the
//! template engine of Home Assistant) against what the agent really publishes.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};
use zedops_agent::{AgentConfig, HaConfig, Signing};
use zedops_broker::{Authenticator, BrokerConfig, BrokerHandle, Identity};
use zedops_proto::ops::Pong;
use zedops_proto::sign::{KeyPair, PublicKey};
use zedops_proto::topics;
use zedops_tests::ha::{mosquitto_pub, mosquitto_sub, render_one, Mqtt311};
use zedops_tests::mqtt::Msg;
use zedops_tests::procs::{spawn_agent_process, InProcAgent, TempDir};
use zedops_tests::{eventually, init_logs, unique, Docker, TestClient, TestContainer};

const PREFIX: &str = "homeassistant";

/// A discovery config seen on `homeassistant/<platform>/<node>/<object>/config`.
#[derive(Debug, Clone)]
struct Discovered {
    platform: String,
    topic: String,
    config: Value,
}

fn parse_config(topic: &str, payload: &[u8]) -> Option<Discovered> {
    let levels: Vec<&str> = topic.split('/').collect();
    let [PREFIX, platform, _node, _object, "config"] = levels.as_slice() else {
        return None;
    };
    let config: Value = serde_json::from_slice(payload).ok()?;
    Some(Discovered {
        platform: (*platform).to_owned(),
        topic: topic.to_owned(),
        config,
    })
}

/// True when the config is about this agent's container (by its state or command topic).
fn is_for(d: &Discovered, agent: &str, container: &str) -> bool {
    let state = topics::container(agent, container);
    let set = topics::container_set(agent, container);
    d.config["state_topic"] == state.as_str() || d.config["command_topic"] == set.as_str()
}

fn of<'a>(
    all: &'a [Discovered],
    agent: &str,
    container: &str,
    platform: &str,
) -> Option<&'a Discovered> {
    all.iter()
        .find(|d| d.platform == platform && is_for(d, agent, container))
}

fn id_chars_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// What Home Assistant's documentation requires (and what we promise) for each platform.
fn validate(d: &Discovered, agent: &str) -> anyhow::Result<()> {
    let c = &d.config;
    let levels: Vec<&str> = d.topic.split('/').collect();
    ensure!(
        levels.len() == 5 && id_chars_ok(levels[2]) && id_chars_ok(levels[3]),
        "discovery topic {} has an invalid node or object id",
        d.topic
    );
    let uid = c["unique_id"].as_str().context("unique_id")?;
    ensure!(id_chars_ok(uid), "unique_id {uid:?} has invalid characters");
    ensure!(uid.contains(agent), "unique_id {uid} names the agent");
    let ids = c["device"]["identifiers"]
        .as_array()
        .context("device.identifiers")?;
    ensure!(
        ids.iter()
            .any(|i| i.as_str().is_some_and(|s| s.contains(agent))),
        "device identifiers {ids:?} contain the agent name"
    );
    ensure!(c["device"]["name"].is_string(), "device.name");
    ensure!(
        c["device"]["manufacturer"] == "zedops",
        "device.manufacturer"
    );
    ensure!(c["device"]["sw_version"].is_string(), "device.sw_version");
    ensure!(c["o"]["name"] == "zedops", "origin name: {}", c["o"]);
    ensure!(
        c["o"]["sw"].is_string() && c["o"]["url"].is_string(),
        "origin sw and url"
    );
    let av = c["availability"].as_array().context("availability")?;
    ensure!(!av.is_empty(), "availability is empty");
    for a in av {
        ensure!(
            a["topic"] == topics::status(agent).as_str(),
            "availability topic {}",
            a["topic"]
        );
        ensure!(a["payload_available"] == "online" && a["payload_not_available"] == "offline");
        ensure!(a["value_template"].is_string());
    }
    ensure!(c["name"].is_string(), "name");
    match d.platform.as_str() {
        "switch" => {
            ensure!(c["command_topic"].is_string(), "switch needs command_topic");
            ensure!(c["state_topic"].is_string(), "switch reports its state");
            ensure!(c["payload_on"] == "start" && c["payload_off"] == "stop");
            ensure!(
                c["value_template"].is_string()
                    && c["state_on"].is_string()
                    && c["state_off"].is_string()
            );
        }
        "button" => {
            ensure!(c["command_topic"].is_string(), "button needs command_topic");
            ensure!(c["payload_press"] == "restart");
        }
        "sensor" => {
            ensure!(c["state_topic"].is_string(), "sensor needs state_topic");
            if c["device_class"] == "enum" {
                ensure!(c["options"].as_array().is_some_and(|o| !o.is_empty()));
            }
        }
        p => bail!("unexpected platform {p}"),
    }
    Ok(())
}

/// Waits (MQTT 5 client subscribed to `homeassistant/#`) until every (agent, container) pair has
/// its three configs; returns every config seen.
async fn wait_discovery(
    c: &mut TestClient,
    pairs: &[(&str, &str)],
    limit: Duration,
) -> anyhow::Result<Vec<Discovered>> {
    let mut all: Vec<Discovered> = Vec::new();
    let complete = |all: &[Discovered]| {
        pairs.iter().all(|(a, n)| {
            ["switch", "button", "sensor"]
                .iter()
                .all(|p| of(all, a, n, p).is_some())
        })
    };
    let deadline = tokio::time::Instant::now() + limit;
    while !complete(&all) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = c
            .wait_for("discovery configs", left, |m| m.topic.starts_with(PREFIX))
            .await
            .with_context(|| format!("{} configs seen, not all of {pairs:?}", all.len()))?;
        if let Some(d) = parse_config(&m.topic, &m.payload) {
            all.retain(|x| x.topic != d.topic);
            all.push(d);
        }
    }
    Ok(all)
}

struct Env {
    broker: BrokerHandle,
    v4: Mqtt311,
    watcher: TestClient,
    /// Enrolled agents' MQTT passwords, by name.
    agents: Arc<Mutex<HashMap<String, String>>>,
    /// Stands in for the server's key: signs requests, as the API does.
    server: KeyPair,
    api_password: String,
}

fn secret() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The secured default, as `zedops serve` runs it: every client authenticates, agents only with
/// their own client id and sign what they publish, Home Assistant is an MQTT user with command
/// rights, and the watcher is trusted like the API.
async fn env() -> anyhow::Result<Env> {
    init_logs();
    let agents: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let (api_password, ha_password) = (secret(), secret());
    let (known, api_pw, ha_pw) = (agents.clone(), api_password.clone(), ha_password.clone());
    let who = move |client_id: &str, user: &str, pass: &str| {
        if user == "test-api" && pass == api_pw {
            return Some(Identity::Trusted);
        }
        if user == "ha" && pass == ha_pw {
            return Some(Identity::User {
                name: "ha".into(),
                ha_commands: true,
            });
        }
        let known = known.lock().ok()?.get(user).is_some_and(|p| p == pass);
        (known && client_id == format!("zedops-agent-{user}"))
            .then(|| Identity::Agent(user.to_owned()))
    };
    let auth = Authenticator(Arc::new(move |client_id: &str, user: &str, pass: &str| {
        let answer = who(client_id, user, pass);
        Box::pin(std::future::ready(answer))
    }));
    let broker = zedops_broker::start(BrokerConfig {
        auth: Some(auth),
        ..BrokerConfig::ephemeral()
    })
    .await?;
    let v4 = Mqtt311 {
        port: broker.v4_addr().context("no MQTT 3.1.1 listener")?.port(),
        user: "ha".into(),
        pass: ha_password,
    };
    let mut watcher = trusted(broker.v5_addr(), &api_password, "ha-watch").await?;
    watcher.subscribe(&format!("{PREFIX}/#")).await?;
    Ok(Env {
        broker,
        v4,
        watcher,
        agents,
        server: KeyPair::from_seed(rand::random()),
        api_password,
    })
}

/// A client with the API's rights.
async fn trusted(addr: SocketAddr, password: &str, id: &str) -> anyhow::Result<TestClient> {
    let creds = Some(("test-api", password));
    TestClient::connect_with(addr, &unique(id), creds, Duration::from_secs(5)).await
}

impl Env {
    /// A client with the API's rights.
    async fn trusted(&self, id: &str) -> anyhow::Result<TestClient> {
        trusted(self.broker.v5_addr(), &self.api_password, id).await
    }

    /// Enrolls `name`: an MQTT password bound to its client id, and its own signing key.
    fn enroll(&self, name: &str) -> (String, KeyPair) {
        let pw = secret();
        if let Ok(mut a) = self.agents.lock() {
            a.insert(name.to_owned(), pw.clone());
        }
        (pw, KeyPair::from_seed(rand::random()))
    }

    /// An in-process agent with `--ha`, enrolled.
    fn agent(
        &self,
        name: &str,
        tweak: impl FnOnce(&mut AgentConfig),
    ) -> anyhow::Result<InProcAgent> {
        let (pw, key) = self.enroll(name);
        let server = PublicKey::from_hex(&self.server.public_hex()).context("server key")?;
        InProcAgent::start(name, self.broker.v5_addr(), move |cfg| {
            cfg.credentials = Some((name_of(cfg), pw));
            cfg.signing = Some(Signing { key, server });
            ha_on(cfg);
            tweak(cfg);
        })
    }

    /// The state dir of an enrolled agent process (its `credentials.json`).
    fn agent_state(&self, name: &str) -> anyhow::Result<TempDir> {
        let (pw, key) = self.enroll(name);
        let dir = TempDir::new("ha-agent-state")?;
        let creds = json!({
            "name": name, "server": "http://127.0.0.1:9", "mqtt_username": name,
            "mqtt_password": pw, "agent_key": key.seed_hex(),
            "server_public_key": self.server.public_hex(),
        });
        std::fs::write(dir.path.join("credentials.json"), creds.to_string())?;
        Ok(dir)
    }
}

fn name_of(cfg: &AgentConfig) -> String {
    cfg.name.as_str().to_owned()
}

fn ha_on(cfg: &mut AgentConfig) {
    cfg.ha = Some(HaConfig::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt311_client_discovers_every_container_of_two_agents() -> anyhow::Result<()> {
    let run = unique("ha-disc");
    let web = TestContainer::run(&unique("zt-ha-web"), &run, &[])?;
    let db = TestContainer::run(&unique("zt-ha-db"), &run, &[])?;
    Docker::run(&["stop", "-t", "1", &db.name])?;
    let hidden = TestContainer::run(
        &unique("zt-ha-hidden"),
        &run,
        &["--label", "zedops.ha=false"],
    )?;

    let mut e = env().await?;
    let (a1, a2) = (unique("ha-one"), unique("ha-two"));
    let _g1 = e.agent(&a1, |_| {})?;
    let _g2 = e.agent(&a2, |_| {})?;
    let pairs = [
        (a1.as_str(), web.name.as_str()),
        (a1.as_str(), db.name.as_str()),
        (a2.as_str(), web.name.as_str()),
        (a2.as_str(), db.name.as_str()),
    ];
    wait_discovery(&mut e.watcher, &pairs, Duration::from_secs(15)).await?;

    // What a Home Assistant connected over MQTT 3.1.1 receives: retained configs.
    let seen = mosquitto_sub(&e.v4, &format!("{PREFIX}/#"), 3).await?;
    let configs: Vec<Discovered> = seen
        .iter()
        .filter(|s| s.retain)
        .filter_map(|s| parse_config(&s.topic, s.payload.as_bytes()))
        .collect();
    let mut uids = HashSet::new();
    let mut ours = 0;
    for (agent, name) in pairs {
        for platform in ["switch", "button", "sensor"] {
            let d = of(&configs, agent, name, platform).with_context(|| {
                format!("no retained {platform} for {agent}/{name} over MQTT 3.1.1")
            })?;
            validate(d, agent).with_context(|| format!("{} {}", d.topic, d.config))?;
            let uid = d.config["unique_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            ensure!(
                uid.contains(&sanitized(name)),
                "unique_id {uid} names the container"
            );
            ensure!(uids.insert(uid.clone()), "unique_id {uid} is used twice");
            ours += 1;
        }
    }
    assert_eq!(ours, 12);
    // No two configs on the broker share a unique_id per platform (other containers included).
    let mut all_uids = HashSet::new();
    for d in &configs {
        let uid = format!("{}/{}", d.platform, d.config["unique_id"]);
        ensure!(all_uids.insert(uid.clone()), "duplicate {uid}");
    }
    // zedops.ha=false: nothing.
    for agent in [&a1, &a2] {
        ensure!(
            !configs.iter().any(|d| is_for(d, agent, &hidden.name)),
            "{} is labelled zedops.ha=false but was announced",
            hidden.name
        );
    }

    // The templates, rendered by Jinja2 against what the agent really publishes.
    let sw = of(&configs, &a1, &web.name, "switch").context("switch")?;
    let state_topic = sw.config["state_topic"].as_str().context("state_topic")?;
    let state = mosquitto_sub(&e.v4, state_topic, 1).await?;
    let state = state.first().context("retained container state")?;
    assert_eq!(
        render_one(&sw.config["value_template"], &state.payload).await?,
        "ON"
    );
    let sensor = of(&configs, &a1, &web.name, "sensor").context("sensor")?;
    assert_eq!(
        render_one(&sensor.config["value_template"], &state.payload).await?,
        "running"
    );
    let attrs = render_one(&sensor.config["json_attributes_template"], &state.payload).await?;
    let attrs: Value = serde_json::from_str(&attrs).context("attributes are JSON")?;
    assert_eq!(attrs["id"], &web.id[..12]);
    let db_sw = of(&configs, &a2, &db.name, "switch").context("db switch")?;
    let db_state = mosquitto_sub(
        &e.v4,
        db_sw.config["state_topic"].as_str().unwrap_or_default(),
        1,
    )
    .await?;
    let db_state = db_state.first().context("retained db state")?;
    assert_eq!(
        render_one(&db_sw.config["value_template"], &db_state.payload).await?,
        "OFF"
    );
    let av = &sw.config["availability"][0];
    let status = mosquitto_sub(&e.v4, av["topic"].as_str().unwrap_or_default(), 1).await?;
    let status = status.first().context("retained agent status")?;
    assert_eq!(
        render_one(&av["value_template"], &status.payload).await?,
        "online"
    );
    Ok(())
}

fn sanitized(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Waits for a command's result and for the container's state topic to show `state`, in either
/// order (the agent publishes the state a command caused before its result); returns the result
/// and the state payload.
async fn wait_result_and_state(
    c: &mut TestClient,
    result_topic: &str,
    state_topic: &str,
    state: &str,
) -> anyhow::Result<(Value, String)> {
    let (mut result, mut payload) = (None, None);
    c.wait_for(
        &format!("a result on {result_topic} and {state_topic} {state}"),
        Duration::from_secs(20),
        |m| {
            if m.topic == result_topic {
                result = Some((m.retain, m.json()));
            } else if m.topic == state_topic && m.json()["state"] == state {
                payload = Some(String::from_utf8_lossy(&m.payload).into_owned());
            }
            result.is_some() && payload.is_some()
        },
    )
    .await?;
    let ((retained, r), payload) = result.zip(payload).context("both seen")?;
    assert!(!retained, "results are not retained");
    Ok((r, payload))
}

async fn wait_result(c: &mut TestClient, topic: &str) -> anyhow::Result<Value> {
    let m: Msg = c
        .wait_for(
            &format!("a result on {topic}"),
            Duration::from_secs(20),
            |m| m.topic == topic,
        )
        .await?;
    assert!(!m.retain, "results are not retained");
    Ok(m.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_and_button_act_on_real_containers_and_protection_is_visible() -> anyhow::Result<()>
{
    let run = unique("ha-cmd");
    let web = TestContainer::run(&unique("zt-ha-web"), &run, &[])?;
    let guard = TestContainer::run(
        &unique("zt-ha-guard"),
        &run,
        &["--label", "zedops.protect=true"],
    )?;
    let me = TestContainer::run(&unique("zt-ha-self"), &run, &[])?;

    let mut e = env().await?;
    let agent = unique("ha-cmd");
    let own = me.name.clone();
    let _a = e.agent(&agent, move |cfg| {
        cfg.ha = Some(HaConfig {
            own_container: Some(own),
            ..HaConfig::default()
        });
    })?;
    let pairs = [
        (agent.as_str(), web.name.as_str()),
        (agent.as_str(), guard.name.as_str()),
        (agent.as_str(), me.name.as_str()),
    ];
    let configs = wait_discovery(&mut e.watcher, &pairs, Duration::from_secs(15)).await?;
    let sw = of(&configs, &agent, &web.name, "switch")
        .context("switch")?
        .config
        .clone();
    let button = of(&configs, &agent, &web.name, "button")
        .context("button")?
        .config
        .clone();
    let cmd = sw["command_topic"]
        .as_str()
        .context("command_topic")?
        .to_owned();
    let state_topic = sw["state_topic"]
        .as_str()
        .context("state_topic")?
        .to_owned();
    let result = topics::container_set_result(&agent, &web.name);
    e.watcher.subscribe(&state_topic).await?;
    e.watcher.subscribe(&result).await?;
    let p = &e.v4;

    // Switch off: HA publishes payload_off on the command topic.
    mosquitto_pub(
        p,
        &cmd,
        &["-m", sw["payload_off"].as_str().unwrap_or_default()],
    )
    .await?;
    let (r, payload) =
        wait_result_and_state(&mut e.watcher, &result, &state_topic, "exited").await?;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["changed"], true);
    assert_eq!(web.state()?, "exited", "Docker shows the container stopped");
    assert_eq!(render_one(&sw["value_template"], &payload).await?, "OFF");

    // Switch on.
    mosquitto_pub(
        p,
        &cmd,
        &["-m", sw["payload_on"].as_str().unwrap_or_default()],
    )
    .await?;
    let (r, payload) =
        wait_result_and_state(&mut e.watcher, &result, &state_topic, "running").await?;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(web.state()?, "running");
    assert_eq!(render_one(&sw["value_template"], &payload).await?, "ON");

    // Restart button (and a command spelled differently: case and spaces do not matter).
    let before = web.started_at()?;
    mosquitto_pub(
        p,
        button["command_topic"].as_str().unwrap_or_default(),
        &["-m", button["payload_press"].as_str().unwrap_or_default()],
    )
    .await?;
    let r = wait_result(&mut e.watcher, &result).await?;
    assert_eq!(r["ok"], true, "{r}");
    let after = web.started_at()?;
    assert_ne!(before, after, "Docker shows a new StartedAt");
    assert_eq!(web.state()?, "running");
    mosquitto_pub(p, &cmd, &["-m", "  STOP \n"]).await?;
    let r = wait_result(&mut e.watcher, &result).await?;
    assert_eq!(r["result"]["container"]["state"], "exited", "{r}");

    // A protected container takes no command (not even start: issue 14, item 14), and the
    // refusal is visible.
    let guard_result = topics::container_set_result(&agent, &guard.name);
    e.watcher.subscribe(&guard_result).await?;
    let guard_cmd = topics::container_set(&agent, &guard.name);
    let guard_started = guard.started_at()?;
    for word in ["stop", "restart", "start"] {
        mosquitto_pub(p, &guard_cmd, &["-m", word]).await?;
        let r = wait_result(&mut e.watcher, &guard_result).await?;
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["error"]["code"], "forbidden", "{r}");
        let msg = r["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("zedops.protect=true") && msg.contains(&guard.name),
            "{msg}"
        );
    }
    assert_eq!(guard.state()?, "running");
    assert_eq!(guard.started_at()?, guard_started, "not restarted");

    // The agent's own container: the same refusal.
    let me_result = topics::container_set_result(&agent, &me.name);
    e.watcher.subscribe(&me_result).await?;
    mosquitto_pub(p, &topics::container_set(&agent, &me.name), &["-m", "stop"]).await?;
    let r = wait_result(&mut e.watcher, &me_result).await?;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("runs agent"),
        "{r}"
    );
    assert_eq!(me.state()?, "running");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birth_republishes_destroy_removes_and_sigkill_makes_entities_unavailable(
) -> anyhow::Result<()> {
    let run = unique("ha-life");
    let doomed = TestContainer::run(&unique("zt-ha-doomed"), &run, &[])?;
    let stays = TestContainer::run(&unique("zt-ha-stays"), &run, &[])?;
    let mut e = env().await?;
    let agent = unique("ha-life");
    let _a = e.agent(&agent, |_| {})?;
    let pairs = [
        (agent.as_str(), doomed.name.as_str()),
        (agent.as_str(), stays.name.as_str()),
    ];
    let configs = wait_discovery(&mut e.watcher, &pairs, Duration::from_secs(15)).await?;
    let state_topic = topics::container(&agent, &stays.name);
    e.watcher.subscribe(&state_topic).await?;
    e.watcher.drain(Duration::from_millis(500)).await;

    // Home Assistant (re)starts: its birth message brings discovery, then the states.
    mosquitto_pub(&e.v4, &format!("{PREFIX}/status"), &["-m", "online"]).await?;
    // Everything received was drained before: these configs are new publications.
    let again = wait_discovery(&mut e.watcher, &pairs, Duration::from_secs(15)).await?;
    for (a, n) in pairs {
        for platform in ["switch", "button", "sensor"] {
            let d = of(&again, a, n, platform).context("republished")?;
            validate(d, a)?;
        }
    }
    e.watcher
        .wait_for("the state after discovery", Duration::from_secs(10), |m| {
            m.topic == state_topic
        })
        .await?;

    // A burst of birth messages (a flapping or hostile client) costs at most one more round of
    // republishing, not one per message (issue 14, item 14).
    let switch_topic = of(&again, &agent, &stays.name, "switch")
        .context("switch config")?
        .topic
        .clone();
    e.watcher.drain(Duration::from_millis(300)).await;
    for _ in 0..5 {
        mosquitto_pub(&e.v4, &format!("{PREFIX}/status"), &["-m", "online"]).await?;
    }
    let burst = e.watcher.drain(Duration::from_millis(1500)).await;
    let rounds = burst.iter().filter(|m| m.topic == switch_topic).count();
    assert!(
        rounds <= 1,
        "{rounds} republishes for a burst of 5 birth messages"
    );

    // A destroyed container's entities are removed: empty retained configs on each topic.
    let doomed_topics: HashSet<String> = configs
        .iter()
        .filter(|d| is_for(d, &agent, &doomed.name))
        .map(|d| d.topic.clone())
        .collect();
    assert_eq!(doomed_topics.len(), 3);
    Docker::run(&["rm", "-f", &doomed.name])?;
    let mut cleared = HashSet::new();
    while cleared.len() < 3 {
        let m = e
            .watcher
            .wait_for("empty configs", Duration::from_secs(10), |m| {
                doomed_topics.contains(&m.topic) && m.payload.is_empty()
            })
            .await?;
        cleared.insert(m.topic);
    }
    // A new container appears without restarting anything.
    let late = TestContainer::run(&unique("zt-ha-late"), &run, &[])?;
    wait_discovery(
        &mut e.watcher,
        &[(agent.as_str(), late.name.as_str())],
        Duration::from_secs(10),
    )
    .await?;
    // Home Assistant connecting now sees no trace of the destroyed one.
    let seen = mosquitto_sub(&e.v4, &format!("{PREFIX}/#"), 2).await?;
    ensure!(
        !seen.iter().any(|s| doomed_topics.contains(&s.topic)),
        "a destroyed container's config is still retained"
    );
    ensure!(seen
        .iter()
        .any(|s| s.payload.contains(&topics::container(&agent, &stays.name))));

    // SIGKILL of an agent process: its Last Will makes its entities unavailable.
    let killed = unique("ha-kill");
    let state = e.agent_state(&killed)?;
    let state_dir = state.path.to_string_lossy().into_owned();
    let mut proc = spawn_agent_process(
        &killed,
        e.broker.v5_addr(),
        &["--ha", "--state-dir", &state_dir],
    )?;
    let found = wait_discovery(
        &mut e.watcher,
        &[(killed.as_str(), stays.name.as_str())],
        Duration::from_secs(15),
    )
    .await?;
    let sw = of(&found, &killed, &stays.name, "switch").context("switch")?;
    validate(sw, &killed)?;
    let av = sw.config["availability"][0].clone();
    let av_topic = av["topic"]
        .as_str()
        .context("availability topic")?
        .to_owned();
    let status = mosquitto_sub(&e.v4, &av_topic, 1).await?;
    assert_eq!(
        render_one(
            &av["value_template"],
            &status.first().context("status")?.payload
        )
        .await?,
        "online"
    );
    proc.signal("KILL")?;
    proc.wait_exit(Duration::from_secs(5)).await?;
    let offline = eventually("the Last Will", Duration::from_secs(10), || {
        let t = av_topic.clone();
        let m = e.v4.clone();
        async move {
            let s = mosquitto_sub(&m, &t, 1).await.ok()?;
            s.into_iter().find(|m| m.payload.contains("\"offline\""))
        }
    })
    .await?;
    assert_eq!(
        render_one(&av["value_template"], &offline.payload).await?,
        "offline"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_command_topics_changes_nothing() -> anyhow::Result<()> {
    let run = unique("ha-junk");
    let web = TestContainer::run(&unique("zt-ha-junk"), &run, &[])?;
    let mut e = env().await?;
    let agent = unique("ha-junk");
    let cmd = topics::container_set(&agent, &web.name);
    let p = &e.v4;
    // A retained command left on the broker before the agent starts: delivered from the store at
    // every subscription, so it must not run.
    mosquitto_pub(p, &cmd, &["-r", "-m", "stop"]).await?;
    let started = web.started_at()?;
    // A discovery config of this agent for a container that no longer exists (left by an earlier
    // run): the agent removes it when it sees it.
    let leftover = format!("{PREFIX}/switch/zedops_{agent}/gone_0badf00d/config");
    mosquitto_pub(p, &leftover, &["-r", "-m", r#"{"name":"gone"}"#]).await?;
    let mut lw = e.trusted("ha-leftover").await?;
    lw.subscribe(&leftover).await?;

    let _a = e.agent(&agent, |_| {})?;
    lw.wait_for(
        "the leftover config removed",
        Duration::from_secs(15),
        |m| m.topic == leftover && m.payload.is_empty(),
    )
    .await?;
    wait_discovery(
        &mut e.watcher,
        &[(agent.as_str(), web.name.as_str())],
        Duration::from_secs(15),
    )
    .await?;
    // Results of the web container's commands, on a client of their own (nothing discards them).
    let result = topics::container_set_result(&agent, &web.name);
    let mut results = e.trusted("ha-results").await?;
    results.subscribe(&result).await?;
    mosquitto_pub(p, &cmd, &["-r", "-n"]).await?; // clear it

    let dir = TempDir::new("ha-junk")?;
    let big = dir.path.join("big");
    std::fs::write(&big, vec![b's'; 1 << 20])?;
    let big_stop = dir.path.join("big-stop");
    std::fs::write(&big_stop, [b"stop".as_slice(), &[b' '; 100]].concat())?;
    let binary = dir.path.join("binary");
    std::fs::write(&binary, b"\xff\xfe\x00stop\x00\x01")?;
    for extra in [
        vec!["-m", "explode"],
        vec!["-m", "ON"],
        vec!["-m", "kill"],
        vec!["-m", "st0p"],
        vec!["-m", "stop now"],
        vec!["-n"],
        vec!["-f", big.to_str().unwrap_or_default()],
        vec!["-f", big_stop.to_str().unwrap_or_default()],
        vec!["-f", binary.to_str().unwrap_or_default()],
    ] {
        mosquitto_pub(p, &cmd, &extra).await?;
    }
    // A valid command for a container that does not exist: refused, visibly.
    let ghost = unique("zt-ha-ghost");
    let ghost_result = topics::container_set_result(&agent, &ghost);
    e.watcher.subscribe(&ghost_result).await?;
    mosquitto_pub(p, &topics::container_set(&agent, &ghost), &["-m", "stop"]).await?;
    let r = wait_result(&mut e.watcher, &ghost_result).await?;
    assert_eq!(r["error"]["code"], "not_found", "{r}");

    // The agent keeps serving, the container is untouched, garbage got no result.
    let mut c = e.trusted("ha-ping").await?;
    c.subscribe(&c.reply_topic()).await?;
    let pong: Pong = c.call_signed(&agent, "ping", json!({}), &e.server).await?;
    assert_eq!(pong.agent, agent);
    let got: Vec<Msg> = results.drain(Duration::from_millis(300)).await;
    assert!(got.is_empty(), "garbage got results: {got:?}");
    assert_eq!(web.state()?, "running");
    assert_eq!(web.started_at()?, started, "never restarted");
    Ok(())
}
