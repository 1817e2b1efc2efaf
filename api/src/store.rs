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

/// Most audit records kept; older ones are dropped first.
pub const AUDIT_KEEP: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the server database {path} cannot be opened: {reason}")]
    Open { path: String, reason: String },
    #[error("the server database failed: {0}")]
    Db(String),
    #[error("{0}")]
    Invalid(String),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
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

/// One audited action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, poem_openapi::Object)]
pub struct AuditRecord {
    pub seq: u64,
    pub time: DateTime<Utc>,
    /// Token name, or `mqtt` for commands that arrived over MQTT.
    pub who: String,
    /// `http` or `mqtt`.
    pub source: String,
    /// `container.restart`, `token.create`, …
    pub action: String,
    pub agent: Option<String>,
    pub container: Option<String>,
    /// `ok` or an error code.
    pub outcome: String,
    pub message: Option<String>,
}

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

/// Constant-time comparison of two hex hashes.
fn same(a: &str, b: &str) -> bool {
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
            reason: e.to_string(),
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let path = dir.join("zedops.redb");
        let db = Database::create(&path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let s = Self { db };
        // Create the tables so that reads never fail on a fresh file.
        let w = s.db.begin_write().map_err(db_err)?;
        {
            w.open_table(TOKENS).map_err(db_err)?;
            w.open_table(AUDIT).map_err(db_err)?;
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
                return Err(StoreError::Invalid(format!(
                    "a token named {name} already exists: revoke it first or choose another name"
                )));
            }
            let bytes = serde_json::to_vec(&rec).map_err(db_err)?;
            t.insert(name, bytes.as_slice()).map_err(db_err)?;
        }
        w.commit().map_err(db_err)?;
        Ok(format!("zdt_{name}_{secret}"))
    }

    /// The record of a presented token, when it is valid.
    pub fn verify(&self, token: &str) -> Option<TokenRecord> {
        let rest = token.strip_prefix("zdt_")?;
        let (name, secret) = rest.rsplit_once('_')?;
        let r = self.db.begin_read().ok()?;
        let t = r.open_table(TOKENS).ok()?;
        let rec: TokenRecord = serde_json::from_slice(t.get(name).ok()??.value()).ok()?;
        same(&rec.hash, &hash_secret(secret)).then_some(rec)
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(TOKENS).map_err(db_err)?;
        let mut v = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (_, val) = item.map_err(db_err)?;
            if let Ok(rec) = serde_json::from_slice::<TokenRecord>(val.value()) {
                v.push(rec);
            }
        }
        Ok(v)
    }

    /// Revokes a token; false when there was none of that name.
    pub fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        let w = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut t = w.open_table(TOKENS).map_err(db_err)?;
            let r = t.remove(name).map_err(db_err)?.is_some();
            r
        };
        w.commit().map_err(db_err)?;
        Ok(removed)
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
            let bytes = serde_json::to_vec(&rec).map_err(db_err)?;
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
