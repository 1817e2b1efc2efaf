//! The spec's name patterns are the rules the API enforces: poem-openapi's attributes take only
//! literals, so this checks each literal against the pattern constants of `zedops_proto::names`
//! (whose own tests check them against the validators).

use serde_json::Value;
use zedops_proto::names::{AGENT_NAME_PATTERN, CONTAINER_REF_PATTERN, MQTT_USER_PATTERN};

#[test]
fn every_name_in_the_spec_carries_the_pattern_of_its_rule() -> Result<(), serde_json::Error> {
    let spec: Value = serde_json::from_str(&zedops_api::openapi_json())?;
    let mut seen = 0;
    for (path, item) in spec["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let want = match (p["in"].as_str(), p["name"].as_str()) {
                    (Some("path"), Some("agent" | "name")) => AGENT_NAME_PATTERN,
                    (Some("path"), Some("container")) => CONTAINER_REF_PATTERN,
                    _ => continue,
                };
                assert_eq!(
                    p["schema"]["pattern"], want,
                    "{method} {path} {}",
                    p["name"]
                );
                seen += 1;
            }
        }
    }
    assert!(seen >= 11, "only {seen} name parameters found");
    let schemas = &spec["components"]["schemas"];
    for (schema, want) in [
        ("NewToken", AGENT_NAME_PATTERN),
        ("NewAgent", AGENT_NAME_PATTERN),
        ("EnrollRequest", AGENT_NAME_PATTERN),
        ("NewMqttUser", MQTT_USER_PATTERN),
    ] {
        let got = &schemas[schema]["properties"]["name"]["pattern"];
        assert_eq!(got, want, "{schema}.name");
    }
    Ok(())
}
