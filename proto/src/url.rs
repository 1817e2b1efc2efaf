//! Broker addresses as users write them: `mqtt://host:port` (default port 1883), `tcp://…`, or a
//! bare `host:port`.

use std::fmt;
use std::str::FromStr;

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS (not in v1 yet).
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "broker address {0:?} is invalid: use mqtt://HOST:PORT (for example mqtt://127.0.0.1:1883)"
)]
pub struct BrokerUrlError(pub String);

impl FromStr for BrokerUrl {
    type Err = BrokerUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || BrokerUrlError(s.to_owned());
        let (tls, rest) = if let Some(r) = s
            .strip_prefix("mqtt://")
            .or_else(|| s.strip_prefix("tcp://"))
        {
            (false, r)
        } else if let Some(r) = s
            .strip_prefix("mqtts://")
            .or_else(|| s.strip_prefix("ssl://"))
        {
            (true, r)
        } else if s.contains("://") {
            return Err(err());
        } else {
            (false, s)
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| err())?)
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') || host.contains(' ') || port == 0 {
            return Err(err());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Several brokers in order of preference, as `--broker` takes them: URLs separated by commas
/// (`mqtt://node1:1883,mqtt://node2:1883`). Never empty. A client connects to the first and moves
/// to the next when one is lost (`crate::client::Failover`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerList(Vec<BrokerUrl>);

impl BrokerList {
    /// The list of `urls`; `None` when there are none.
    pub fn new(urls: Vec<BrokerUrl>) -> Option<Self> {
        (!urls.is_empty()).then_some(Self(urls))
    }

    /// The first broker and the rest.
    pub fn split(self) -> (BrokerUrl, Vec<BrokerUrl>) {
        let mut all = self.0.into_iter();
        // Never empty (FromStr and From refuse or build one).
        let first = all.next().unwrap_or_else(|| BrokerUrl {
            host: "127.0.0.1".into(),
            port: 1883,
            tls: false,
        });
        (first, all.collect())
    }

    /// The first broker.
    pub fn first(&self) -> &BrokerUrl {
        &self.0[0]
    }

    pub fn urls(&self) -> &[BrokerUrl] {
        &self.0
    }
}

impl From<BrokerUrl> for BrokerList {
    fn from(u: BrokerUrl) -> Self {
        Self(vec![u])
    }
}

impl FromStr for BrokerList {
    type Err = BrokerUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let urls = s
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<BrokerUrl>, _>>()?;
        if urls.is_empty() {
            return Err(BrokerUrlError(s.to_owned()));
        }
        Ok(Self(urls))
    }
}

impl fmt::Display for BrokerList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&all.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        let l: BrokerList = "mqtt://a:1, mqtts://b ,c:3".parse().unwrap();
        assert_eq!(l.to_string(), "mqtt://a:1,mqtts://b:8883,mqtt://c:3");
        assert_eq!(l.first().host, "a");
        let (first, rest) = l.split();
        assert_eq!((first.port, rest.len()), (1, 2));
        for bad in ["", ",", "mqtt://a:1,http://b"] {
            assert!(bad.parse::<BrokerList>().is_err(), "{bad}");
        }
    }

    #[test]
    fn parses() {
        let u: BrokerUrl = "mqtt://127.0.0.1:1999".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("127.0.0.1", 1999, false));
        let u: BrokerUrl = "broker.lan".parse().unwrap();
        assert_eq!(u.port, 1883);
        let u: BrokerUrl = "mqtts://b".parse().unwrap();
        assert_eq!((u.port, u.tls), (8883, true));
        let u: BrokerUrl = "mqtt://[::1]:1883".parse().unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.to_string(), "mqtt://[::1]:1883");
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://h:99999",
            "mqtt://h:0",
            "mqtt://h:x",
        ] {
            assert!(bad.parse::<BrokerUrl>().is_err(), "{bad}");
        }
    }
}
