//! What every zedops MQTT client (the agent, the API) sets up the same way (feature `client`).

/// The system's CA bundle on Debian-like hosts, used when no `--ca-file` is given.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why TLS to the broker cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the system CA bundle {SYSTEM_CA_BUNDLE} ({0}); pass --ca-file")]
    SystemBundle(#[source] std::io::Error),
}

/// How a client proves who the broker is, and optionally who the client is.
#[derive(Clone, Default)]
pub struct TlsSettings {
    /// The CA (PEM) to trust; `None`: the system's roots.
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain and its private key (PEM), for brokers that ask for one.
    pub client_auth: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field(
                "client_auth",
                &self.client_auth.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The TLS transport for `mqtts://` brokers: the given CA (PEM), else the system's roots; with a
/// client certificate when one is given.
pub fn tls_transport(tls: &TlsSettings) -> Result<rumqttc::Transport, TlsError> {
    let ca = match &tls.ca {
        Some(c) => c.clone(),
        None => std::fs::read(SYSTEM_CA_BUNDLE).map_err(TlsError::SystemBundle)?,
    };
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth: tls.client_auth.clone(),
        },
    ))
}

/// How a zedops MQTT 5 client connects: everything [`mqtt_options`] needs.
pub struct Connect<'a> {
    pub client_id: String,
    pub broker: &'a crate::BrokerUrl,
    pub credentials: Option<(String, String)>,
    pub keep_alive: std::time::Duration,
    /// Seconds for the whole handshake: TCP connect, TLS, CONNECT → CONNACK
    /// ([`crate::failover::Failover::connect_timeout_s`]).
    pub connect_timeout_s: u64,
}

/// The MQTT 5 options every zedops client uses: clean start, the zedops packet limit, a bounded
/// outgoing in-flight table, `TCP_NODELAY` (requests and replies are QoS 0 and small: Nagle and
/// delayed ACK would cost ~40 ms each, `docs/protocol.md`) and credentials. TLS is
/// [`set_tls`].
pub fn mqtt_options(c: Connect<'_>) -> rumqttc::v5::MqttOptions {
    let mut opts = rumqttc::v5::MqttOptions::new(c.client_id, c.broker.host.clone(), c.broker.port);
    opts.set_keep_alive(c.keep_alive);
    opts.set_clean_start(true);
    opts.set_max_packet_size(Some(crate::MAX_PACKET_BYTES as u32));
    opts.set_outgoing_inflight_upper_limit(crate::MQTT_OUTGOING_INFLIGHT);
    if let Some((u, p)) = c.credentials {
        opts.set_credentials(u, p);
    }
    // rumqttc 0.25's MQTT 5 event loop bounds the handshake with the options' own timeout
    // (5 s unless set) and never reads the network options' one: set both.
    opts.set_connection_timeout(c.connect_timeout_s);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(c.connect_timeout_s);
    opts.set_network_options(net);
    opts
}

/// For an `mqtts://` broker, TLS as `tls` says; nothing otherwise.
pub fn set_tls(
    opts: &mut rumqttc::v5::MqttOptions,
    broker: &crate::BrokerUrl,
    tls: &TlsSettings,
) -> Result<(), TlsError> {
    if broker.tls {
        opts.set_transport(tls_transport(tls)?);
    }
    Ok(())
}

/// Capped exponential backoff with ±25 % jitter, for reconnecting.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: std::time::Duration,
    min: std::time::Duration,
    max: std::time::Duration,
}

impl Backoff {
    pub fn new(min: std::time::Duration, max: std::time::Duration) -> Self {
        Self {
            next: min,
            min,
            max,
        }
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The shortest delay (`min`, jittered), leaving the sequence where it is.
    pub fn shortest(&self) -> std::time::Duration {
        self.min.mul_f64(rand::random_range(0.75..1.25))
    }

    /// The next delay with full jitter: uniform between `min` and the base (which doubles up to
    /// `max` with each call, as in [`Backoff::next_delay`]), or `cap` when the base is above it
    /// (the base doubles on all the same). Half the mean wait of `next_delay`, and a herd spread
    /// over the whole interval rather than ±25 % of it.
    pub fn next_full_jitter(&mut self, cap: Option<std::time::Duration>) -> std::time::Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let base = cap.map_or(base, |c| base.min(c));
        base.mul_f64(rand::random_range(0.0..1.0)).max(self.min)
    }

    /// The next delay; each call doubles the base up to `max`.
    pub fn next_delay(&mut self) -> std::time::Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(rand::random_range(0.75..1.25))
    }
}

/// A new random signing key (an agent's at enrollment, the server's on its first start).
pub fn new_keypair() -> crate::sign::KeyPair {
    crate::sign::KeyPair::from_seed(rand::random::<[u8; 32]>())
}

/// This host's name (`/proc/sys/kernel/hostname`, else `/etc/hostname`), or `None`.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let d: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        for (got, base) in d.iter().zip([100u64, 200, 400, 400, 400]) {
            let base = Duration::from_millis(base);
            assert!(
                *got >= base.mul_f64(0.75) && *got <= base.mul_f64(1.25),
                "{got:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }

    #[test]
    fn full_jitter_spreads_between_the_minimum_and_the_doubling_base() {
        let min = Duration::from_millis(100);
        let waits: Vec<Duration> = (0..200)
            .map(|_| {
                let mut b = Backoff::new(min, Duration::from_secs(10));
                (0..4).map(|_| b.next_full_jitter(None)).last().unwrap()
            })
            .collect();
        let (lo, hi) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
        assert!(
            *lo >= min && *hi <= Duration::from_millis(800),
            "{lo:?}..{hi:?}"
        );
        assert!(
            *hi - *lo > Duration::from_millis(400),
            "not spread: {lo:?}..{hi:?}"
        );
    }
}
