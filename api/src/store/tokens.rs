//! API tokens: `zdt_<name>_<secret>`; the name part makes look-up a key read.

use chrono::Utc;
use sqlx::Row;

use super::*;

impl Store {
    /// Creates a token and returns its secret form (shown once).
    pub async fn create_token(&self, name: &str, role: Role) -> Result<String, StoreError> {
        if !valid_token_name(name) {
            return Err(StoreError::Invalid(format!(
                "token name {name:?} is invalid: use 1-63 characters of a-z, 0-9, '-' or '_'"
            )));
        }
        let secret = new_secret();
        let done = sqlx::query(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(hash_secret(&secret))
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Exists(format!(
                "a token named {name} already exists: revoke it first or choose another name"
            )));
        }
        Ok(format!("zdt_{name}_{secret}"))
    }

    /// The record of a presented token, when it is valid. A database that fails is logged and
    /// answers "not valid".
    pub async fn verify(&self, token: &str) -> Option<TokenRecord> {
        let rest = token.strip_prefix("zdt_")?;
        let (name, secret) = rest.rsplit_once('_')?;
        let rec = self.token(name).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot check a token");
            None
        })?;
        proves(&rec.hash, secret).then_some(rec)
    }

    async fn token(&self, name: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query("SELECT name, role, hash, created_at FROM tokens WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| token_of(&r)).transpose()
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query("SELECT name, role, hash, created_at FROM tokens ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_of).collect()
    }

    /// Revokes a token; false when there was none of that name.
    pub async fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM tokens WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn token_of(r: &sqlx::any::AnyRow) -> Result<TokenRecord, StoreError> {
    let role: String = r.try_get("role")?;
    Ok(TokenRecord {
        name: r.try_get("name")?,
        role: role
            .parse()
            .map_err(|e: zedops_proto::http::UnknownRole| StoreError::Record(e.to_string()))?,
        hash: r.try_get("hash")?,
        created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
    })
}
