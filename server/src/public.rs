//! Where agents on other hosts reach this server (issue 17): the API's public URL and the
//! brokers, from `--public-url` or, without it, from the listeners — the host's name for a
//! listener on every interface, the address itself for one on a specific address. A listener on
//! loopback only is advertised as it is, with a warning: agents elsewhere cannot reach it.

use std::net::SocketAddr;

use zedops_api::advertised::Advertised;
use zedops_proto::BrokerUrl;

/// What the server advertises, and the warnings for the banner and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    pub advertised: Advertised,
    pub warnings: Vec<String>,
}

/// The listeners `zedops serve` ended up with.
#[derive(Debug, Clone, Copy)]
pub struct Listeners {
    pub http: SocketAddr,
    /// The embedded broker's MQTT 5 listener; `None` with an external broker.
    pub mqtt: Option<SocketAddr>,
    pub tls: bool,
}

/// A `--public-url` that is not `http(s)://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--public-url {0:?} is invalid: use http://HOST:PORT or https://HOST:PORT (no path)")]
pub struct InvalidPublicUrl(pub String);

/// The host and port of an `http(s)://host[:port]` URL (brackets kept off IPv6 hosts).
pub fn parse_public_url(url: &str) -> Result<(String, Option<u16>, bool), InvalidPublicUrl> {
    let bad = || InvalidPublicUrl(url.to_owned());
    let (tls, rest) = match url.split_once("://") {
        Some(("https", r)) => (true, r),
        Some(("http", r)) => (false, r),
        _ => return Err(bad()),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
            (h, Some(p.parse::<u16>().map_err(|_| bad())?))
        }
        _ => (rest, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port, tls))
}

/// The public addresses for these listeners; `public_url` wins for the API and names the host of
/// the embedded broker. `external` is the `--broker` list the server uses (empty: the embedded
/// broker), advertised as it is.
pub fn public(
    l: Listeners,
    public_url: Option<&str>,
    external: &[BrokerUrl],
    hostname: &str,
) -> Result<Public, InvalidPublicUrl> {
    let mut warnings = Vec::new();
    let scheme = if l.tls { "https" } else { "http" };
    let (url, host) = match public_url {
        Some(u) => {
            let (host, _, _) = parse_public_url(u)?;
            (u.trim_end_matches('/').to_owned(), host)
        }
        None => {
            let host = host_for(l.http, hostname);
            if l.http.ip().is_loopback() {
                warnings.push(format!(
                    "the API listens on loopback only ({}): agents on other hosts cannot enroll. Listen on every interface (--listen 0.0.0.0:{}) or name the address they use (--public-url)",
                    l.http,
                    l.http.port()
                ));
            }
            (
                format!("{scheme}://{}:{}", bracket(&host), l.http.port()),
                host,
            )
        }
    };
    let brokers = match (external, l.mqtt) {
        ([_, ..], _) => {
            for b in external.iter().filter(|b| is_loopback_host(&b.host)) {
                warnings.push(format!(
                    "the broker {b} is on loopback: agents on other hosts cannot reach it"
                ));
            }
            external.to_vec()
        }
        ([], Some(m)) => {
            let host = if m.ip().is_unspecified() {
                host.clone()
            } else {
                m.ip().to_string()
            };
            if m.ip().is_loopback() {
                warnings.push(format!(
                    "the MQTT listener is on loopback only ({m}): agents on other hosts cannot connect (--mqtt-listen 0.0.0.0:{})",
                    m.port()
                ));
            }
            vec![BrokerUrl {
                host,
                port: m.port(),
                tls: l.tls,
            }]
        }
        ([], None) => Vec::new(),
    };
    Ok(Public {
        advertised: Advertised {
            server_url: Some(url),
            brokers,
        },
        warnings,
    })
}

/// The host agents use for a listener: the host's name when it listens on every interface.
fn host_for(addr: SocketAddr, hostname: &str) -> String {
    if addr.ip().is_unspecified() && !hostname.is_empty() {
        hostname.to_owned()
    } else if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners(http: &str, mqtt: Option<&str>, tls: bool) -> Listeners {
        Listeners {
            http: http.parse().unwrap(),
            mqtt: mqtt.map(|m| m.parse().unwrap()),
            tls,
        }
    }

    #[test]
    fn every_interface_is_the_host_name_and_the_real_ports() {
        let p = public(
            listeners("0.0.0.0:18420", Some("0.0.0.0:18883"), false),
            None,
            &[],
            "nas",
        )
        .unwrap();
        assert_eq!(p.advertised.server_url.as_deref(), Some("http://nas:18420"));
        assert_eq!(p.advertised.brokers[0].to_string(), "mqtt://nas:18883");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn loopback_is_advertised_with_a_warning() {
        let p = public(
            listeners("127.0.0.1:8420", Some("0.0.0.0:1883"), false),
            None,
            &[],
            "nas",
        )
        .unwrap();
        assert_eq!(
            p.advertised.server_url.as_deref(),
            Some("http://127.0.0.1:8420")
        );
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("--public-url"));
    }

    #[test]
    fn a_public_url_names_the_host_of_both_and_tls_shows() {
        let l = listeners("0.0.0.0:8420", Some("0.0.0.0:1883"), true);
        let p = public(l, Some("https://zedops.example.org:443/"), &[], "nas").unwrap();
        assert_eq!(
            p.advertised.server_url.as_deref(),
            Some("https://zedops.example.org:443")
        );
        assert_eq!(
            p.advertised.brokers[0].to_string(),
            "mqtts://zedops.example.org:1883"
        );
        let specific = public(
            listeners("10.0.0.5:8420", Some("10.0.0.5:1999"), false),
            None,
            &[],
            "nas",
        )
        .unwrap();
        assert_eq!(
            specific.advertised.brokers[0].to_string(),
            "mqtt://10.0.0.5:1999"
        );
    }

    #[test]
    fn an_external_broker_is_advertised_as_it_is() {
        let b: BrokerUrl = "mqtt://127.0.0.1:1883".parse().unwrap();
        let p = public(
            listeners("0.0.0.0:8420", None, false),
            None,
            std::slice::from_ref(&b),
            "nas",
        )
        .unwrap();
        assert_eq!(p.advertised.brokers, vec![b]);
        assert!(p.warnings[0].contains("loopback"));
    }

    #[test]
    fn public_urls_are_checked() {
        for bad in [
            "ftp://x",
            "http://",
            "http://x/path",
            "x:80",
            "http://h:99999",
            "http://u@h",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_public_url("http://[::1]:8420").unwrap(),
            ("::1".into(), Some(8420), false)
        );
    }
}
