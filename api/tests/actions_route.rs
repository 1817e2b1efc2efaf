//! `GET /api/v1/container-actions` serves the action table every surface is driven by.

#![allow(clippy::expect_used)]

use poem::test::TestClient;

#[tokio::test]
async fn the_actions_route_serves_the_table() {
    let cfg = zedops_api::MqttConfig {
        broker: "mqtt://127.0.0.1:9".parse().expect("url"),
        credentials: None,
        client_id: None,
        fallback_brokers: Vec::new(),
        tls: Default::default(),
    };
    let api = zedops_api::Api::connect(cfg, None);
    let cli = TestClient::new(api.app());
    let r = cli.get("/api/v1/container-actions").send().await;
    r.assert_status_is_ok();
    let v: serde_json::Value =
        serde_json::from_str(&r.0.into_body().into_string().await.expect("body")).expect("json");
    let rows = v.as_array().expect("a list");
    assert_eq!(rows.len(), zedops_proto::ACTIONS.len());
    for (row, spec) in rows.iter().zip(zedops_proto::ACTIONS.iter()) {
        assert_eq!(row["name"], spec.action.as_str());
        assert_eq!(row["op"], spec.op);
        assert_eq!(row["danger"], spec.danger);
        let states: Vec<&str> = row["applies_to"]
            .as_array()
            .expect("states")
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        assert_eq!(states.len(), spec.applies_to.len(), "{row}");
    }
}
