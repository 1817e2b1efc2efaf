//! Enrollment tokens: `zde_<agent>_<secret>_<fingerprint>`. The secret is 48 hex digits, used
//! once; the fingerprint ([`PublicKey::fingerprint`](crate::sign::PublicKey::fingerprint), 32 hex
//! digits) names the server's signing key, so an agent enrolling over an unauthenticated channel
//! (plain `http://`) can tell that the key in the server's answer is the key of the server that
//! issued the token — a man in the middle who substitutes his own is refused (issue 14, item 7).
//! Tokens of servers before the fingerprint (`zde_<agent>_<secret>`) still parse, without one.

/// A parsed enrollment token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    pub agent: &'a str,
    pub secret: &'a str,
    pub fingerprint: Option<&'a str>,
}

/// Hex digits of a token's secret.
pub const SECRET_HEX: usize = 48;
/// Hex digits of a key fingerprint.
pub const FINGERPRINT_HEX: usize = 32;

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A digest of a token (hex, 32 digits) an agent keeps to recognise the token it enrolled with:
/// the same `--enroll TOKEN` again (a container restarted with its command) is no new enrollment.
pub fn digest(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The token for `agent` with `secret`, naming the server key `fingerprint`.
pub fn token(agent: &str, secret: &str, fingerprint: Option<&str>) -> String {
    match fingerprint {
        Some(f) => format!("zde_{agent}_{secret}_{f}"),
        None => format!("zde_{agent}_{secret}"),
    }
}

/// Parses a token presented for `agent`; `None` when it is not one.
pub fn parse<'a>(agent: &str, token: &'a str) -> Option<Token<'a>> {
    let rest = token.strip_prefix("zde_")?;
    let rest = rest.strip_prefix(agent)?.strip_prefix('_')?;
    let agent = &token[4..4 + agent.len()];
    let (secret, fingerprint) = match rest.split_once('_') {
        Some((s, f)) if is_hex(f, FINGERPRINT_HEX) => (s, Some(f)),
        Some(_) => return None,
        None => (rest, None),
    };
    is_hex(secret, SECRET_HEX).then_some(Token {
        agent,
        secret,
        fingerprint,
    })
}

/// The agent name a token is for (`zde_<agent>_…`), as far as the token says.
pub fn agent_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("zde_")?;
    fn tail(s: &str, len: usize) -> Option<&str> {
        let (head, t) = s.rsplit_once('_')?;
        is_hex(t, len).then_some(head)
    }
    let without_fp = tail(rest, FINGERPRINT_HEX).and_then(|h| tail(h, SECRET_HEX));
    without_fp
        .or_else(|| tail(rest, SECRET_HEX))
        .filter(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_fingerprint() {
        let secret = "ab".repeat(24);
        let fp = "cd".repeat(16);
        let t = token("web_1-a", &secret, Some(&fp));
        let p = parse("web_1-a", &t).unwrap_or_else(|| panic!("{t}"));
        assert_eq!(
            (p.secret, p.fingerprint),
            (secret.as_str(), Some(fp.as_str()))
        );
        assert_eq!(agent_of(&t), Some("web_1-a"));
        let old = token("m", &secret, None);
        assert_eq!(parse("m", &old).map(|p| p.fingerprint), Some(None));
        assert_eq!(agent_of(&old), Some("m"));
        assert!(parse("other", &t).is_none());
        assert!(parse("m", "zde_m_short").is_none());
        assert!(parse("m", &format!("zde_m_{secret}_nothex")).is_none());
    }
}
