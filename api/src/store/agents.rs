//! Registered agents: enrollment tokens, then MQTT passwords and public keys.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::*;

const COLUMNS: &str =
    "name, created_at, enroll_hash, enroll_expires, mqtt_password_hash, public_key, enrolled_at";

impl Store {
    /// Registers an agent (or renews its enrollment token) and returns the one-time token
    /// `zde_<name>_<secret>_<fingerprint>` (`zedops_proto::enrollment`), valid for `ttl`;
    /// `server_fingerprint` names the server's signing key. An enrolled agent keeps working
    /// until it re-enrolls.
    pub async fn register_agent(
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
        sqlx::query(
            "INSERT INTO agents (name, created_at, enroll_hash, enroll_expires) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE \
             SET enroll_hash = excluded.enroll_hash, enroll_expires = excluded.enroll_expires",
        )
        .bind(name)
        .bind(ts(Utc::now()))
        .bind(hash_secret(&secret))
        .bind(ts(expires))
        .execute(&self.pool)
        .await?;
        let token = zedops_proto::enrollment::token(name, &secret, server_fingerprint);
        Ok((token, expires))
    }

    /// The agent `name`; `None` when there is none, or when the database fails (logged).
    pub async fn agent(&self, name: &str) -> Option<AgentRecord> {
        self.agent_record(name).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, agent = name, "cannot read an agent's record");
            None
        })
    }

    /// The agent `name`, or why the database could not say.
    pub async fn agent_record(&self, name: &str) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM agents WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| agent_of(&r)).transpose()
    }

    pub async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM agents ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(agent_of).collect()
    }

    /// Exchanges a one-time enrollment token for permanent MQTT credentials, recording the
    /// agent's public key. The token is consumed by one conditional update: of two concurrent
    /// enrollments with one token (on one replica or two) only one succeeds, and an agent
    /// removed meanwhile is not brought back (issue 14, item 8).
    pub async fn enroll(
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
        let rec = self.agent_record(name).await?;
        let hash = consume_enrollment(rec, name, token)?;
        // The key is checked once the token is: without a valid token the answer is `401`
        // whatever the key, and a bad key returns before the update, so it does not use the
        // token up.
        if zedops_proto::sign::PublicKey::from_hex(public_key).is_none() {
            return Err(EnrollError::BadRequest(
                "the agent's public key is not a valid Ed25519 key".into(),
            ));
        }
        let password = new_secret();
        let done = sqlx::query(
            "UPDATE agents SET enroll_hash = NULL, mqtt_password_hash = $1, public_key = $2, \
             enrolled_at = $3 WHERE name = $4 AND enroll_hash = $5",
        )
        .bind(hash_secret(&password))
        .bind(public_key)
        .bind(ts(Utc::now()))
        .bind(name)
        .bind(hash)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from)?;
        if done.rows_affected() != 1 {
            // Used (or the agent removed) between the read and the update.
            return Err(EnrollError::Invalid(name.to_owned()));
        }
        Ok(Enrolled {
            mqtt_username: name.to_owned(),
            mqtt_password: password,
        })
    }

    /// Removes an agent: its credentials stop working at once.
    pub async fn remove_agent(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM agents WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// True when `password` is the enrolled agent `name`'s MQTT password.
    pub async fn check_agent_password(&self, name: &str, password: &str) -> bool {
        self.agent(name)
            .await
            .and_then(|r| r.mqtt_password_hash)
            .is_some_and(|h| proves(&h, password))
    }
}

/// Checks a presented enrollment token against the agent's record; returns the stored hash the
/// update must still find. An unknown agent and a wrong token get the same answer, so the
/// endpoint is no oracle for agent names.
fn consume_enrollment(
    rec: Option<AgentRecord>,
    name: &str,
    token: &str,
) -> Result<String, EnrollError> {
    let invalid = || EnrollError::Invalid(name.to_owned());
    let secret = zedops_proto::enrollment::parse(name, token)
        .ok_or_else(invalid)?
        .secret;
    let rec = rec.ok_or_else(invalid)?;
    let hash = rec.enroll_hash.ok_or_else(invalid)?;
    if !proves(&hash, secret) {
        return Err(invalid());
    }
    if Utc::now() > rec.enroll_expires {
        return Err(EnrollError::Expired(name.to_owned()));
    }
    Ok(hash)
}

fn agent_of(r: &sqlx::any::AnyRow) -> Result<AgentRecord, StoreError> {
    Ok(AgentRecord {
        name: r.try_get("name")?,
        created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
        enroll_hash: r.try_get("enroll_hash")?,
        enroll_expires: parse_ts(&r.try_get::<String, _>("enroll_expires")?)?,
        mqtt_password_hash: r.try_get("mqtt_password_hash")?,
        public_key: r.try_get("public_key")?,
        enrolled_at: parse_ts_opt(r.try_get("enrolled_at")?)?,
    })
}
