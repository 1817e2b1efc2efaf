//! One connection's SUBSCRIBE and UNSUBSCRIBE packets: each filter is refused here (the
//! identity's ACLs), served here (an agent's own command topics, [`super::routes`]) or passed on
//! to rumqttd; the SUBACK or UNSUBACK the client gets lists every filter in order, with the
//! codes decided here put back among rumqttd's.

use std::collections::HashMap;
use std::sync::Mutex;

use rumqttc::v5::mqttbytes::v5::{self, Packet, SubscribeReasonCode, UnsubAckReason};
use rumqttc::v5::mqttbytes::QoS;

use super::routes::ClientRoutes;
use crate::acl::Identity;

/// What to do with a SUBSCRIBE or UNSUBSCRIBE.
pub(crate) enum Decision {
    /// Pass this (possibly shortened) packet to rumqttd.
    Forward(Packet),
    /// Answer the client with this; rumqttd is not asked.
    Answer(Packet),
}

/// The filters of one connection that did not go to rumqttd, until rumqttd's answer comes.
pub(crate) struct Subscriptions {
    routes: ClientRoutes,
    subs: Pending<SubscribeReasonCode>,
    unsubs: Pending<UnsubAckReason>,
}

impl Subscriptions {
    pub(crate) fn new(routes: ClientRoutes) -> Self {
        Self {
            routes,
            subs: Mutex::new(HashMap::new()),
            unsubs: Mutex::new(HashMap::new()),
        }
    }

    /// A SUBSCRIBE: `denied` is told of every filter the identity may not have.
    pub(crate) fn subscribe(
        &self,
        mut sub: v5::Subscribe,
        identity: &Identity,
        denied: impl Fn(&str),
    ) -> Decision {
        let codes: Vec<Option<SubscribeReasonCode>> = sub
            .filters
            .iter()
            .map(|f| {
                if !identity.may_subscribe(&f.path) {
                    denied(&f.path);
                    Some(SubscribeReasonCode::NotAuthorized)
                } else if self.routes.subscribe(&f.path) {
                    // Commands are delivered at QoS 0 (`docs/protocol.md`).
                    Some(SubscribeReasonCode::Success(QoS::AtMostOnce))
                } else {
                    None
                }
            })
            .collect();
        match split(&mut sub.filters, codes, sub.pkid, &self.subs) {
            Some(return_codes) => Decision::Answer(Packet::SubAck(v5::SubAck {
                pkid: sub.pkid,
                return_codes,
                properties: None,
            })),
            None => Decision::Forward(Packet::Subscribe(sub)),
        }
    }

    /// An UNSUBSCRIBE: filters served here end here.
    pub(crate) fn unsubscribe(&self, mut unsub: v5::Unsubscribe) -> Decision {
        let codes: Vec<Option<UnsubAckReason>> = unsub
            .filters
            .iter()
            .map(|f| {
                self.routes
                    .unsubscribe(f)
                    .then_some(UnsubAckReason::Success)
            })
            .collect();
        match split(&mut unsub.filters, codes, unsub.pkid, &self.unsubs) {
            Some(reasons) => Decision::Answer(Packet::UnsubAck(v5::UnsubAck {
                pkid: unsub.pkid,
                reasons,
                properties: None,
            })),
            None => Decision::Forward(Packet::Unsubscribe(unsub)),
        }
    }

    /// rumqttd's SUBACK or UNSUBACK, with the codes decided here put back in.
    pub(crate) fn complete(&self, p: Packet) -> Packet {
        match p {
            Packet::SubAck(mut ack) => {
                if let Some(codes) = lock(&self.subs).remove(&ack.pkid) {
                    let broker = std::mem::take(&mut ack.return_codes);
                    ack.return_codes = merge(codes, broker, SubscribeReasonCode::Failure);
                }
                Packet::SubAck(ack)
            }
            Packet::UnsubAck(mut ack) => {
                if let Some(codes) = lock(&self.unsubs).remove(&ack.pkid) {
                    let broker = std::mem::take(&mut ack.reasons);
                    ack.reasons = merge(codes, broker, UnsubAckReason::UnspecifiedError);
                }
                Packet::UnsubAck(ack)
            }
            p => p,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Per packet id, the code decided here for each filter (`None`: rumqttd's).
type Pending<C> = Mutex<HashMap<u16, Vec<Option<C>>>>;

/// Every code, when all were decided here (the client is answered at once); else `None`: the
/// items decided here leave `items`, and their codes wait in `pending` for rumqttd's answer.
fn split<T, C>(
    items: &mut Vec<T>,
    codes: Vec<Option<C>>,
    pkid: u16,
    pending: &Pending<C>,
) -> Option<Vec<C>> {
    if codes.iter().all(Option::is_some) {
        return Some(codes.into_iter().flatten().collect());
    }
    if codes.iter().any(Option::is_some) {
        let mut i = 0;
        items.retain(|_| {
            i += 1;
            codes[i - 1].is_none()
        });
        lock(pending).insert(pkid, codes);
    }
    None
}

/// The codes decided here, with rumqttd's in order in the gaps (`missing` if it sent too few).
fn merge<C>(local: Vec<Option<C>>, broker: Vec<C>, missing: C) -> Vec<C>
where
    C: Copy,
{
    let mut broker = broker.into_iter();
    local
        .into_iter()
        .map(|c| c.or_else(|| broker.next()).unwrap_or(missing))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::front::routes::Routes;
    use std::sync::Arc;

    fn subs() -> Subscriptions {
        let (tx, _rx) = tokio::sync::mpsc::channel(4);
        Subscriptions::new(ClientRoutes::new(Arc::new(Routes::default()), tx))
    }

    fn filters(paths: &[&str]) -> Vec<v5::Filter> {
        paths
            .iter()
            .map(|p| v5::Filter::new(*p, QoS::AtLeastOnce))
            .collect()
    }

    #[test]
    fn refused_served_and_forwarded_filters_answer_in_order() {
        let s = subs();
        let me = Identity::Agent("m".into());
        let sub = v5::Subscribe {
            pkid: 9,
            filters: filters(&[
                "zedops/v1/agents/other/status",
                "$share/g/zedops/v1/agents/m/req/+",
                "homeassistant/status",
            ]),
            properties: None,
        };
        let Decision::Forward(Packet::Subscribe(fwd)) = s.subscribe(sub, &me, |_| {}) else {
            panic!("one filter goes to rumqttd")
        };
        assert_eq!(fwd.filters.len(), 1);
        assert_eq!(fwd.filters[0].path, "homeassistant/status");
        let from_broker = Packet::SubAck(v5::SubAck {
            pkid: 9,
            return_codes: vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
            properties: None,
        });
        let Packet::SubAck(ack) = s.complete(from_broker) else {
            panic!()
        };
        assert_eq!(
            ack.return_codes,
            vec![
                SubscribeReasonCode::NotAuthorized,
                SubscribeReasonCode::Success(QoS::AtMostOnce),
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
            ]
        );
    }

    #[test]
    fn a_served_filter_alone_is_answered_here_and_so_is_its_unsubscribe() {
        let s = subs();
        let me = Identity::Agent("m".into());
        let sub = v5::Subscribe {
            pkid: 1,
            filters: filters(&["$share/g/zedops/v1/agents/m/req/+"]),
            properties: None,
        };
        assert!(matches!(
            s.subscribe(sub, &me, |_| {}),
            Decision::Answer(Packet::SubAck(_))
        ));
        let unsub = v5::Unsubscribe {
            pkid: 2,
            filters: vec!["$share/g/zedops/v1/agents/m/req/+".into(), "x/y".into()],
            properties: None,
        };
        let Decision::Forward(Packet::Unsubscribe(fwd)) = s.unsubscribe(unsub) else {
            panic!("x/y goes to rumqttd")
        };
        assert_eq!(fwd.filters, vec!["x/y".to_owned()]);
        let from_broker = Packet::UnsubAck(v5::UnsubAck {
            pkid: 2,
            reasons: vec![UnsubAckReason::NoSubscriptionExisted],
            properties: None,
        });
        let Packet::UnsubAck(ack) = s.complete(from_broker) else {
            panic!()
        };
        assert_eq!(
            ack.reasons,
            vec![
                UnsubAckReason::Success,
                UnsubAckReason::NoSubscriptionExisted
            ]
        );
    }
}
