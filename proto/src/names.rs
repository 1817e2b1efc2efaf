//! Names that cross process boundaries: agent names and container references.
//!
//! Agent names become MQTT topic levels and client ids, so they are restricted to
//! `^[a-z0-9][a-z0-9_-]{0,62}$`. Container references are what a user types: a Docker name (with or
//! without its leading `/`) or an ID prefix of at least 4 hex digits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The rules of names as JSON Schema patterns, for the OpenAPI spec (`zedops-api` writes the same
/// strings in its parameter attributes, which take only literals; a test there checks the spec
/// against these). Each matches exactly what its validator below accepts.
pub const AGENT_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";
/// A container reference: a Docker name with or without its leading `/`, or an ID prefix.
pub const CONTAINER_REF_PATTERN: &str = "^/?[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$";
/// An MQTT user's name: an agent name that does not start with `zedops` (the prefix of the
/// broker identities, `crate::identity`). Spelled without look-ahead, which Rust's `regex` lacks;
/// at most 63 characters is a separate `maxLength`.
pub const MQTT_USER_PATTERN: &str = "^(?:[a-y0-9]|z(?:$|[a-df-z0-9_-]|e(?:$|[a-ce-z0-9_-]|d(?:$|[a-np-z0-9_-]|o(?:$|[a-oq-z0-9_-]|p(?:$|[a-rt-z0-9_-]))))))[a-z0-9_-]*$";

/// True when `name` may name an MQTT user of an integration ([`MQTT_USER_PATTERN`]).
pub fn is_valid_mqtt_user(name: &str) -> bool {
    is_valid_agent_name(name) && !name.starts_with("zedops")
}

/// Why a name was refused; the message tells the user what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("agent name {0:?} is invalid: use 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit")]
    Agent(String),
    #[error("container reference {0:?} is invalid: use a Docker container name (letters, digits, '_', '.', '-') or an ID prefix of at least 4 hex digits")]
    Container(String),
}

/// A validated agent name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentName(String);

impl AgentName {
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if is_valid_agent_name(&name) {
            Ok(Self(name))
        } else {
            Err(NameError::Agent(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An agent name made from a host name: lower-cased, other characters as `-`, leading `-`
    /// and `_` dropped, at most 63 characters; `local` when nothing is left.
    pub fn from_hostname(host: &str) -> Self {
        let cleaned: String = host
            .trim()
            .to_ascii_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(63)
            .collect();
        let cleaned = cleaned.trim_start_matches(['-', '_']);
        Self::new(cleaned).unwrap_or_else(|_| Self("local".to_owned()))
    }
}

/// True when `name` matches `^[a-z0-9][a-z0-9_-]{0,62}$`.
pub fn is_valid_agent_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

impl TryFrom<String> for AgentName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<AgentName> for String {
    fn from(value: AgentName) -> Self {
        value.0
    }
}

impl FromStr for AgentName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AgentName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A validated container reference: a name or an ID prefix. Resolution (and the ambiguity check)
/// happens on the agent, which is the only part that knows the containers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerRef(String);

impl ContainerRef {
    pub fn new(reference: impl Into<String>) -> Result<Self, NameError> {
        let reference = reference.into();
        let trimmed = reference.strip_prefix('/').unwrap_or(&reference);
        if is_valid_container_name(trimmed) {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err(NameError::Container(reference))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the reference could be an ID prefix (4 to 64 lowercase hex digits).
    pub fn could_be_id(&self) -> bool {
        (4..=64).contains(&self.0.len()) && self.0.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

/// Docker's own rule for names, `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, bounded in length. A single
/// character is accepted too, since the reference may be meant as a (too short) name.
pub fn is_valid_container_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl TryFrom<String> for ContainerRef {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<ContainerRef> for String {
    fn from(value: ContainerRef) -> Self {
        value.0
    }
}

impl FromStr for ContainerRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for ContainerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_from_host_names() {
        assert_eq!(
            AgentName::from_hostname("Maestro.lan\n").as_str(),
            "maestro-lan"
        );
        assert_eq!(AgentName::from_hostname("_-x").as_str(), "x");
        assert_eq!(AgentName::from_hostname("").as_str(), "local");
        assert_eq!(AgentName::from_hostname(&"a".repeat(99)).as_str().len(), 63);
    }

    #[test]
    fn agent_names() {
        for ok in ["maestro", "a", "web-1", "host_2", "0abc", &"a".repeat(63)] {
            assert!(AgentName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Maestro",
            "-x",
            "_x",
            "a/b",
            "a+b",
            "a#",
            "a b",
            "é",
            &"a".repeat(64),
        ] {
            let err = AgentName::new(bad).unwrap_err();
            assert!(err.to_string().contains("1-63 characters"), "{err}");
        }
    }

    #[test]
    fn agent_name_serde_rejects_bad() {
        assert!(serde_json::from_str::<AgentName>("\"ok-name\"").is_ok());
        let err = serde_json::from_str::<AgentName>("\"Bad/Name\"").unwrap_err();
        assert!(err.to_string().contains("invalid"));
    }

    #[test]
    fn container_refs() {
        assert_eq!(ContainerRef::new("/web-1").unwrap().as_str(), "web-1");
        assert!(ContainerRef::new("my.app_2").is_ok());
        assert!(ContainerRef::new("abcd").unwrap().could_be_id());
        assert!(!ContainerRef::new("abc").unwrap().could_be_id());
        assert!(!ContainerRef::new("web-1").unwrap().could_be_id());
        for bad in [
            "",
            "/",
            "a/b",
            "web+1",
            "web#",
            "-web",
            "a b",
            &"a".repeat(129),
        ] {
            assert!(ContainerRef::new(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod pattern_tests {
    use proptest::prelude::*;

    use super::*;

    fn matches(pattern: &str, s: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(s)
    }

    /// Strings near the rules' edges: the allowed characters and a few that are not, up to just
    /// past the length bounds, with the `zedops` prefix often.
    fn near_names() -> impl Strategy<Value = String> {
        let body = proptest::string::string_regex("[a-zA-Z0-9_.\\-/!é]{0,130}").unwrap();
        (any::<bool>(), body).prop_map(|(z, b)| if z { format!("zedops{b}") } else { b })
    }

    proptest! {
        #[test]
        fn patterns_accept_what_the_validators_accept(s in near_names()) {
            prop_assert_eq!(matches(AGENT_NAME_PATTERN, &s), is_valid_agent_name(&s), "{:?}", s);
            prop_assert_eq!(matches(CONTAINER_REF_PATTERN, &s), ContainerRef::new(s.clone()).is_ok(), "{:?}", s);
            let mqtt = matches(MQTT_USER_PATTERN, &s) && s.len() <= 63;
            prop_assert_eq!(mqtt, is_valid_mqtt_user(&s), "{:?}", s);
        }
    }

    #[test]
    fn the_zedops_prefix_edges() {
        for ok in [
            "z", "ze", "zed", "zedo", "zedop", "zedox", "zz", "zedopt", "a-zedops", "ha",
        ] {
            assert!(
                matches(MQTT_USER_PATTERN, ok) && is_valid_mqtt_user(ok),
                "{ok}"
            );
        }
        for bad in ["zedops", "zedops-x", "zedopsagent", "-a", "", "Ha"] {
            assert!(
                !matches(MQTT_USER_PATTERN, bad) && !is_valid_mqtt_user(bad),
                "{bad}"
            );
        }
    }
}
