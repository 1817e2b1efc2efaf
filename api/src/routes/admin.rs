//! Tokens, enrollment, MQTT users and the audit log (admin); registering and removing agents is in
//! `agents`, which owns their paths.

use std::sync::Arc;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;
use zedops_proto::ErrorBody;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::store::AuditRecord;
use crate::State;

use super::schemas::*;
use super::*;

pub struct AdminApi {
    pub state: Arc<State>,
}

// Operations take their parameters as arguments (that is how poem-openapi documents them).
#[allow(clippy::too_many_arguments)]
#[OpenApi]
impl AdminApi {
    /// List API tokens
    ///
    /// Names, roles and creation times; never the secrets. Admin only.
    #[oai(
        path = "/api/v1/tokens",
        method = "get",
        tag = "Tag::Admin",
        operation_id = "list_tokens"
    )]
    async fn list_tokens(&self, auth: Caller) -> ApiResult<Vec<TokenInfo>> {
        auth.0.require(Role::Admin)?;
        let store = store(&self.state)?;
        let mut v: Vec<TokenInfo> = store
            .tokens()
            .await?
            .into_iter()
            .map(|t| TokenInfo {
                name: t.name,
                role: t.role,
                created_at: t.created_at,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Json(v))
    }

    /// Create an API token
    ///
    /// Returns the token once; only its hash is stored. Admin only.
    #[oai(
        path = "/api/v1/tokens",
        method = "post",
        tag = "Tag::Admin",
        operation_id = "create_token"
    )]
    async fn create_token(&self, auth: Caller, body: Json<NewToken>) -> ApiResult<CreatedToken> {
        auth.0.require(Role::Admin)?;
        let store = store(&self.state)?;
        let r = store.create_token(&body.name, body.role).await;
        self.state
            .audit(
                AuditRecord::http(auth.0.name.clone(), "token.create")
                    .outcome(match &r {
                        Ok(_) => "ok",
                        Err(e) => e.code().as_str(),
                    })
                    .message(Some(format!("{} ({})", body.name, body.role.as_str()))),
            )
            .await;
        let token = r?;
        Ok(Json(CreatedToken {
            name: body.name.clone(),
            role: body.role,
            token,
        }))
    }

    /// Revoke an API token
    ///
    /// The token stops working at once. Admin only.
    #[oai(
        path = "/api/v1/tokens/:name",
        method = "delete",
        tag = "Tag::Admin",
        operation_id = "revoke_token"
    )]
    async fn revoke_token(
        &self,
        auth: Caller,
        /// Token name.
        #[oai(validator(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
        name: Path<String>,
    ) -> ApiResult<TokenInfoName> {
        auth.0.require(Role::Admin)?;
        let store = store(&self.state)?;
        let removed = store.revoke_token(&name).await?;
        self.state
            .audit(
                AuditRecord::http(auth.0.name.clone(), "token.revoke")
                    .outcome(if removed { "ok" } else { "not_found" })
                    .message(Some(name.0.clone())),
            )
            .await;
        if !removed {
            return Err(ErrorBody::not_found(format!("no token named {}", name.0)).into());
        }
        Ok(Json(TokenInfoName { name: name.0 }))
    }

    /// Read the audit log
    ///
    /// Every action (who, what, which agent and container, outcome), newest first. Admin only.
    #[oai(
        path = "/api/v1/audit",
        method = "get",
        tag = "Tag::Admin",
        operation_id = "audit_log"
    )]
    async fn audit_log(
        &self,
        auth: Caller,
        /// Most records to return (default 100, at most 10 000).
        #[oai(validator(minimum(value = "0"), maximum(value = "10000")))]
        limit: Query<Option<u32>>,
    ) -> ApiResult<Vec<AuditRecord>> {
        auth.0.require(Role::Admin)?;
        let limit = limit.0.unwrap_or(100) as usize;
        let store = store(&self.state)?;
        Ok(Json(store.audit_log(limit).await?))
    }

    /// Enroll an agent
    ///
    /// Exchanges a one-time enrollment token (from `POST /api/v1/agents`) for the agent's
    /// permanent MQTT credentials, and records the agent's public signing key. Needs no bearer
    /// token: the enrollment token is the credential.
    #[oai(
        path = "/api/v1/enroll",
        method = "post",
        tag = "Tag::Admin",
        operation_id = "enroll"
    )]
    async fn enroll(&self, body: Json<EnrollRequest>) -> ApiResult<EnrollResponse> {
        let store = store(&self.state)?;
        let sec = self.state.link.security.as_ref().ok_or_else(|| {
            ApiError::from(ErrorBody::bad_request(
                "this server does not sign commands, so agents cannot enroll",
            ))
        })?;
        let r = store
            .enroll(&body.name, &body.token, &body.public_key)
            .await;
        match &r {
            Ok(_) => {
                self.state
                    .audit(
                        AuditRecord::http(format!("agent:{}", body.name), "agent.enroll")
                            .agent(Some(body.name.clone()))
                            .outcome("ok"),
                    )
                    .await
            }
            Err(e) => self.enroll_failed(&body.name, e).await,
        }
        let creds = r?;
        sec.forget(&body.name);
        Ok(Json(EnrollResponse {
            name: body.name.clone(),
            mqtt_username: creds.mqtt_username,
            mqtt_password: creds.mqtt_password,
            server_public_key: sec.key.public_hex(),
            brokers: self
                .state
                .advertised
                .get()
                .brokers
                .iter()
                .map(ToString::to_string)
                .collect(),
        }))
    }

    /// A failed enrollment: logged (name escaped), and summarised in the audit log at most once
    /// a minute so that junk requests cannot evict real records.
    async fn enroll_failed(&self, name: &str, e: &crate::store::EnrollError) {
        tracing::info!(agent = ?name, error = ?e.to_string(), "enrollment refused");
        if let Some(n) = self.state.enroll_failures.failed(std::time::Instant::now()) {
            let who = if zedops_proto::names::is_valid_agent_name(name) {
                format!("agent:{name}")
            } else {
                "agent:(invalid name)".to_owned()
            };
            self.state
                .audit(
                    AuditRecord::http(who, "agent.enroll")
                        .outcome("unauthorized")
                        .message(Some(format!(
                            "{n} failed enrollment(s) since the last record; latest: {e}"
                        ))),
                )
                .await;
        }
    }

    /// Create an MQTT user
    ///
    /// For integrations such as Home Assistant: returns a password (shown once). Admin only.
    #[oai(
        path = "/api/v1/mqtt-users",
        method = "post",
        tag = "Tag::Admin",
        operation_id = "create_mqtt_user"
    )]
    async fn create_mqtt_user(&self, auth: Caller, body: Json<NewMqttUser>) -> ApiResult<MqttUser> {
        auth.0.require(Role::Admin)?;
        let store = store(&self.state)?;
        let password = store.create_mqtt_user(&body.name, body.ha_commands).await?;
        self.state
            .audit(
                AuditRecord::http(auth.0.name.clone(), "mqtt_user.create")
                    .outcome("ok")
                    .message(Some(body.name.clone())),
            )
            .await;
        Ok(Json(MqttUser {
            username: body.name.clone(),
            password,
            ha_commands: body.ha_commands,
        }))
    }
}
