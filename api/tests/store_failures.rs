//! A database that fails is a server fault (`500 internal`), never the caller's (`400`): issue
//! 15's first hidden bug. The store runs on a redb backend whose writes fail on demand — the
//! fault a full or failing disk produces — under the real HTTP application.

#![allow(clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use poem::test::TestClient;
use redb::backends::InMemoryBackend;
use redb::StorageBackend;
use serde_json::json;
use zedops_api::auth::Role;
use zedops_api::store::Store;

/// An in-memory redb backend whose writes and syncs fail while `failing` is set.
#[derive(Debug)]
struct FailingDisk {
    inner: InMemoryBackend,
    failing: Arc<AtomicBool>,
}

impl FailingDisk {
    fn check(&self) -> std::io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("no space left on device (simulated)"));
        }
        Ok(())
    }
}

impl StorageBackend for FailingDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.inner.read(offset, len)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
        self.check()?;
        self.inner.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

#[tokio::test]
async fn database_failures_answer_500_internal() {
    let failing = Arc::new(AtomicBool::new(false));
    let disk = FailingDisk {
        inner: InMemoryBackend::new(),
        failing: failing.clone(),
    };
    let store = Store::with_backend(disk).expect("store");
    let admin = store.create_token("admin", Role::Admin).expect("token");
    let cfg = zedops_api::MqttConfig {
        broker: "mqtt://127.0.0.1:9".parse().expect("url"),
        credentials: None,
        client_id: None,
        fallback_brokers: Vec::new(),
        tls: Default::default(),
    };
    let api = zedops_api::Api::connect(cfg, Some(Arc::new(store)));
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

    failing.store(true, Ordering::SeqCst);
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
}
