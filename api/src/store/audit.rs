//! The audit log: one row per record, numbered by the database (so replicas writing at once
//! never take the same number), the newest [`AUDIT_KEEP`] kept.

use sqlx::Row;

use super::*;

impl Store {
    /// Appends an audit record (its `seq` is the database's).
    pub async fn audit(&self, rec: AuditRecord) -> Result<(), StoreError> {
        let body = serde_json::to_string(&rec).map_err(|e| StoreError::Record(e.to_string()))?;
        let row = sqlx::query("INSERT INTO audit (time, record) VALUES ($1, $2) RETURNING seq")
            .bind(ts(rec.time))
            .bind(body)
            .fetch_one(&self.pool)
            .await?;
        let seq: i64 = row.try_get("seq")?;
        let keep = AUDIT_KEEP as i64;
        if seq > keep && seq % 1000 == 0 {
            // Trimmed now and then rather than on every append: one statement per thousand.
            sqlx::query("DELETE FROM audit WHERE seq <= $1")
                .bind(seq - keep)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The newest `limit` audit records, newest first.
    pub async fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = i64::try_from(limit.min(AUDIT_KEEP as usize)).unwrap_or(i64::MAX);
        let rows = sqlx::query("SELECT seq, record FROM audit ORDER BY seq DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let body: String = r.try_get("record")?;
            let Ok(mut rec) = serde_json::from_str::<AuditRecord>(&body) else {
                continue;
            };
            rec.seq = u64::try_from(r.try_get::<i64, _>("seq")?).unwrap_or_default();
            out.push(rec);
        }
        Ok(out)
    }
}
