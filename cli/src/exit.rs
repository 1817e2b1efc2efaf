//! Exit codes, stable for scripts: 0 ok, 1 error, 2 usage, 3 not found, 4 agent offline,
//! unavailable or busy (retry later), 5 timeout, 6 auth.

use zedops_client::ClientError;
use zedops_proto::ErrorCode;

pub const OK: u8 = 0;
pub const ERROR: u8 = 1;
pub const USAGE: u8 = 2;
pub const NOT_FOUND: u8 = 3;
pub const UNAVAILABLE: u8 = 4;
pub const TIMEOUT: u8 = 5;
pub const AUTH: u8 = 6;

/// An error that carries its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, message)
    }
}

/// The exit code for an error: its own when it carries one, that of its API error code for a
/// client error, else 1.
pub fn code_of(e: &anyhow::Error) -> u8 {
    if let Some(x) = e.downcast_ref::<Exit>() {
        return x.code;
    }
    if let Some(zedops_agent::AgentError::Refused(_)) = e.downcast_ref() {
        return AUTH;
    }
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Api { body, .. }) => for_code(body.code),
        Some(ClientError::Timeout { .. }) => TIMEOUT,
        Some(ClientError::Config(_)) => USAGE,
        _ => ERROR,
    }
}

/// The exit code of an API error code.
pub fn for_code(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::Unauthorized | ErrorCode::Forbidden => AUTH,
        ErrorCode::NotFound => NOT_FOUND,
        ErrorCode::AgentOffline | ErrorCode::DockerUnavailable | ErrorCode::Busy => UNAVAILABLE,
        ErrorCode::Timeout => TIMEOUT,
        ErrorCode::BadRequest => USAGE,
        ErrorCode::Conflict | ErrorCode::DockerError | ErrorCode::Internal => ERROR,
    }
}

/// The message of an error as the user reads it, with a hint where the cause is likely ours.
pub fn message_of(e: &anyhow::Error) -> String {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Unreachable { .. }) => {
            format!("{e:#} (is `zedops serve` running? set --server or ZEDOPS_SERVER)")
        }
        _ => format!("{e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zedops_proto::ErrorBody;

    fn api(status: u16, code: ErrorCode) -> anyhow::Error {
        ClientError::Api {
            status,
            body: ErrorBody::new(code, "m"),
        }
        .into()
    }

    #[test]
    fn error_codes() {
        assert_eq!(code_of(&api(404, ErrorCode::NotFound)), NOT_FOUND);
        assert_eq!(code_of(&api(503, ErrorCode::AgentOffline)), UNAVAILABLE);
        assert_eq!(code_of(&api(429, ErrorCode::Busy)), UNAVAILABLE);
        assert_eq!(code_of(&api(504, ErrorCode::Timeout)), TIMEOUT);
        assert_eq!(code_of(&api(401, ErrorCode::Unauthorized)), AUTH);
        assert_eq!(code_of(&api(400, ErrorCode::BadRequest)), USAGE);
        assert_eq!(code_of(&api(500, ErrorCode::Internal)), ERROR);
        let e = ClientError::Timeout { server: "s".into() }.into();
        assert_eq!(code_of(&e), TIMEOUT);
        let e = ClientError::Unreachable {
            server: "http://x".into(),
            cause: "refused".into(),
        }
        .into();
        assert_eq!(code_of(&e), ERROR);
        assert!(message_of(&e).contains("is `zedops serve` running?"));
    }
}
