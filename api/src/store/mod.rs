//! Server state that cannot be rebuilt from the broker — API tokens, registered agents and their
//! keys, MQTT users, the audit log and the server's signing key — in one SQL database
//! (`docs/operations.md` § "The database"):
//!
//! - by default SQLite in the data dir (`<data-dir>/zedops.db`), which needs no set-up;
//! - PostgreSQL (`zedops serve --database postgres://…`) for several API replicas on one database.
//!
//! One schema, with a migration per engine (`api/migrations/{sqlite,postgres}/`), applied at start.
//! A data dir that holds the redb file of earlier versions (`zedops.redb`) is imported into a new
//! database on first start ([`import`]). Every write is one committed statement or transaction:
//! a crash loses nothing already acknowledged. Secrets are stored hashed (SHA-256); the secret is
//! shown once, at creation.
//!
//! - [`tokens`]: API tokens. [`agents`]: registered agents and enrollment. [`users`]: MQTT users.
//! - [`audit`]: the audit log. [`key`]: the server's signing key, shared by replicas.

mod agents;
mod audit;
pub mod import;
mod key;
mod tokens;
mod users;

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::AnyPool;
use sqlx::Executor;

pub use crate::auth::Role;
pub use zedops_proto::http::AuditRecord;

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

/// A stored token (never the secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub created_at: DateTime<Utc>,
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
    #[error("the server database {place} cannot be opened: {source}")]
    Open {
        place: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the server database failed: {0}")]
    Db(#[from] sqlx::Error),
    #[error("the server database holds a record it cannot read: {0}")]
    Record(String),
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

/// Which SQL engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The server's database.
pub struct Store {
    pool: AnyPool,
    engine: Engine,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// How long a statement waits for a connection of the pool, or SQLite for a lock.
const WAIT: Duration = Duration::from_secs(5);

impl Store {
    /// The database `database` names (`postgres://…`, `sqlite://…`), else SQLite in `dir`
    /// (`<dir>/zedops.db`); either way `<dir>/zedops.redb` of earlier versions, when there, is
    /// imported into it (records already in the database win). `dir`, the data dir, is created
    /// either way (mode 0700).
    pub async fn open(database: Option<&str>, dir: &Path) -> Result<Self, StoreError> {
        let open_err = |e: std::io::Error| StoreError::Open {
            place: dir.display().to_string(),
            source: e.into(),
        };
        std::fs::create_dir_all(dir).map_err(open_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        // The data dir holds the admin token and the server key whatever the database is.
        let store = match database {
            Some(url) => Self::connect(url).await?,
            None => {
                let path = dir.join("zedops.db");
                // Mode 0600 before SQLite opens it: its -wal and -shm files take its mode.
                private_file(&path).map_err(open_err)?;
                Self::connect(&format!("sqlite://{}?mode=rwc", path.display())).await?
            }
        };
        import::redb_if_any(&store, dir).await?;
        Ok(store)
    }

    /// The database at `url` (`postgres://…` or `sqlite://…`), migrated to this version's schema.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let engine = match url.split(':').next() {
            Some("postgres" | "postgresql") => Engine::Postgres,
            Some("sqlite") => Engine::Sqlite,
            _ => {
                return Err(StoreError::Invalid(format!(
                    "the database {} is not one zedops knows: use postgres://USER:PASSWORD@HOST/DB or sqlite://PATH",
                    redact(url)
                )))
            }
        };
        let place = redact(url);
        let open_err = |e: sqlx::Error| StoreError::Open {
            place: place.clone(),
            source: e.into(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if engine == Engine::Sqlite { 4 } else { 8 })
            .acquire_timeout(WAIT)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        conn.execute("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(open_err)?;
        migrator(engine)
            .run(&pool)
            .await
            .map_err(|e| open_err(e.into()))?;
        Ok(Self { pool, engine })
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The connection pool, for what the store has no method for (tests inject failures).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes every connection (waits for statements in progress).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates `path` empty with mode 0600 when missing, else sets that mode.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// This version's schema for `engine`: the files of `api/migrations/<engine>/`.
fn migrator(engine: Engine) -> Migrator {
    let init = match engine {
        Engine::Sqlite => include_str!("../../migrations/sqlite/0001_init.sql"),
        Engine::Postgres => include_str!("../../migrations/postgres/0001_init.sql"),
    };
    Migrator {
        migrations: Cow::Owned(vec![Migration::new(
            1,
            Cow::Borrowed("init"),
            MigrationType::Simple,
            Cow::Borrowed(init),
            false,
        )]),
        ..Migrator::DEFAULT
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}:…@{}", &url[..s], &url[at + 1..])
        }
        _ => url.to_owned(),
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

/// Whether `secret` is the one whose hash is `hash` (constant time).
pub fn proves(hash: &str, secret: &str) -> bool {
    same(hash, &hash_secret(secret))
}

/// Constant-time comparison of two secrets (hex hashes, passwords).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A new random secret: 24 bytes, hex.
pub fn new_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A time as the database keeps it: RFC 3339 text, microseconds, UTC (the same on both engines).
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Record(format!("time {s:?}: {e}")))
}

fn parse_ts_opt(s: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    s.as_deref().map(parse_ts).transpose()
}

#[cfg(test)]
mod tests;
