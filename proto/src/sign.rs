//! End-to-end signatures (`docs/protocol.md` § Signatures, `docs/security.md`). The broker is not trusted, so:
//! commands from the server are signed with the server's key and verified by agents; what agents
//! publish (status, snapshots, events, replies) is signed with the agent's key and verified by the
//! API. Signatures travel as MQTT 5 user properties, so payloads stay plain JSON.
//!
//! The signed bytes bind the topic, the response topic, the correlation data, the deadline, the
//! signing time and the payload: none can be changed or moved to another agent's topic.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

/// User property holding the hex Ed25519 signature.
pub const SIG_PROPERTY: &str = "zedops-sig";
/// User property holding the signing time (Unix milliseconds).
pub const TS_PROPERTY: &str = "zedops-ts";
/// User property with a request's absolute deadline (Unix milliseconds).
pub const DEADLINE_PROPERTY: &str = "zedops-deadline-ms";

/// What a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub topic: &'a str,
    pub response_topic: Option<&'a str>,
    pub correlation: Option<&'a [u8]>,
    pub deadline_ms: Option<u64>,
    pub ts_ms: u64,
    pub payload: &'a [u8],
    /// On a reply: the signature of the request it answers, so a reply is bound to that one
    /// request — a reply to a forged request with the same response topic and correlation
    /// data does not verify as the reply to the real one (issue 14, item 4).
    pub request_sig: Option<&'a str>,
}

impl<'a> Signed<'a> {
    /// What an agent signs on a publish of its own (state, events, replies) and what the API
    /// checks: no response topic, no deadline.
    pub fn agent_publish(
        topic: &'a str,
        correlation: Option<&'a [u8]>,
        ts_ms: u64,
        payload: &'a [u8],
    ) -> Self {
        Self {
            topic,
            response_topic: None,
            correlation,
            deadline_ms: None,
            ts_ms,
            payload,
            request_sig: None,
        }
    }

    /// What an agent signs on a reply, and what the requester checks: an agent publish that
    /// also covers the signature of the request it answers (`None`: the request was unsigned).
    pub fn reply(
        topic: &'a str,
        correlation: Option<&'a [u8]>,
        ts_ms: u64,
        payload: &'a [u8],
        request_sig: Option<&'a str>,
    ) -> Self {
        Self {
            request_sig,
            ..Self::agent_publish(topic, correlation, ts_ms, payload)
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.payload.len() + 256);
        // A reply bound to its request has a header of its own (domain separation): no bytes
        // signed one way can be read the other way.
        match self.request_sig {
            None => v.extend_from_slice(b"zedops/v1 signature\n"),
            Some(r) => {
                v.extend_from_slice(b"zedops/v1 reply signature\n");
                v.extend_from_slice(r.as_bytes());
                v.push(b'\n');
            }
        }
        v.extend_from_slice(self.topic.as_bytes());
        v.push(b'\n');
        v.extend_from_slice(self.response_topic.unwrap_or("").as_bytes());
        v.push(b'\n');
        v.extend_from_slice(hex(self.correlation.unwrap_or(&[])).as_bytes());
        v.push(b'\n');
        v.extend_from_slice(
            self.deadline_ms
                .map(|d| d.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        v.push(b'\n');
        v.extend_from_slice(self.ts_ms.to_string().as_bytes());
        v.push(b'\n');
        v.extend_from_slice(self.payload);
        v
    }
}

/// The value of the MQTT 5 user property `name` (the first of that name), as zedops reads its
/// own (`zedops-sig`, `zedops-ts`, `zedops-deadline-ms`).
pub fn user_property<'a>(props: &'a [(String, String)], name: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A private signing key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct KeyPair(SigningKey);

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair(public {})", self.public_hex())
    }
}

impl KeyPair {
    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// A new key from 32 random bytes.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The key from its hex seed (as stored in a 0600 file).
    pub fn from_seed_hex(s: &str) -> Option<Self> {
        let b: [u8; 32] = unhex(s.trim())?.try_into().ok()?;
        Some(Self::from_seed(b))
    }

    pub fn seed_hex(&self) -> String {
        hex(&self.0.to_bytes())
    }

    pub fn public_hex(&self) -> String {
        hex(self.0.verifying_key().as_bytes())
    }

    /// Hex signature of `what`.
    pub fn sign(&self, what: &Signed<'_>) -> String {
        hex(&self.0.sign(&what.bytes()).to_bytes())
    }

    /// The MQTT user properties that carry the signature of `what`: [`SIG_PROPERTY`] and
    /// [`TS_PROPERTY`] (the deadline, when signed, travels in its own property).
    pub fn signature_properties(&self, what: &Signed<'_>) -> Vec<(String, String)> {
        vec![
            (SIG_PROPERTY.to_owned(), self.sign(what)),
            (TS_PROPERTY.to_owned(), what.ts_ms.to_string()),
        ]
    }
}

/// A public key that checks signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    pub fn from_hex(s: &str) -> Option<Self> {
        let b: [u8; 32] = unhex(s.trim())?.try_into().ok()?;
        VerifyingKey::from_bytes(&b).ok().map(Self)
    }

    pub fn to_hex(&self) -> String {
        hex(self.0.as_bytes())
    }

    /// A short, collision-resistant name of this key: the first 128 bits of SHA-256 of its
    /// bytes, hex. Enrollment tokens carry the server key's (see [`crate::enrollment`]).
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        hex(&Sha256::digest(self.0.as_bytes())[..16])
    }

    /// True when `sig_hex` is a valid signature of `what` by this key.
    pub fn verify(&self, what: &Signed<'_>, sig_hex: &str) -> bool {
        let Some(bytes) = unhex(sig_hex) else {
            return false;
        };
        let Ok(arr) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        self.0
            .verify(&what.bytes(), &Signature::from_bytes(&arr))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let k = KeyPair::from_seed([7; 32]);
        let p = PublicKey::from_hex(&k.public_hex()).unwrap();
        let msg = Signed {
            topic: "zedops/v1/agents/m/req/container.restart",
            response_topic: Some("zedops/v1/replies/api"),
            correlation: Some(b"42"),
            deadline_ms: Some(1_000),
            ts_ms: 500,
            payload: br#"{"container":"web-1"}"#,
            request_sig: None,
        };
        let sig = k.sign(&msg);
        assert!(p.verify(&msg, &sig));
        // Any field changed breaks it.
        assert!(!p.verify(
            &Signed {
                topic: "zedops/v1/agents/other/req/container.restart",
                ..msg
            },
            &sig
        ));
        assert!(!p.verify(
            &Signed {
                payload: br#"{"container":"web-2"}"#,
                ..msg
            },
            &sig
        ));
        assert!(!p.verify(
            &Signed {
                deadline_ms: Some(9_999),
                ..msg
            },
            &sig
        ));
        assert!(!p.verify(
            &Signed {
                correlation: Some(b"43"),
                ..msg
            },
            &sig
        ));
        assert!(!p.verify(
            &Signed {
                request_sig: Some("ab"),
                ..msg
            },
            &sig
        ));
        let reply = Signed::reply("t", Some(b"1"), 5, b"{}", Some("aa"));
        let rsig = k.sign(&reply);
        assert!(p.verify(&reply, &rsig));
        assert!(!p.verify(&Signed::reply("t", Some(b"1"), 5, b"{}", Some("bb")), &rsig));
        assert!(!p.verify(&Signed::reply("t", Some(b"1"), 5, b"{}", None), &rsig));
        assert!(!p.verify(&msg, "00"));
        assert!(!p.verify(&msg, "zz"));
        let other = KeyPair::from_seed([8; 32]);
        assert!(!p.verify(&msg, &other.sign(&msg)));
        // Seeds round-trip; Debug hides the secret.
        let k2 = KeyPair::from_seed_hex(&k.seed_hex()).unwrap();
        assert_eq!(k2.public_hex(), k.public_hex());
        assert!(!format!("{k:?}").contains(&k.seed_hex()));
    }
}
