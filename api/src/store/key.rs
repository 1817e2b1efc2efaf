//! The server's signing key, in the database so that every replica signs with the same one and
//! an agent accepts commands from any of them.

use sqlx::Row;

use super::*;

impl Store {
    /// The server key's seed (hex): the one stored, else `candidate`, stored now. Of replicas
    /// starting at once on a new database, the first to store wins and the others take it.
    pub async fn server_key(&self, candidate: &str) -> Result<String, StoreError> {
        sqlx::query("INSERT INTO server_key (id, seed) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
            .bind(candidate)
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT seed FROM server_key WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("seed")?)
    }
}
