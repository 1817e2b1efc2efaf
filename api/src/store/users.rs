//! MQTT users for integrations (`zedops mqtt-user add`).

use chrono::Utc;
use sqlx::Row;

use super::*;

impl Store {
    /// Creates (or replaces) an MQTT user for an integration; returns its password (shown once).
    /// `ha_commands`: the user may publish Home Assistant `…/set` commands.
    pub async fn create_mqtt_user(
        &self,
        name: &str,
        ha_commands: bool,
    ) -> Result<String, StoreError> {
        if !zedops_proto::names::is_valid_mqtt_user(name) {
            return Err(StoreError::Invalid(format!(
                "MQTT user name {name:?} is invalid: use 1-63 characters of a-z, 0-9, '-' or '_', not starting with \"zedops\""
            )));
        }
        let password = new_secret();
        sqlx::query(
            "INSERT INTO mqtt_users (name, password_hash, created_at, ha_commands) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET \
             password_hash = excluded.password_hash, created_at = excluded.created_at, \
             ha_commands = excluded.ha_commands",
        )
        .bind(name)
        .bind(hash_secret(&password))
        .bind(ts(Utc::now()))
        .bind(i64::from(ha_commands))
        .execute(&self.pool)
        .await?;
        Ok(password)
    }

    /// The MQTT user `name` when `password` is its password.
    pub async fn check_mqtt_user(&self, name: &str, password: &str) -> Option<MqttUserRecord> {
        self.mqtt_user(name)
            .await
            .filter(|r| proves(&r.password_hash, password))
    }

    /// The MQTT user `name`, if there is one (`None` too when the database fails: logged).
    pub async fn mqtt_user(&self, name: &str) -> Option<MqttUserRecord> {
        let row = sqlx::query(
            "SELECT name, password_hash, created_at, ha_commands FROM mqtt_users WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await;
        let read = row
            .map_err(StoreError::from)
            .and_then(|r| r.map(|r| user_of(&r)).transpose());
        read.unwrap_or_else(|e| {
            tracing::warn!(error = %e, user = name, "cannot read an MQTT user");
            None
        })
    }
}

fn user_of(r: &sqlx::any::AnyRow) -> Result<MqttUserRecord, StoreError> {
    Ok(MqttUserRecord {
        name: r.try_get("name")?,
        password_hash: r.try_get("password_hash")?,
        created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
        ha_commands: r.try_get::<i64, _>("ha_commands")? != 0,
    })
}
