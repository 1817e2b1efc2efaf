//! Commands to agents, delivered by the front end itself rather than by rumqttd's router.
//!
//! Why: rumqttd 0.20 matches every new topic against every subscription filter, and every new
//! filter against every topic it has seen (`docs/benchmarks.md` §6). Each agent used to bring a
//! filter of its own (`zedops/v1/agents/{me}/req/+`), so a fleet's first connection cost
//! topics × filters ≈ 27 N² / 2 matches: minutes at 5000 agents. Here an agent's subscription to
//! its own command topics (requests, and with Home Assistant `…/containers/+/set` and
//! `…/actions/+/run`) is kept in this table instead of being passed to rumqttd; the front end
//! holds one subscription of its own per command shape with the agent level a wildcard
//! ([`upstream_filters`], see [`super::feed`]) and hands each command it receives to the
//! connections that asked for it. rumqttd then holds a constant number of filters, whatever the
//! size of the fleet.
//!
//! What a client sees is what MQTT 5 promises, with two differences documented in
//! `docs/protocol.md`: commands arrive at QoS 0 (agents subscribe at QoS 0 anyway), and a
//! retained message on a command topic is not sent on subscribe (commands are never retained).
//! A shared-subscription group (`$share/{group}/…`) gets each command once; plain subscribers
//! each get it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rumqttc::v5::mqttbytes::v5::{self, Packet};
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::mpsc;
use zedops_proto::topics::{self, Topic};

/// Most command subscriptions one connection keeps here; more go to rumqttd as before.
const MAX_PER_CONNECTION: usize = 16;

/// The command topics whose subscriptions the front end serves, as
/// (what the topic is, the upstream filter with `+` for the agent).
pub(crate) fn upstream_filters() -> [(Kind, String); 3] {
    [
        (Kind::Request, topics::requests_of("+")),
        (Kind::Set, topics::container_sets_of("+")),
        (Kind::Run, topics::action_runs_of("+")),
    ]
}

/// The command shapes routed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `zedops/v1/agents/{a}/req/{op}`
    Request,
    /// `zedops/v1/agents/{a}/containers/{name}/set` (Home Assistant)
    Set,
    /// `zedops/v1/agents/{a}/actions/{name}/run` (Home Assistant)
    Run,
}

impl Kind {
    /// The agent and shape of a command topic, if it is one.
    fn of_topic(topic: &str) -> Option<(&str, Kind)> {
        match topics::parse(topic)? {
            Topic::Request { agent, .. } => Some((agent, Kind::Request)),
            Topic::ContainerSet { agent, .. } => Some((agent, Kind::Set)),
            Topic::ActionRun { agent, .. } => Some((agent, Kind::Run)),
            _ => None,
        }
    }

    /// The agent and shape of a filter that is exactly one agent's command filter
    /// (`…/agents/{a}/req/+` and the like, `a` without wildcards), if it is one.
    fn of_filter(filter: &str) -> Option<(String, Kind)> {
        let rest = filter
            .strip_prefix(topics::ROOT)?
            .strip_prefix("/agents/")?;
        let (agent, tail) = rest.split_once('/')?;
        if agent.is_empty() || agent.contains(['+', '#']) {
            return None;
        }
        let generic = format!("{}/agents/+/{tail}", topics::ROOT);
        let (kind, _) = upstream_filters()
            .into_iter()
            .find(|(_, f)| *f == generic)?;
        Some((agent.to_owned(), kind))
    }
}

/// A command filter as a client wrote it: its shared-subscription group, agent and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandFilter {
    group: Option<String>,
    agent: String,
    kind: Kind,
}

impl CommandFilter {
    /// The filter if it is one agent's command filter, plain or `$share/{group}/…`.
    pub(crate) fn parse(filter: &str) -> Option<Self> {
        let (group, plain) = match filter.strip_prefix("$share/") {
            Some(rest) => {
                let (g, f) = rest.split_once('/')?;
                if g.is_empty() || g.contains(['+', '#']) {
                    return None;
                }
                (Some(g.to_owned()), f)
            }
            None => (None, filter),
        };
        let (agent, kind) = Kind::of_filter(plain)?;
        Some(Self { group, agent, kind })
    }
}

struct Route {
    id: u64,
    filter: CommandFilter,
    tx: mpsc::Sender<Packet>,
}

/// Every connection's command subscriptions, by agent.
#[derive(Default)]
pub(crate) struct Routes {
    by_agent: Mutex<HashMap<String, Vec<Route>>>,
    next_id: AtomicU64,
    /// Picks a member of a shared group in turn.
    turn: AtomicUsize,
    dropped: AtomicU64,
}

impl Routes {
    /// Hands a command received from rumqttd to every connection that subscribed to it (one
    /// member per shared group). Returns how many connections got it.
    pub(crate) fn deliver(&self, publish: &v5::Publish) -> usize {
        let topic = String::from_utf8_lossy(&publish.topic);
        let Some((agent, kind)) = Kind::of_topic(&topic) else {
            return 0;
        };
        let map = self.by_agent.lock().unwrap_or_else(|e| e.into_inner());
        let Some(routes) = map.get(agent) else {
            return 0;
        };
        let packet = Packet::Publish(outgoing(publish));
        let wanted: Vec<&Route> = routes.iter().filter(|r| r.filter.kind == kind).collect();
        let mut groups_served: Vec<&str> = Vec::new();
        let mut sent = 0;
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        for i in 0..wanted.len() {
            let r = wanted[(start + i) % wanted.len()];
            if let Some(g) = &r.filter.group {
                if groups_served.contains(&g.as_str()) {
                    continue;
                }
                if self.send(r, &packet) {
                    groups_served.push(g);
                    sent += 1;
                }
            } else if self.send(r, &packet) {
                sent += 1;
            }
        }
        sent
    }

    fn send(&self, route: &Route, packet: &Packet) -> bool {
        match route.tx.try_send(packet.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Logged at the 1st, 2nd, 4th, … drop.
                if n.is_power_of_two() {
                    tracing::warn!(agent = %route.filter.agent, dropped = n, "a command was dropped: the client does not read its connection fast enough");
                }
                false
            }
        }
    }

    fn add(&self, filter: CommandFilter, tx: mpsc::Sender<Packet>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut map = self.by_agent.lock().unwrap_or_else(|e| e.into_inner());
        let routes = map.entry(filter.agent.clone()).or_default();
        routes.push(Route { id, filter, tx });
        id
    }

    fn remove(&self, agent: &str, id: u64) {
        let mut map = self.by_agent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(routes) = map.get_mut(agent) {
            routes.retain(|r| r.id != id);
            if routes.is_empty() {
                map.remove(agent);
            }
        }
    }

    /// How many command subscriptions are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let map = self.by_agent.lock().unwrap_or_else(|e| e.into_inner());
        map.values().map(Vec::len).sum()
    }
}

/// A copy of a command for a client: QoS 0, not retained, without what belonged to the front
/// end's own subscription (its subscription identifiers, any topic alias).
fn outgoing(publish: &v5::Publish) -> v5::Publish {
    let mut p = publish.clone();
    p.qos = QoS::AtMostOnce;
    p.pkid = 0;
    p.dup = false;
    p.retain = false;
    if let Some(props) = p.properties.as_mut() {
        props.topic_alias = None;
        props.subscription_identifiers.clear();
    }
    p
}

/// One connection's command subscriptions; dropping it removes them all.
pub(crate) struct ClientRoutes {
    routes: Arc<Routes>,
    tx: mpsc::Sender<Packet>,
    held: Mutex<Vec<(CommandFilter, u64)>>,
}

impl ClientRoutes {
    pub(crate) fn new(routes: Arc<Routes>, tx: mpsc::Sender<Packet>) -> Self {
        Self {
            routes,
            tx,
            held: Mutex::new(Vec::new()),
        }
    }

    /// Takes a subscription to `filter` here when it is a command filter and there is room:
    /// `true` when the front end serves it (the caller answers the SUBACK itself). Subscribing
    /// again to the same filter keeps the one subscription.
    pub(crate) fn subscribe(&self, filter: &str) -> bool {
        let Some(f) = CommandFilter::parse(filter) else {
            return false;
        };
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.iter().any(|(h, _)| h == &f) {
            return true;
        }
        if held.len() >= MAX_PER_CONNECTION {
            return false;
        }
        let id = self.routes.add(f.clone(), self.tx.clone());
        held.push((f, id));
        true
    }

    /// Ends a subscription served here: `true` when `filter` was one.
    pub(crate) fn unsubscribe(&self, filter: &str) -> bool {
        let Some(f) = CommandFilter::parse(filter) else {
            return false;
        };
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = held.iter().position(|(h, _)| h == &f) else {
            return false;
        };
        let (f, id) = held.swap_remove(i);
        self.routes.remove(&f.agent, id);
        true
    }
}

impl Drop for ClientRoutes {
    fn drop(&mut self) {
        let held = self.held.get_mut().unwrap_or_else(|e| e.into_inner());
        for (f, id) in held.drain(..) {
            self.routes.remove(&f.agent, id);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use bytes::Bytes;

    fn command(topic: &str) -> v5::Publish {
        let mut p = v5::Publish::new(topic, QoS::AtLeastOnce, "x", None);
        p.pkid = 7;
        p.properties = Some(v5::PublishProperties {
            correlation_data: Some(Bytes::from_static(b"c1")),
            response_topic: Some("zedops/v1/replies/api".into()),
            subscription_identifiers: vec![3],
            ..Default::default()
        });
        p
    }

    #[test]
    fn only_one_agents_exact_command_filters_are_served_here() {
        let own = |f: &str| CommandFilter::parse(f).map(|c| (c.group, c.agent, c.kind));
        assert_eq!(
            own("$share/g-req/zedops/v1/agents/maestro/req/+"),
            Some((Some("g-req".into()), "maestro".into(), Kind::Request))
        );
        assert_eq!(
            own("zedops/v1/agents/m/containers/+/set"),
            Some((None, "m".into(), Kind::Set))
        );
        assert!(own("zedops/v1/agents/m/actions/+/run").is_some());
        for other in [
            "zedops/v1/agents/+/req/+",
            "zedops/v1/agents/m/req/#",
            "zedops/v1/agents/m/req/ping",
            "zedops/v1/agents/m/status",
            "zedops/v1/agents//req/+",
            "$share//zedops/v1/agents/m/req/+",
            "$share/g+/zedops/v1/agents/m/req/+",
            "$share/g",
            "zedops/#",
            "",
        ] {
            assert_eq!(own(other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn a_command_reaches_its_agents_subscribers_once_per_group_at_qos_0() {
        let routes = Arc::new(Routes::default());
        let (tx_a, mut rx_a) = mpsc::channel(4);
        let (tx_b, mut rx_b) = mpsc::channel(4);
        let (tx_c, mut rx_c) = mpsc::channel(4);
        let a = ClientRoutes::new(routes.clone(), tx_a);
        let b = ClientRoutes::new(routes.clone(), tx_b);
        let c = ClientRoutes::new(routes.clone(), tx_c);
        assert!(a.subscribe("$share/g/zedops/v1/agents/m/req/+"));
        assert!(a.subscribe("$share/g/zedops/v1/agents/m/req/+"), "again");
        assert!(b.subscribe("$share/g/zedops/v1/agents/m/req/+"));
        assert!(c.subscribe("zedops/v1/agents/m/req/+"));
        assert_eq!(routes.len(), 3);

        assert_eq!(routes.deliver(&command("zedops/v1/agents/m/req/ping")), 2);
        let got = rx_c.try_recv().expect("the plain subscriber gets it");
        let Packet::Publish(p) = got else {
            panic!("{got:?}")
        };
        assert_eq!((p.qos, p.pkid, p.retain), (QoS::AtMostOnce, 0, false));
        let props = p.properties.unwrap();
        assert_eq!(props.correlation_data.as_deref(), Some(&b"c1"[..]));
        assert!(props.subscription_identifiers.is_empty());
        let in_group = rx_a.try_recv().is_ok() as u8 + rx_b.try_recv().is_ok() as u8;
        assert_eq!(in_group, 1, "the group gets it once");

        assert_eq!(
            routes.deliver(&command("zedops/v1/agents/other/req/ping")),
            0
        );
        assert_eq!(
            routes.deliver(&command("zedops/v1/agents/m/containers/x/set")),
            0
        );
        assert!(c.unsubscribe("zedops/v1/agents/m/req/+"));
        assert!(!c.unsubscribe("zedops/v1/agents/m/req/+"));
        drop(a);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes.deliver(&command("zedops/v1/agents/m/req/ping")), 1);
        assert!(rx_b.try_recv().is_ok());
        drop(b);
        assert_eq!(routes.len(), 0);
    }

    #[test]
    fn a_connection_holds_a_bounded_number_and_a_full_queue_drops() {
        let routes = Arc::new(Routes::default());
        let (tx, _rx) = mpsc::channel(1);
        let c = ClientRoutes::new(routes.clone(), tx);
        for i in 0..MAX_PER_CONNECTION {
            assert!(c.subscribe(&format!("$share/g{i}/zedops/v1/agents/m/req/+")));
        }
        assert!(!c.subscribe("$share/more/zedops/v1/agents/m/req/+"));
        // The queue holds one: the first group gets it, the others find it full.
        assert_eq!(routes.deliver(&command("zedops/v1/agents/m/req/ping")), 1);
    }
}
