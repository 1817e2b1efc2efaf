//! Whether a request is trusted: signed by the server, for this agent, within its deadline
//! (`docs/security.md`), or accepted unsigned with `--accept-unsigned`.

use rumqttc::v5::mqttbytes::v5::Publish;

/// Why a request is refused as unauthorized; each message tells the sender what is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Distrust {
    #[error("this agent only executes requests signed by its zedops server; this one is unsigned")]
    Unsigned,
    #[error("a signed request must carry its deadline")]
    NoDeadline,
    #[error("the request's signing time is malformed")]
    MalformedTime,
    #[error("the request's signature does not match this agent's zedops server")]
    BadSignature,
    #[error("the request was signed before this agent started (a replay); refused")]
    BeforeStart,
}

/// How the agent decides whether to trust a request.
pub(crate) struct Trust {
    pub(crate) signing: Option<crate::Signing>,
    pub(crate) accept_unsigned: bool,
    /// Signed requests older than the agent's start are refused (replays across restarts).
    pub(crate) started_ms: u64,
}

impl Trust {
    /// `Err(why)` when the request must be refused as unauthorized.
    pub(crate) fn check(
        &self,
        topic: &str,
        p: &Publish,
        deadline_ms: Option<u64>,
    ) -> Result<(), Distrust> {
        let Some(signing) = &self.signing else {
            return Ok(());
        };
        if self.accept_unsigned {
            return Ok(());
        }
        let props = p.properties.as_ref();
        let prop = |name: &str| {
            props.and_then(|pr| zedops_proto::sign::user_property(&pr.user_properties, name))
        };
        let (Some(sig), Some(ts)) = (
            prop(zedops_proto::sign::SIG_PROPERTY),
            prop(zedops_proto::sign::TS_PROPERTY),
        ) else {
            return Err(Distrust::Unsigned);
        };
        let Some(deadline_ms) = deadline_ms else {
            return Err(Distrust::NoDeadline);
        };
        let ts_ms: u64 = ts.parse().map_err(|_| Distrust::MalformedTime)?;
        let ok = signing.server.verify(
            &zedops_proto::sign::Signed {
                topic,
                response_topic: props.and_then(|pr| pr.response_topic.as_deref()),
                correlation: props.and_then(|pr| pr.correlation_data.as_deref()),
                deadline_ms: Some(deadline_ms),
                ts_ms,
                payload: &p.payload,
                request_sig: None,
            },
            sig,
        );
        if !ok {
            return Err(Distrust::BadSignature);
        }
        if ts_ms + 2_000 < self.started_ms {
            return Err(Distrust::BeforeStart);
        }
        Ok(())
    }
}
