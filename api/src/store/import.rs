//! The redb file of earlier versions (`<data-dir>/zedops.redb`), imported into the SQL database
//! on the first start that finds it: tokens, agents, MQTT users and the audit log, in one
//! transaction. The file is renamed `zedops.redb.imported` afterwards, so it is imported once and
//! kept for a way back.

use std::path::Path;

use redb::{ReadableTable, TableDefinition};

use super::*;

const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
const MQTT_USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("mqtt_users");

/// What an import brought over.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    pub tokens: usize,
    pub agents: usize,
    pub mqtt_users: usize,
    pub audit: usize,
}

/// Imports `<dir>/zedops.redb` when it is there and not imported yet.
pub async fn redb_if_any(store: &Store, dir: &Path) -> Result<Option<Imported>, StoreError> {
    let file = dir.join("zedops.redb");
    if !file.is_file() {
        return Ok(None);
    }
    let open_err = |e: String| StoreError::Open {
        place: file.display().to_string(),
        source: e.into(),
    };
    let old = read_redb(&file).map_err(open_err)?;
    let counts = old.counts();
    write_all(store, old).await?;
    let done = dir.join("zedops.redb.imported");
    std::fs::rename(&file, &done).map_err(|e| open_err(e.to_string()))?;
    tracing::info!(
        tokens = counts.tokens,
        agents = counts.agents,
        mqtt_users = counts.mqtt_users,
        audit = counts.audit,
        from = %file.display(),
        "imported the database of an earlier version (kept as zedops.redb.imported)"
    );
    Ok(Some(counts))
}

/// Everything the redb file holds.
#[derive(Default)]
struct Old {
    tokens: Vec<TokenRecord>,
    agents: Vec<AgentRecord>,
    users: Vec<MqttUserRecord>,
    audit: Vec<AuditRecord>,
}

impl Old {
    fn counts(&self) -> Imported {
        Imported {
            tokens: self.tokens.len(),
            agents: self.agents.len(),
            mqtt_users: self.users.len(),
            audit: self.audit.len(),
        }
    }
}

fn read_redb(file: &Path) -> Result<Old, String> {
    let db = redb::Database::open(file).map_err(|e| e.to_string())?;
    let r = db.begin_read().map_err(|e| e.to_string())?;
    Ok(Old {
        tokens: decode(values(&r, TOKENS)?),
        agents: decode(values(&r, AGENTS)?),
        users: decode(values(&r, MQTT_USERS)?),
        audit: decode(values(&r, AUDIT)?),
    })
}

/// Every value of table `t`, in key order; none when the file has no such table.
fn values<K: redb::Key + 'static>(
    r: &redb::ReadTransaction,
    t: TableDefinition<K, &[u8]>,
) -> Result<Vec<Vec<u8>>, String> {
    let Ok(table) = r.open_table(t) else {
        return Ok(Vec::new());
    };
    let mut v = Vec::new();
    for item in table.iter().map_err(|e| e.to_string())? {
        let (_, val) = item.map_err(|e| e.to_string())?;
        v.push(val.value().to_vec());
    }
    Ok(v)
}

/// The records that decode; one that does not (a damaged record) is left behind.
fn decode<T: serde::de::DeserializeOwned>(raw: Vec<Vec<u8>>) -> Vec<T> {
    raw.iter()
        .filter_map(|b| serde_json::from_slice(b).ok())
        .collect()
}

async fn write_all(store: &Store, old: Old) -> Result<(), StoreError> {
    let mut tx = store.pool.begin().await?;
    for t in &old.tokens {
        sqlx::query("INSERT INTO tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING")
            .bind(&t.name)
            .bind(t.role.as_str())
            .bind(&t.hash)
            .bind(ts(t.created_at))
            .execute(&mut *tx)
            .await?;
    }
    for a in &old.agents {
        sqlx::query(
            "INSERT INTO agents (name, created_at, enroll_hash, enroll_expires, mqtt_password_hash, public_key, enrolled_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&a.name)
        .bind(ts(a.created_at))
        .bind(a.enroll_hash.clone())
        .bind(ts(a.enroll_expires))
        .bind(a.mqtt_password_hash.clone())
        .bind(a.public_key.clone())
        .bind(a.enrolled_at.map(ts))
        .execute(&mut *tx)
        .await?;
    }
    for u in &old.users {
        sqlx::query("INSERT INTO mqtt_users (name, password_hash, created_at, ha_commands) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING")
            .bind(&u.name)
            .bind(&u.password_hash)
            .bind(ts(u.created_at))
            .bind(i64::from(u.ha_commands))
            .execute(&mut *tx)
            .await?;
    }
    for rec in &old.audit {
        let body = serde_json::to_string(rec).map_err(|e| StoreError::Record(e.to_string()))?;
        sqlx::query("INSERT INTO audit (time, record) VALUES ($1, $2)")
            .bind(ts(rec.time))
            .bind(body)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
