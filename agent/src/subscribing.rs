//! Between a CONNACK and the SUBACKs of the agent's subscriptions. The agent publishes its state,
//! which tells the API it is online, only once the broker has answered them: a clustered broker
//! (rmqtt) publishes the state to other nodes before it has added the agent's new request
//! subscription to the cluster's routes, and the API's first request to an agent that had just
//! moved to another node was lost (`tests/tests/cluster.rs`,
//! `an_agents_dead_node_leaves_nothing_stale`). A broker that does not answer within
//! [`SUBACK_WAIT`] gets the state anyway.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode;
use tokio::time::Instant;
use tracing::warn;

/// How long after a CONNACK the agent waits for its SUBACKs before it publishes its state anyway.
pub const SUBACK_WAIT: Duration = Duration::from_secs(5);

/// The filters subscribed since the last CONNACK whose SUBACK has not come yet, in order (a
/// broker answers SUBSCRIBEs in the order they were sent), and until when to wait for them.
#[derive(Debug)]
pub struct Pending {
    filters: VecDeque<String>,
    pub by: Instant,
}

impl Pending {
    pub fn new(filters: Vec<String>) -> Self {
        Self {
            filters: filters.into(),
            by: Instant::now() + SUBACK_WAIT,
        }
    }

    /// Takes one SUBACK (one SUBSCRIBE per filter); true once every filter has its answer. A
    /// refusal is logged: the agent then misses what that filter would bring.
    pub fn answered(&mut self, codes: &[SubscribeReasonCode]) -> bool {
        let filter = self.filters.pop_front().unwrap_or_default();
        for code in codes {
            if !matches!(code, SubscribeReasonCode::Success(_)) {
                warn!(%filter, reason = ?code, "the broker refused a subscription of this agent: check the broker's ACLs");
            }
        }
        self.filters.is_empty()
    }

    /// The filters still unanswered, for a log line.
    pub fn unanswered(&self) -> Vec<&str> {
        self.filters.iter().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::QoS;

    #[test]
    fn done_once_every_filter_is_answered_granted_or_not() {
        let mut p = Pending::new(vec!["a".into(), "b".into()]);
        assert!(!p.answered(&[SubscribeReasonCode::Success(QoS::AtMostOnce)]));
        assert_eq!(p.unanswered(), ["b"]);
        assert!(p.answered(&[SubscribeReasonCode::NotAuthorized]));
        assert!(p.unanswered().is_empty());
    }
}
