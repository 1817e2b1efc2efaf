use super::*;

fn dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "zedops-store-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ))
}

async fn open(d: &Path) -> Store {
    Store::open(None, d).await.unwrap()
}

#[tokio::test]
async fn tokens_are_hashed_verified_and_revoked() {
    let d = dir();
    let s = open(&d).await;
    let t = s.create_token("ci", Role::Operator).await.unwrap();
    assert!(t.starts_with("zdt_ci_"));
    assert_eq!(s.verify(&t).await.unwrap().role, Role::Operator);
    assert!(s.verify("zdt_ci_wrong").await.is_none());
    assert!(s.verify("garbage").await.is_none());
    // The secret is not stored.
    let secret = t.rsplit_once('_').unwrap().1;
    let all = s.tokens().await.unwrap();
    assert!(all.iter().all(|r| !r.hash.contains(secret)));
    assert!(matches!(
        s.create_token("ci", Role::Viewer).await,
        Err(StoreError::Exists(_))
    ));
    assert!(s.create_token("Bad Name", Role::Viewer).await.is_err());
    assert!(s.revoke_token("ci").await.unwrap());
    assert!(s.verify(&t).await.is_none());
    // Secrets' hashes are the owner's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.join("zedops.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Reopening keeps what was committed.
    let t2 = s.create_token("keep", Role::Admin).await.unwrap();
    s.close().await;
    let s = open(&d).await;
    assert_eq!(s.verify(&t2).await.unwrap().name, "keep");
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn enrollment_is_one_time_and_expires() {
    let d = dir();
    let s = open(&d).await;
    let key = zedops_proto::sign::KeyPair::from_seed([1; 32]).public_hex();
    let invalid = EnrollError::Invalid("m".into()).to_string();
    // An unknown agent gets the answer of a wrong token (no name oracle).
    let e = s.enroll("m", "zde_m_x", &key).await.unwrap_err();
    assert_eq!(e.to_string(), invalid);
    let (t, _) = s
        .register_agent("m", chrono::Duration::minutes(5), None)
        .await
        .unwrap();
    let wrong = format!("zde_m_{}", "0".repeat(48));
    assert_eq!(
        s.enroll("m", &wrong, &key).await.unwrap_err().to_string(),
        invalid
    );
    // A bad key with a wrong token is the token's error; with the right token it is the
    // key's, and the token is not used up by it.
    let bad_key = "0".repeat(63) + "1";
    assert!(matches!(
        s.enroll("m", &wrong, &bad_key).await,
        Err(EnrollError::Invalid(_))
    ));
    assert!(matches!(
        s.enroll("m", &t, &bad_key).await,
        Err(EnrollError::BadRequest(_))
    ));
    let creds = s.enroll("m", &t, &key).await.unwrap();
    assert!(s.check_agent_password("m", &creds.mqtt_password).await);
    assert!(!s.check_agent_password("m", "nope").await);
    assert_eq!(
        s.agent("m").await.unwrap().public_key.as_deref(),
        Some(key.as_str())
    );
    // Used once: useless afterwards.
    assert_eq!(
        s.enroll("m", &t, &key).await.unwrap_err().to_string(),
        invalid
    );
    // Expired.
    let (t2, _) = s
        .register_agent("n", chrono::Duration::seconds(-1), None)
        .await
        .unwrap();
    assert_eq!(
        s.enroll("n", &t2, &key).await.unwrap_err().to_string(),
        EnrollError::Expired("n".into()).to_string()
    );
    // Removal cuts the agent off.
    assert!(s.remove_agent("m").await.unwrap());
    assert!(!s.check_agent_password("m", &creds.mqtt_password).await);
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enrollments_with_one_token_and_removal_races() {
    let d = dir();
    let s = std::sync::Arc::new(open(&d).await);
    let key = zedops_proto::sign::KeyPair::from_seed([2; 32]).public_hex();
    let fp = "ab".repeat(16);
    for round in 0..20 {
        let name = format!("race-{round}");
        let minutes = chrono::Duration::minutes(5);
        let (t, _) = s.register_agent(&name, minutes, Some(&fp)).await.unwrap();
        let tries: Vec<_> = (0..4)
            .map(|_| {
                let (s, name, t, key) = (s.clone(), name.clone(), t.clone(), key.clone());
                tokio::spawn(async move { s.enroll(&name, &t, &key).await.is_ok() })
            })
            .collect();
        let mut ok = 0;
        for h in tries {
            ok += usize::from(h.await.unwrap());
        }
        assert_eq!(ok, 1, "round {round}: one token, {ok} enrollments");
        // An enrollment after a removal does not bring the agent back.
        let (t, _) = s.register_agent(&name, minutes, Some(&fp)).await.unwrap();
        assert!(s.remove_agent(&name).await.unwrap());
        assert!(s.enroll(&name, &t, &key).await.is_err());
        assert!(s.agent(&name).await.is_none(), "round {round}: resurrected");
    }
    let _ = std::fs::remove_dir_all(&d);
}

fn record(action: &str) -> AuditRecord {
    AuditRecord::http("t", action)
}

#[tokio::test]
async fn audit_appends_in_order() {
    let d = dir();
    let s = open(&d).await;
    for i in 0..3 {
        s.audit(record(&format!("a{i}"))).await.unwrap();
    }
    let log = s.audit_log(10).await.unwrap();
    assert_eq!(log.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 2, 1]);
    assert_eq!(log[0].action, "a2");
    assert_eq!(s.audit_log(2).await.unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn mqtt_users_and_the_server_key() {
    let d = dir();
    let s = open(&d).await;
    let p = s.create_mqtt_user("ha", true).await.unwrap();
    assert!(s.check_mqtt_user("ha", &p).await.unwrap().ha_commands);
    assert!(s.check_mqtt_user("ha", "nope").await.is_none());
    assert!(s.create_mqtt_user("zedops-x", false).await.is_err());
    assert_eq!(s.server_key("aa").await.unwrap(), "aa");
    // The first key stored stays: a second replica takes it.
    assert_eq!(s.server_key("bb").await.unwrap(), "aa");
    let _ = std::fs::remove_dir_all(&d);
}

/// A data dir of an earlier version (redb) is imported once, and then renamed: into the default
/// SQLite database, and into the one `--database` names.
#[tokio::test]
async fn a_redb_data_dir_is_imported() {
    let d = dir();
    old_redb(&d);
    let s = open(&d).await;
    imported(&s, &d).await;
    s.close().await;
    // Once: a second start imports nothing again.
    let s = open(&d).await;
    assert_eq!(s.tokens().await.unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&d);

    let d = dir();
    old_redb(&d);
    let elsewhere = dir();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let url = format!("sqlite://{}?mode=rwc", elsewhere.join("named.db").display());
    let s = Store::open(Some(&url), &d).await.unwrap();
    imported(&s, &d).await;
    assert!(!d.join("zedops.db").exists(), "a default database was made");
    s.close().await;
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_dir_all(&elsewhere);
}

/// What `old_redb` wrote, in `s`; the redb file renamed.
async fn imported(s: &Store, d: &Path) {
    assert_eq!(s.verify("zdt_old_s3cret").await.unwrap().role, Role::Admin);
    assert!(s.check_agent_password("maestro", "pw").await);
    let user = s.check_mqtt_user("ha", "upw").await.expect("the MQTT user");
    assert!(user.ha_commands);
    let log = s.audit_log(10).await.unwrap();
    assert_eq!(
        log.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["old2", "old1"]
    );
    assert!(!d.join("zedops.redb").exists() && d.join("zedops.redb.imported").exists());
}

/// A redb data dir of an earlier version in `d`: a token, an agent, an MQTT user, two audit records.
fn old_redb(d: &Path) {
    use redb::TableDefinition;
    std::fs::create_dir_all(d).unwrap();
    let token = TokenRecord {
        name: "old".into(),
        role: Role::Admin,
        hash: hash_secret("s3cret"),
        created_at: Utc::now(),
    };
    let agent = AgentRecord {
        name: "maestro".into(),
        created_at: Utc::now(),
        enroll_hash: None,
        enroll_expires: Utc::now(),
        mqtt_password_hash: Some(hash_secret("pw")),
        public_key: Some("k".into()),
        enrolled_at: Some(Utc::now()),
    };
    let user = MqttUserRecord {
        name: "ha".into(),
        password_hash: hash_secret("upw"),
        created_at: Utc::now(),
        ha_commands: true,
    };
    {
        let db = redb::Database::create(d.join("zedops.redb")).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut t = w
                .open_table(TableDefinition::<&str, &[u8]>::new("tokens"))
                .unwrap();
            t.insert("old", serde_json::to_vec(&token).unwrap().as_slice())
                .unwrap();
            let mut a = w
                .open_table(TableDefinition::<&str, &[u8]>::new("agents"))
                .unwrap();
            a.insert("maestro", serde_json::to_vec(&agent).unwrap().as_slice())
                .unwrap();
            let mut l = w
                .open_table(TableDefinition::<u64, &[u8]>::new("audit"))
                .unwrap();
            for i in 1..=2u64 {
                let rec = record(&format!("old{i}"));
                l.insert(i, serde_json::to_vec(&rec).unwrap().as_slice())
                    .unwrap();
            }
            let mut u = w
                .open_table(TableDefinition::<&str, &[u8]>::new("mqtt_users"))
                .unwrap();
            u.insert("ha", serde_json::to_vec(&user).unwrap().as_slice())
                .unwrap();
        }
        w.commit().unwrap();
    }
}

#[test]
fn urls_are_redacted() {
    assert_eq!(
        redact("postgres://zed:pw@db:5432/z"),
        "postgres://zed:…@db:5432/z"
    );
    assert_eq!(redact("sqlite:///x/y.db"), "sqlite:///x/y.db");
}
