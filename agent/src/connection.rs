//! What the agent says about its broker connection (issue 17, item 3): each failure's cause in
//! words a user can act on (refused, DNS, TLS, bad credentials, not authorized, no answer) with
//! the next retry, at a bounded rate; and when a refusal of the agent's credentials is for good.

use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::ConnectReturnCode;
use rumqttc::v5::ConnectionError;
use tracing::{info, warn};

/// At most one warning per this long while the connection keeps failing.
pub const WARN_EVERY: Duration = Duration::from_secs(30);
/// Consecutive refusals of the credentials after which the agent gives up (revoked).
pub const REFUSALS_FOR_GOOD: u32 = 3;

/// Why a connection attempt failed, in words; `credentials` when the broker refused who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: String,
    pub credentials: bool,
}

/// The cause of `e` for the broker at `broker`.
pub fn describe(e: &ConnectionError, broker: &str) -> Failure {
    let plain = |cause: String| Failure {
        cause,
        credentials: false,
    };
    match e {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => Failure {
            cause: format!(
                "{broker} refuses this agent's credentials ({code:?}): it was removed or never enrolled there; enroll it again with `zedops agents add` on the server"
            ),
            credentials: true,
        },
        ConnectionError::ConnectionRefused(code) => {
            plain(format!("{broker} refused the connection ({code:?})"))
        }
        ConnectionError::Io(io) => plain(io_cause(io, broker)),
        ConnectionError::Tls(t) => plain(format!(
            "TLS with {broker} failed: {t} (check --ca-file and that the certificate names this host)"
        )),
        ConnectionError::Timeout(_) => plain(format!(
            "{broker} accepted the connection but did not answer the MQTT handshake in time (is it an MQTT 5 broker? is it overloaded?)"
        )),
        other => plain(format!("the connection to {broker} failed: {other}")),
    }
}

fn io_cause(io: &std::io::Error, broker: &str) -> String {
    use std::io::ErrorKind;
    let text = io.to_string();
    match io.kind() {
        ErrorKind::ConnectionRefused => format!(
            "nothing listens at {broker} (connection refused): is the broker running, and is the port right?"
        ),
        _ if text.contains("lookup") || text.contains("resolve") || text.contains("Name or service") => {
            format!("cannot resolve the host of {broker}: {text}")
        }
        ErrorKind::TimedOut => format!("{broker} does not answer (timed out): a firewall, or the wrong address?"),
        ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe => {
            format!("{broker} closed the connection ({text})")
        }
        _ => format!("cannot connect to {broker}: {text}"),
    }
}

/// Failures since the last connection: warns on the first and then at most every
/// [`WARN_EVERY`], and counts refusals of the credentials.
#[derive(Debug, Default)]
pub struct ReconnectLog {
    failures: u32,
    refusals: u32,
    last_warn: Option<Instant>,
}

impl ReconnectLog {
    /// Records a failure; returns true when the credentials are refused for good.
    pub fn failed(&mut self, f: &Failure, retry_in: Duration) -> bool {
        self.failures += 1;
        self.refusals = if f.credentials { self.refusals + 1 } else { 0 };
        let due = self.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY);
        if due {
            self.last_warn = Some(Instant::now());
            warn!(
                cause = %f.cause,
                attempts = self.failures,
                retry_in_ms = u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
                "cannot connect to the broker; retrying"
            );
        }
        self.refusals >= REFUSALS_FOR_GOOD
    }

    /// A CONNACK: says so when there were failures, and starts over.
    pub fn connected(&mut self) {
        if self.failures > 0 {
            info!(
                after_attempts = self.failures,
                "connected to the broker again"
            );
        }
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_words() {
        let refused =
            ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let f = describe(&refused, "mqtt://h:1");
        assert!(f.cause.contains("nothing listens at mqtt://h:1") && !f.credentials);
        let creds = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        let f = describe(&creds, "mqtt://h:1");
        assert!(
            f.credentials && f.cause.contains("enroll it again"),
            "{}",
            f.cause
        );
    }

    #[test]
    fn refusals_for_good_need_several_in_a_row() {
        let mut log = ReconnectLog::default();
        let creds = Failure {
            cause: "x".into(),
            credentials: true,
        };
        let other = Failure {
            cause: "y".into(),
            credentials: false,
        };
        assert!(!log.failed(&creds, Duration::ZERO));
        assert!(!log.failed(&other, Duration::ZERO));
        assert!(!log.failed(&creds, Duration::ZERO));
        assert!(!log.failed(&creds, Duration::ZERO));
        assert!(log.failed(&creds, Duration::ZERO));
        log.connected();
        assert!(!log.failed(&creds, Duration::ZERO));
    }
}
