//! The agent inside `zedops serve`: with security on it enrolls itself through the same one-time
//! token path as any agent (register, enroll with a fresh key), then runs on the API's broker.

use zedops_agent::{AgentConfig, DockerTarget, Signing};
use zedops_api::security::Security;
use zedops_api::store::Store;
use zedops_proto::BrokerUrl;

use crate::config::LocalAgent;
use crate::ServerError;

/// The local agent's configuration, enrolled when `secured` holds the store and the server key.
pub async fn config(
    local: &LocalAgent,
    broker: BrokerUrl,
    data_dir: &std::path::Path,
    secured: Option<(&Store, &Security)>,
) -> Result<AgentConfig, ServerError> {
    let name = local.name.clone();
    let mut cfg = AgentConfig::new(name.clone(), broker);
    cfg.state_dir = Some(data_dir.join("local-agent"));
    if let Some((store, sec)) = secured {
        let key = zedops_proto::client::new_keypair();
        let fingerprint = sec.key.public().fingerprint();
        let ttl = chrono::Duration::minutes(5);
        let (token, _) = store
            .register_agent(name.as_str(), ttl, Some(&fingerprint))
            .await?;
        let creds = store
            .enroll(name.as_str(), &token, &key.public_hex())
            .await?;
        sec.forget(name.as_str());
        cfg.credentials = Some((creds.mqtt_username, creds.mqtt_password));
        cfg.signing = Some(Signing {
            key,
            server: sec.key.public(),
        });
    }
    cfg.docker = DockerTarget {
        host: local.docker_host.clone(),
    };
    cfg.ha = local.ha.clone();
    cfg.action_files = local.actions.clone();
    cfg.stats_interval = local.stats_interval;
    Ok(cfg)
}
