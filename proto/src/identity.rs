//! Who is who on the broker: the MQTT client ids and the internal username that the embedded
//! broker's authentication relies on (`docs/security.md` § "Broker authentication"). Spelled once,
//! here; everything else asks these functions.

/// Every agent connects as `zedops-agent-<name>`, and an enrolled agent only with its own name.
pub const AGENT_CLIENT_PREFIX: &str = "zedops-agent-";
/// Every API instance connects as `zedops-api-<16 hex digits>`, its own reply topic's name.
pub const API_CLIENT_PREFIX: &str = "zedops-api-";
/// The username of the API inside `zedops serve` (its password is random per process).
pub const INTERNAL_USER: &str = "zedops-api";

/// The client id of agent `name`.
pub fn agent_client_id(name: &str) -> String {
    format!("{AGENT_CLIENT_PREFIX}{name}")
}

/// A client id for an API instance, from 64 random bits.
pub fn api_client_id(random: u64) -> String {
    format!("{API_CLIENT_PREFIX}{random:016x}")
}

/// Whether `client_id` claims to be an agent.
pub fn claims_agent(client_id: &str) -> bool {
    client_id.starts_with(AGENT_CLIENT_PREFIX)
}

/// Whether `client_id` claims to be an API instance (or the internal user's name itself).
pub fn claims_api(client_id: &str) -> bool {
    client_id.starts_with(INTERNAL_USER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_claims_agree() {
        assert_eq!(agent_client_id("maestro"), "zedops-agent-maestro");
        assert!(claims_agent(&agent_client_id("x")));
        let api = api_client_id(255);
        assert_eq!(api, "zedops-api-00000000000000ff");
        assert!(claims_api(&api) && api.starts_with(API_CLIENT_PREFIX));
        assert!(!claims_api("zedops-agent-a") && !claims_agent(&api));
    }
}
