//! A database that fails is a server fault (`500 internal`), never the caller's (`400`): issue
//! 15's first hidden bug. The store runs on a real SQLite database that refuses every write once
//! the test turns its failure on (triggers that raise, as a full or failing disk makes writes
//! fail), under the real HTTP application.

#![allow(clippy::expect_used)]

use std::sync::Arc;

use poem::test::TestClient;
use serde_json::json;
use zedops_api::auth::Role;
use zedops_api::store::Store;

/// From now on every insert into these tables fails inside the database.
async fn fail_writes(store: &Store) {
    for table in ["agents", "mqtt_users", "tokens", "audit"] {
        let sql = format!(
            "CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} BEGIN SELECT RAISE(FAIL, 'disk I/O error (simulated)'); END"
        );
        sqlx::query(&sql)
            .execute(store.pool())
            .await
            .expect("trigger");
    }
}

#[tokio::test]
async fn database_failures_answer_500_internal() {
    let dir = std::env::temp_dir().join(format!("zedops-failing-{}", std::process::id()));
    let store = Arc::new(Store::open(None, &dir).await.expect("store"));
    let admin = store
        .create_token("admin", Role::Admin)
        .await
        .expect("token");
    let cfg = zedops_api::MqttConfig {
        broker: "mqtt://127.0.0.1:9".parse().expect("url"),
        credentials: None,
        client_id: None,
        fallback_brokers: Vec::new(),
        tls: Default::default(),
    };
    let api = zedops_api::Api::connect(cfg, Some(store.clone()));
    let cli = TestClient::new(api.app());
    let auth = format!("Bearer {admin}");

    // Healthy: a bad name is the caller's fault.
    let r = cli
        .post("/api/v1/agents")
        .header("authorization", &auth)
        .body_json(&json!({"name": "Not A Name"}))
        .send()
        .await;
    r.assert_status(poem::http::StatusCode::BAD_REQUEST);

    fail_writes(&store).await;
    for (path, body) in [
        ("/api/v1/agents", json!({"name": "web"})),
        ("/api/v1/mqtt-users", json!({"name": "ha"})),
        ("/api/v1/tokens", json!({"name": "ci", "role": "operator"})),
    ] {
        let r = cli
            .post(path)
            .header("authorization", &auth)
            .body_json(&body)
            .send()
            .await;
        r.assert_status(poem::http::StatusCode::INTERNAL_SERVER_ERROR);
        let v = r.json().await;
        v.value().object().get("code").assert_string("internal");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
