//! The client's one error type.

use zedops_proto::{ErrorBody, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error: its status and `{code, message}` body (a body that is
    /// not one is turned into one from the status).
    #[error("{}", body.message)]
    Api { status: u16, body: ErrorBody },
    /// No answer before the deadline.
    #[error("{server} did not answer in time")]
    Timeout { server: String },
    /// The server cannot be reached (refused, DNS, TLS); `cause` is the innermost error.
    #[error("cannot reach the zedops server at {server}: {cause}")]
    Unreachable { server: String, cause: String },
    /// The server answered 2xx with something that is not the expected JSON.
    #[error("{url} answered with something that is not the expected JSON: {cause}")]
    Decode { url: String, cause: String },
    /// The client was set up wrongly: a server URL that is not http(s), an unreadable CA file.
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// The error code of an API error; `None` for errors that never reached the API.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { body, .. } => Some(body.code),
            _ => None,
        }
    }

    /// An API error from a status and a body that may or may not be `{code, message}`.
    pub(crate) fn from_answer(status: u16, body: &[u8]) -> Self {
        let body = serde_json::from_slice::<ErrorBody>(body).unwrap_or_else(|_| {
            ErrorBody::new(
                ErrorCode::for_status(status),
                format!("the server answered HTTP {status}"),
            )
        });
        Self::Api { status, body }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_and_bare_statuses() {
        let e = ClientError::from_answer(
            404,
            br#"{"code":"not_found","message":"no container named x on agent m"}"#,
        );
        assert_eq!(e.code(), Some(ErrorCode::NotFound));
        assert_eq!(e.to_string(), "no container named x on agent m");
        let e = ClientError::from_answer(500, b"oops");
        assert_eq!(e.code(), Some(ErrorCode::Internal));
        assert_eq!(e.to_string(), "the server answered HTTP 500");
        assert_eq!(
            ClientError::from_answer(429, b"").code(),
            Some(ErrorCode::Busy)
        );
    }
}
