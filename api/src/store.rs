//! Server state that cannot be rebuilt from the broker — API tokens, registered agents, the audit
//! log — in one embedded database file (redb) in the data dir. Every write is a committed,
//! fsync'd transaction: a crash in the middle loses nothing already acknowledged.
//!
//! Tokens are stored hashed (SHA-256 of the secret); the secret is shown once, at creation.

use std::path::Path;

use chrono::{DateTime, Utc};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Role;

const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
const MQTT_USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("mqtt_users");

/// A registered agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentRecord {
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Hash of the one-time enrollment secret; `None` once used.
    pub enroll_hash: Option<String>,
    pub enroll_expires: DateTime<Utc>,
    /// Set at enrollment.
    pub mqtt_password_hash: Option<String>,
    pub public_key: Option<String>,
    pub enrolled_at: Option<DateTime<Utc>>,
}

/// Credentials handed to an agent at enrollment (shown once).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Enrolled {
    pub mqtt_username: String,
    pub mqtt_password: String,
}

/// An MQTT user for an integration (e.g. Home Assistant).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MqttUserRecord {
    pub name: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    /// May publish Home Assistant `…/set` commands (start/stop/restart without a signature).
    #[serde(default)]
    pub ha_commands: bool,
}

/// Why an enrollment was refused (one sentence each; never says which part was wrong beyond that).
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("this enrollment token is not valid for agent {0} (mistyped, already used, or the agent is not registered: an admin runs `zedops agents add {0}`)")]
    Invalid(String),
    #[error("this enrollment token for agent {0} has expired: ask an admin for a new one (`zedops agents add {0}`)")]
    Expired(String),
    /// The request itself is malformed (a bad name or key).
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Most audit records kept; older ones are dropped first.
pub const AUDIT_KEEP: u64 = 100_000;

/// The store's one error type: a database that cannot be opened or failed (answered `500
/// internal`), or a request the store refuses (`400 bad_request`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the server database {path} cannot be opened: {source}")]
    Open {
        path: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the server database failed: {0}")]
    Db(Box<redb::Error>),
    #[error("the server database holds a record it cannot read or write: {0}")]
    Record(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
    /// A record of that name exists already (`409 conflict`).
    #[error("{0}")]
    Exists(String),
}

impl StoreError {
    /// The wire code of this error: the caller's fault (`bad_request`, `conflict`) or ours.
    pub fn code(&self) -> zedops_proto::ErrorCode {
        use zedops_proto::ErrorCode;
        match self {
            Self::Invalid(_) => ErrorCode::BadRequest,
            Self::Exists(_) => ErrorCode::Conflict,
            _ => ErrorCode::Internal,
        }
    }
}

/// Checks a presented enrollment token against the agent's record and consumes it. An unknown
/// agent and a wrong token get the same answer, so the endpoint is no oracle for agent names.
fn consume_enrollment(
    rec: Option<AgentRecord>,
    name: &str,
    token: &str,
) -> Result<AgentRecord, EnrollError> {
    let invalid = || EnrollError::Invalid(name.to_owned());
    let secret = zedops_proto::enrollment::parse(name, token)
        .ok_or_else(invalid)?
        .secret;
    let mut rec = rec.ok_or_else(invalid)?;
    let hash = rec.enroll_hash.take().ok_or_else(invalid)?;
    if !same(&hash, &hash_secret(secret)) {
        return Err(invalid());
    }
    if Utc::now() > rec.enroll_expires {
        return Err(EnrollError::Expired(name.to_owned()));
    }
    Ok(rec)
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(Box::new(e.into()))
}

/// A stored token (never the secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub created_at: DateTime<Utc>,
}

pub use zedops_proto::http::AuditRecord;

pub struct Store {
    db: Database,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// Token names: like agent names.
pub fn valid_token_name(name: &str) -> bool {
    zedops_proto::names::is_valid_agent_name(name)
}

pub fn hash_secret(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison of two secrets (hex hashes, passwords).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A new token: `zdt_<name>_<secret>`; the name part makes look-up a key read.
pub fn new_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Opens (creating if needed) `<dir>/zedops.redb`; the directory is created with mode 0700.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.display().to_string(),
            source: e.into(),
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let path = dir.join("zedops.redb");
        let db = Database::create(&path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            source: e.into(),
        })?;
        Self::on(db)
    }

    /// A store on any redb storage backend (the tests use one whose writes fail on demand).
    pub fn with_backend(backend: impl redb::StorageBackend) -> Result<Self, StoreError> {
        let db = redb::Builder::new()
            .create_with_backend(backend)
            .map_err(db_err)?;
        Self::on(db)
    }

    fn on(db: Database) -> Result<Self, StoreError> {
        let s = Self { db };
        // Create the tables so that reads never fail on a fresh file.
        let w = s.db.begin_write().map_err(db_err)?;
        {
            w.open_table(TOKENS).map_err(db_err)?;
            w.open_table(AUDIT).map_err(db_err)?;
            w.open_table(AGENTS).map_err(db_err)?;
            w.open_table(MQTT_USERS).map_err(db_err)?;
        }
        w.commit().map_err(db_err)?;
        Ok(s)
    }

    /// Creates a token and returns its secret form (shown once).
    pub fn create_token(&self, name: &str, role: Role) -> Result<String, StoreError> {
        if !valid_token_name(name) {
            return Err(StoreError::Invalid(format!(
                "token name {name:?} is invalid: use 1-63 characters of a-z, 0-9, '-' or '_'"
            )));
        }
        let secret = new_secret();
        let rec = TokenRecord {
            name: name.to_owned(),
            role,
            hash: hash_secret(&secret),
            created_at: Utc::now(),
        };
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = w.open_table(TOKENS).map_err(db_err)?;
            if t.get(name).map_err(db_err)?.is_some() {
                return Err(StoreError::Exists(format!(
                    "a token named {name} already exists: revoke it first or choose another name"
                )));
            }
            let bytes = serde_json::to_vec(&rec)?;
            t.insert(name, bytes.as_slice()).map_err(db_err)?;
        }
        w.commit().map_err(db_err)?;
        Ok(format!("zdt_{name}_{secret}"))
    }

    /// The record of a presented token, when it is valid.
    pub fn verify(&self, token: &str) -> Option<TokenRecord> {
        let rest = token.strip_prefix("zdt_")?;
        let (name, secret) = rest.rsplit_once('_')?;
        let rec: TokenRecord = self.get_json(TOKENS, name)?;
        same(&rec.hash, &hash_secret(secret)).then_some(rec)
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.list_json(TOKENS)
    }

    /// Revokes a token; false when there was none of that name.
    pub fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        self.remove(TOKENS, name)
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Option<T> {
        let r = self.db.begin_read().ok()?;
        let t = r.open_table(table).ok()?;
        let v = t.get(key).ok()??;
        serde_json::from_slice(v.value()).ok()
    }

    fn put_json<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        v: &T,
    ) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = w.open_table(table).map_err(db_err)?;
            let bytes = serde_json::to_vec(v)?;
            t.insert(key, bytes.as_slice()).map_err(db_err)?;
        }
        w.commit().map_err(db_err)
    }

    fn remove(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<bool, StoreError> {
        let w = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut t = w.open_table(table).map_err(db_err)?;
            let r = t.remove(key).map_err(db_err)?.is_some();
            r
        };
        w.commit().map_err(db_err)?;
        Ok(removed)
    }

    fn list_json<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(table).map_err(db_err)?;
        let mut v = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (_, val) = item.map_err(db_err)?;
            if let Ok(rec) = serde_json::from_slice::<T>(val.value()) {
                v.push(rec);
            }
        }
        Ok(v)
    }

    /// Registers an agent (or renews its enrollment token) and returns the one-time token
    /// `zde_<name>_<secret>_<fingerprint>` (`zedops_proto::enrollment`), valid for `ttl`;
    /// `server_fingerprint` names the server's signing key. An enrolled agent keeps working
    /// until it re-enrolls.
    pub fn register_agent(
        &self,
        name: &str,
        ttl: chrono::Duration,
        server_fingerprint: Option<&str>,
    ) -> Result<(String, DateTime<Utc>), StoreError> {
        if !zedops_proto::names::is_valid_agent_name(name) {
            return Err(StoreError::Invalid(
                zedops_proto::NameError::Agent(name.to_owned()).to_string(),
            ));
        }
        let secret = new_secret();
        let expires = Utc::now() + ttl;
        let mut rec = self.agent(name).unwrap_or(AgentRecord {
            name: name.to_owned(),
            created_at: Utc::now(),
            enroll_hash: None,
            enroll_expires: expires,
            mqtt_password_hash: None,
            public_key: None,
            enrolled_at: None,
        });
        rec.enroll_hash = Some(hash_secret(&secret));
        rec.enroll_expires = expires;
        self.put_json(AGENTS, name, &rec)?;
        let token = zedops_proto::enrollment::token(name, &secret, server_fingerprint);
        Ok((token, expires))
    }

    pub fn agent(&self, name: &str) -> Option<AgentRecord> {
        self.get_json(AGENTS, name)
    }

    pub fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.list_json(AGENTS)
    }

    /// Exchanges a one-time enrollment token for permanent MQTT credentials, recording the
    /// agent's public key. The token is consumed. The check and the write are one write
    /// transaction (redb serializes them): of two concurrent enrollments with one token only one
    /// succeeds, and an agent removed meanwhile is not brought back (issue 14, item 8).
    pub fn enroll(
        &self,
        name: &str,
        token: &str,
        public_key: &str,
    ) -> Result<Enrolled, EnrollError> {
        // Validate before touching the database.
        if !zedops_proto::names::is_valid_agent_name(name) {
            return Err(EnrollError::BadRequest(
                zedops_proto::NameError::Agent(name.to_owned()).to_string(),
            ));
        }
        let store = |e: redb::Error| EnrollError::Store(db_err(e));
        let w = self.db.begin_write().map_err(|e| store(e.into()))?;
        let password = {
            let mut t = w.open_table(AGENTS).map_err(|e| store(e.into()))?;
            let rec = t
                .get(name)
                .map_err(|e| store(e.into()))?
                .and_then(|v| serde_json::from_slice::<AgentRecord>(v.value()).ok());
            let mut rec = consume_enrollment(rec, name, token)?;
            // The key is checked once the token is: without a valid token the answer is `401`
            // whatever the key, and a bad key returns before the commit, so it does not use the
            // token up.
            if zedops_proto::sign::PublicKey::from_hex(public_key).is_none() {
                return Err(EnrollError::BadRequest(
                    "the agent's public key is not a valid Ed25519 key".into(),
                ));
            }
            let password = new_secret();
            rec.mqtt_password_hash = Some(hash_secret(&password));
            rec.public_key = Some(public_key.to_owned());
            rec.enrolled_at = Some(Utc::now());
            let bytes = serde_json::to_vec(&rec).map_err(StoreError::from)?;
            t.insert(name, bytes.as_slice())
                .map_err(|e| store(e.into()))?;
            password
        };
        w.commit().map_err(|e| store(e.into()))?;
        Ok(Enrolled {
            mqtt_username: name.to_owned(),
            mqtt_password: password,
        })
    }

    /// Removes an agent: its credentials stop working at once.
    pub fn remove_agent(&self, name: &str) -> Result<bool, StoreError> {
        self.remove(AGENTS, name)
    }

    /// True when `password` is the enrolled agent `name`'s MQTT password.
    pub fn check_agent_password(&self, name: &str, password: &str) -> bool {
        self.agent(name)
            .and_then(|r| r.mqtt_password_hash)
            .is_some_and(|h| same(&h, &hash_secret(password)))
    }

    /// Creates (or replaces) an MQTT user for an integration; returns its password (shown once).
    /// `ha_commands`: the user may publish Home Assistant `…/set` commands.
    pub fn create_mqtt_user(&self, name: &str, ha_commands: bool) -> Result<String, StoreError> {
        if !zedops_proto::names::is_valid_mqtt_user(name) {
            return Err(StoreError::Invalid(format!(
                "MQTT user name {name:?} is invalid: use 1-63 characters of a-z, 0-9, '-' or '_', not starting with \"zedops\""
            )));
        }
        let password = new_secret();
        self.put_json(
            MQTT_USERS,
            name,
            &MqttUserRecord {
                name: name.to_owned(),
                password_hash: hash_secret(&password),
                created_at: Utc::now(),
                ha_commands,
            },
        )?;
        Ok(password)
    }

    /// The MQTT user `name` when `password` is its password.
    pub fn check_mqtt_user(&self, name: &str, password: &str) -> Option<MqttUserRecord> {
        self.get_json::<MqttUserRecord>(MQTT_USERS, name)
            .filter(|r| same(&r.password_hash, &hash_secret(password)))
    }

    /// The MQTT user `name`, if there is one.
    pub fn mqtt_user(&self, name: &str) -> Option<MqttUserRecord> {
        self.get_json::<MqttUserRecord>(MQTT_USERS, name)
    }

    /// Appends an audit record (its `seq` is assigned here).
    pub fn audit(&self, mut rec: AuditRecord) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = w.open_table(AUDIT).map_err(db_err)?;
            let next = t
                .last()
                .map_err(db_err)?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(1);
            rec.seq = next;
            let bytes = serde_json::to_vec(&rec)?;
            t.insert(next, bytes.as_slice()).map_err(db_err)?;
            if next > AUDIT_KEEP {
                t.remove(next - AUDIT_KEEP).map_err(db_err)?;
            }
        }
        w.commit().map_err(db_err)?;
        Ok(())
    }

    /// The newest `limit` audit records, newest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(AUDIT).map_err(db_err)?;
        let mut v = Vec::new();
        for item in t.iter().map_err(db_err)?.rev().take(limit) {
            let (_, val) = item.map_err(db_err)?;
            if let Ok(rec) = serde_json::from_slice::<AuditRecord>(val.value()) {
                v.push(rec);
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "zedops-store-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        d
    }

    #[test]
    fn tokens_are_hashed_verified_and_revoked() {
        let d = dir();
        let s = Store::open(&d).unwrap();
        let t = s.create_token("ci", Role::Operator).unwrap();
        assert!(t.starts_with("zdt_ci_"));
        assert_eq!(s.verify(&t).unwrap().role, Role::Operator);
        assert!(s.verify("zdt_ci_wrong").is_none());
        assert!(s.verify("garbage").is_none());
        // The secret is not stored.
        let secret = t.rsplit_once('_').unwrap().1;
        assert!(s.tokens().unwrap().iter().all(|r| !r.hash.contains(secret)));
        assert!(s.create_token("ci", Role::Viewer).is_err());
        assert!(s.create_token("Bad Name", Role::Viewer).is_err());
        assert!(s.revoke_token("ci").unwrap());
        assert!(s.verify(&t).is_none());
        // Reopening keeps what was committed.
        let t2 = s.create_token("keep", Role::Admin).unwrap();
        drop(s);
        let s = Store::open(&d).unwrap();
        assert_eq!(s.verify(&t2).unwrap().name, "keep");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn enrollment_is_one_time_and_expires() {
        let d = dir();
        let s = Store::open(&d).unwrap();
        let key = zedops_proto::sign::KeyPair::from_seed([1; 32]).public_hex();
        // An unknown agent gets the answer of a wrong token (no name oracle).
        assert_eq!(
            s.enroll("m", "zde_m_x", &key).unwrap_err().to_string(),
            EnrollError::Invalid("m".into()).to_string()
        );
        let (t, _) = s
            .register_agent("m", chrono::Duration::minutes(5), None)
            .unwrap();
        assert_eq!(
            s.enroll("m", &format!("zde_m_{}", "0".repeat(48)), &key)
                .unwrap_err()
                .to_string(),
            EnrollError::Invalid("m".into()).to_string()
        );
        // A bad key with a wrong token is the token's error; with the right token it is the
        // key's, and the token is not used up by it.
        let bad_key = "0".repeat(63) + "1";
        let wrong = format!("zde_m_{}", "0".repeat(48));
        assert!(matches!(
            s.enroll("m", &wrong, &bad_key),
            Err(EnrollError::Invalid(_))
        ));
        assert!(matches!(
            s.enroll("m", &t, &bad_key),
            Err(EnrollError::BadRequest(_))
        ));
        let creds = s.enroll("m", &t, &key).unwrap();
        assert!(s.check_agent_password("m", &creds.mqtt_password));
        assert!(!s.check_agent_password("m", "nope"));
        // Used once: useless afterwards.
        assert_eq!(
            s.enroll("m", &t, &key).unwrap_err().to_string(),
            EnrollError::Invalid("m".into()).to_string()
        );
        // Expired.
        let (t2, _) = s
            .register_agent("n", chrono::Duration::seconds(-1), None)
            .unwrap();
        assert_eq!(
            s.enroll("n", &t2, &key).unwrap_err().to_string(),
            EnrollError::Expired("n".into()).to_string()
        );
        // Removal cuts the agent off.
        assert!(s.remove_agent("m").unwrap());
        assert!(!s.check_agent_password("m", &creds.mqtt_password));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn concurrent_enrollments_with_one_token_and_removal_races() {
        let d = dir();
        let s = std::sync::Arc::new(Store::open(&d).unwrap());
        let key = zedops_proto::sign::KeyPair::from_seed([2; 32]).public_hex();
        for round in 0..20 {
            let name = format!("race-{round}");
            let (t, _) = s
                .register_agent(&name, chrono::Duration::minutes(5), Some(&"ab".repeat(16)))
                .unwrap();
            let ok: usize = std::thread::scope(|sc| {
                let hs: Vec<_> = (0..4)
                    .map(|_| sc.spawn(|| s.enroll(&name, &t, &key).is_ok()))
                    .collect();
                hs.into_iter().map(|h| usize::from(h.join().unwrap())).sum()
            });
            assert_eq!(ok, 1, "round {round}: one token, {ok} enrollments");
            // An enrollment after a removal does not bring the agent back.
            let (t, _) = s
                .register_agent(&name, chrono::Duration::minutes(5), Some(&"ab".repeat(16)))
                .unwrap();
            assert!(s.remove_agent(&name).unwrap());
            assert!(s.enroll(&name, &t, &key).is_err());
            assert!(s.agent(&name).is_none(), "round {round}: resurrected");
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn audit_appends_in_order() {
        let d = dir();
        let s = Store::open(&d).unwrap();
        for i in 0..3 {
            s.audit(AuditRecord {
                seq: 0,
                time: Utc::now(),
                who: "t".into(),
                source: "http".into(),
                action: format!("a{i}"),
                agent: None,
                container: None,
                outcome: "ok".into(),
                message: None,
            })
            .unwrap();
        }
        let log = s.audit_log(10).unwrap();
        assert_eq!(log.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 2, 1]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
