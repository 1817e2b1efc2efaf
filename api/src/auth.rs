//! API authentication: bearer tokens with roles. `viewer` reads, `operator` also acts on
//! containers, `admin` also manages tokens and agents and reads the audit log.
//!
//! Every operation takes a [`Caller`] (the OpenAPI security scheme); its checker verifies the
//! token against the [`Store`](crate::store::Store). A server started without a store (tests,
//! `--no-auth`) treats every caller as an anonymous admin: [`open_access`] fills in the header so
//! that the same checker runs.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::payload::Json;
use poem_openapi::SecurityScheme;
use zedops_proto::{ErrorBody, ErrorCode};

use crate::error::ApiError;
use crate::State;

pub use zedops_proto::http::Role;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// False when the server runs without tokens.
    pub authenticated: bool,
}

impl Principal {
    /// 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            return Ok(());
        }
        Err(ErrorBody::new(
            ErrorCode::Forbidden,
            format!(
                "token {} has the role {}; this needs {} (ask an admin for a token with that role)",
                self.name,
                self.role.as_str(),
                role.as_str()
            ),
        )
        .into())
    }
}

/// An API token: `Authorization: Bearer zdt_…`.
#[derive(SecurityScheme)]
#[oai(
    ty = "bearer",
    bearer_format = "zdt_<name>_<secret>",
    checker = "check"
)]
pub struct Caller(pub Principal);

fn unauthorized(message: &str) -> poem::Error {
    poem::Error::from_response(
        Json(ErrorBody::new(ErrorCode::Unauthorized, message))
            .with_status(StatusCode::UNAUTHORIZED)
            .into_response(),
    )
}

/// The external broker asking the hook (`POST /api/v1/broker/…`): `Authorization: Bearer` with
/// the secret of `zedops serve --broker-auth-hook-secret`, which the broker's auth plugin sends
/// (rmqtt-auth-http: `http_headers.authorization`).
#[derive(SecurityScheme)]
#[oai(
    ty = "bearer",
    bearer_format = "the hook secret",
    checker = "check_broker"
)]
pub struct BrokerCaller(pub ());

async fn check_broker(req: &Request, bearer: poem_openapi::auth::Bearer) -> poem::Result<()> {
    let hook = req.data::<Arc<State>>().and_then(|s| s.broker_hook.get());
    match hook {
        None => Err(not_the_hook()),
        Some(h) if crate::store::proves(&h.secret_hash, &bearer.token) => Ok(()),
        Some(_) => Err(unauthorized(
            "wrong broker hook secret: the broker's auth plugin must send `Authorization: Bearer <the secret of --broker-auth-hook-secret>`",
        )),
    }
}

fn not_the_hook() -> poem::Error {
    poem::Error::from_response(
        Json(ErrorBody::not_found(
            "this server is not its broker's authentication hook (start it with --broker-auth-hook)",
        ))
        .with_status(StatusCode::NOT_FOUND)
        .into_response(),
    )
}

/// Marker token used when the server runs without authentication.
const OPEN: &str = "zedops-open-access";

async fn check(req: &Request, bearer: poem_openapi::auth::Bearer) -> poem::Result<Principal> {
    let state = req
        .data::<Arc<State>>()
        .ok_or_else(|| unauthorized("the server is not configured for authentication"))?;
    match &state.store {
        None => Ok(Principal {
            name: "anonymous".into(),
            role: Role::Admin,
            authenticated: false,
        }),
        Some(store) => match store.verify(&bearer.token).await {
            Some(rec) => Ok(Principal {
                name: rec.name,
                role: rec.role,
                authenticated: true,
            }),
            None => Err(unauthorized(
                "this token is not valid (unknown, revoked or mistyped): use a token from `zedops token create` or the admin token file",
            )),
        },
    }
}

/// The route that takes no token: enrollment (its token is the credential).
fn tokenless(path: &str) -> bool {
    path == "/api/v1/enroll"
}

/// Before the operations run: with no store, give every request the open-access token; with a
/// store, answer a missing token on `/api/` with a 401 that says what to do. The broker's hook
/// takes its own secret, not a token: 404 while it is off, a 401 that says what to send when the
/// header is missing.
pub async fn open_access<E: Endpoint>(ep: Arc<E>, mut req: Request) -> poem::Result<Response> {
    let has_auth = req
        .headers()
        .contains_key(poem::http::header::AUTHORIZATION);
    let state = req.data::<Arc<State>>();
    let open = state.is_some_and(|s| s.store.is_none());
    if req.uri().path().starts_with("/api/v1/broker/") {
        if state.is_none_or(|s| s.broker_hook.get().is_none()) {
            return Err(not_the_hook());
        }
        if !has_auth {
            return Err(unauthorized(
                "the broker hook needs `Authorization: Bearer <the secret of --broker-auth-hook-secret>`: set it in the broker's auth plugin (rmqtt-auth-http: http_headers.authorization)",
            ));
        }
    } else if open {
        if let Ok(v) = format!("Bearer {OPEN}").parse() {
            req.headers_mut()
                .insert(poem::http::header::AUTHORIZATION, v);
        }
    } else if !has_auth && req.uri().path().starts_with("/api/") && !tokenless(req.uri().path()) {
        return Err(unauthorized(
            "this server requires an API token: send `Authorization: Bearer <token>` (the CLI reads it from --token, ZEDOPS_TOKEN or `zedops login`)",
        ));
    }
    ep.call(req).await.map(IntoResponse::into_response)
}
