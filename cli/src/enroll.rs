//! Agent credentials: enrollment against the server (`zedops agent --enroll`), the credentials
//! file in the agent's state dir (0600), and the local agent of `zedops serve --local-agent`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use zedops_agent::Signing;
use zedops_proto::sign::{KeyPair, PublicKey};

use crate::exit::{self, Exit};

/// What an enrolled agent keeps. Never logged.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub name: String,
    pub server: String,
    pub mqtt_username: String,
    pub mqtt_password: String,
    /// Hex seed of the agent's Ed25519 key.
    pub agent_key: String,
    pub server_public_key: String,
    /// The brokers the server named at enrollment, in order (none from older servers).
    #[serde(default)]
    pub brokers: Vec<String>,
    /// `zedops_proto::enrollment::digest` of the token these credentials came from.
    #[serde(default)]
    pub enrolled_with: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("mqtt_username", &self.mqtt_username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn file(state_dir: &Path) -> PathBuf {
        state_dir.join("credentials.json")
    }

    pub fn load(state_dir: &Path) -> anyhow::Result<Option<Self>> {
        let f = Self::file(state_dir);
        match std::fs::read_to_string(&f) {
            Ok(s) => Ok(Some(serde_json::from_str(&s).with_context(|| {
                format!(
                    "{} is damaged: enroll again with `zedops agent --enroll TOKEN`",
                    f.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", f.display())),
        }
    }

    pub fn save(&self, state_dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let f = Self::file(state_dir);
        crate::paths::write_secret(&f, &serde_json::to_string_pretty(self)?)?;
        Ok(f)
    }

    pub fn signing(&self) -> anyhow::Result<Signing> {
        Ok(Signing {
            key: KeyPair::from_seed_hex(&self.agent_key)
                .context("the agent key in the credentials file is damaged")?,
            server: PublicKey::from_hex(&self.server_public_key)
                .context("the server key in the credentials file is damaged")?,
        })
    }
}

/// The agent's credentials: enrolled now with `--enroll`, or those saved in `state_dir`. The token
/// the saved credentials came from is no new enrollment: a container restarted with its
/// `docker run` command (`--enroll` included) starts the enrolled agent again.
pub async fn credentials(
    a: &crate::args::AgentArgs,
    client: &crate::args::ClientOpts,
    state_dir: &Path,
) -> anyhow::Result<Option<Credentials>> {
    let saved = Credentials::load(state_dir)?;
    let Some(token) = &a.enroll else {
        return Ok(saved);
    };
    let digest = zedops_proto::enrollment::digest(token);
    if saved.as_ref().and_then(|c| c.enrolled_with.as_deref()) == Some(digest.as_str()) {
        tracing::info!("already enrolled with this token; starting with the saved credentials");
        return Ok(saved);
    }
    let Some(server) = client.server.clone() else {
        return Err(Exit::usage(
            "--enroll needs --server URL (the zedops server that issued the token)",
        )
        .into());
    };
    let name = match (&a.name, zedops_proto::enrollment::agent_of(token)) {
        (Some(n), _) => n.to_string(),
        (None, Some(n)) => n.to_owned(),
        (None, None) => return Err(Exit::usage("--enroll needs --name NAME").into()),
    };
    let creds = enroll(&server, &name, token, state_dir, client.ca_file.as_deref()).await?;
    Ok(Some(creds))
}

/// Presents the one-time token to the server and stores the permanent credentials.
pub async fn enroll(
    server: &str,
    name: &str,
    token: &str,
    state_dir: &Path,
    ca_file: Option<&Path>,
) -> anyhow::Result<Credentials> {
    let key = zedops_proto::client::new_keypair();
    let req = zedops_proto::http::EnrollRequest {
        name: name.to_owned(),
        token: token.to_owned(),
        public_key: key.public_hex(),
    };
    let answer = zedops_client::Client::new(server, None, ca_file)?
        .enroll(&req)
        .await
        .context("enrolling")?;
    check_server_key(server, name, token, &answer.server_public_key)?;
    let creds = Credentials {
        name: name.to_owned(),
        server: server.to_owned(),
        mqtt_username: answer.mqtt_username,
        mqtt_password: answer.mqtt_password,
        agent_key: key.seed_hex(),
        server_public_key: answer.server_public_key,
        brokers: answer.brokers,
        enrolled_with: Some(zedops_proto::enrollment::digest(token)),
    };
    let file = creds.save(state_dir)?;
    println!(
        "Enrolled as agent {name}; credentials saved in {} (mode 0600). The token is used up.",
        file.display()
    );
    Ok(creds)
}

/// The server key in the enrollment answer must be the one the token names: over plain
/// `http://` anyone in the middle could otherwise hand the agent a key of their own and sign
/// its commands for good (issue 14, item 7).
fn check_server_key(server: &str, name: &str, token: &str, key_hex: &str) -> anyhow::Result<()> {
    let key = zedops_proto::sign::PublicKey::from_hex(key_hex)
        .context("the server's enrollment answer has no valid public key")?;
    let expected = zedops_proto::enrollment::parse(name, token).and_then(|t| t.fingerprint);
    match expected {
        Some(fp) if fp.eq_ignore_ascii_case(&key.fingerprint()) => Ok(()),
        Some(fp) => Err(Exit::new(
            exit::AUTH,
            format!(
                "the server at {server} answered with a signing key (fingerprint {}) that is not the one this enrollment token names ({fp}): something between this host and the server may be intercepting. Nothing was saved; enroll over https:// or check --server",
                key.fingerprint()
            ),
        )
        .into()),
        None => {
            tracing::warn!(%server, "this enrollment token names no server key (an older server): the key in the answer is trusted as it is");
            Ok(())
        }
    }
}

impl Credentials {
    /// The brokers to use without `--broker`: those the server named at enrollment, in order,
    /// else (credentials of an older server) its host on port 1883.
    pub fn brokers(&self) -> Option<zedops_proto::BrokerList> {
        let named = self.brokers.iter().filter_map(|b| b.parse().ok()).collect();
        zedops_proto::BrokerList::new(named)
            .or_else(|| broker_from_server(&self.server).map(Into::into))
    }
}

/// The broker of credentials that name none: the server's host, port 1883.
pub fn broker_from_server(server: &str) -> Option<zedops_proto::BrokerUrl> {
    let rest = server.split("://").nth(1)?;
    let hostport = rest.split('/').next()?;
    let host = if let Some(h) = hostport.strip_prefix('[') {
        h.split(']').next()?.to_owned()
    } else {
        hostport
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(hostport)
            .to_owned()
    };
    Some(zedops_proto::BrokerUrl {
        host,
        port: 1883,
        tls: server.starts_with("https://"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_derivation() {
        assert_eq!(
            broker_from_server("http://server.lan:8420").unwrap().host,
            "server.lan"
        );
        assert_eq!(broker_from_server("http://[::1]:8420").unwrap().host, "::1");
        assert!(broker_from_server("https://s").unwrap().tls);
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let c = Credentials {
            name: "m".into(),
            server: "http://s".into(),
            mqtt_username: "m".into(),
            mqtt_password: "supersecret".into(),
            agent_key: "00".repeat(32),
            server_public_key: "ab".into(),
            brokers: vec!["mqtts://s:18883".into()],
            enrolled_with: None,
        };
        assert_eq!(c.brokers().unwrap().to_string(), "mqtts://s:18883");
        let d = format!("{c:?}");
        assert!(!d.contains("supersecret") && !d.contains(&"00".repeat(32)));
    }
}
