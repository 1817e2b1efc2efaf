//! The reply envelope and error codes.
//!
//! `{"ok": true, "result": …}` or `{"ok": false, "error": {"code": "…", "message": "…"}}`. Every
//! message is a sentence a user can act on.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Error codes on the wire and in HTTP error bodies.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "snake_case")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    /// Ambiguous reference or conflicting state.
    Conflict,
    DockerError,
    DockerUnavailable,
    Internal,
    /// API side only: the agent's retained status says it is offline.
    AgentOffline,
    /// API side only: no reply before the deadline.
    Timeout,
    /// API side only: this token (or the server) holds as many requests or streams as it may.
    Busy,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::Conflict,
        Self::DockerError,
        Self::DockerUnavailable,
        Self::Internal,
        Self::AgentOffline,
        Self::Timeout,
        Self::Busy,
    ];

    /// The HTTP status the API answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::DockerError => 502,
            Self::DockerUnavailable | Self::AgentOffline => 503,
            Self::Internal => 500,
            Self::Timeout => 504,
            Self::Busy => 429,
        }
    }

    /// The code of an HTTP status that carries no `{code, message}` body (errors of the HTTP
    /// layer itself, a proxy in between): the inverse of [`Self::http_status`], with 503 read as
    /// `agent_offline` and any other status as `bad_request` (4xx) or `internal`.
    pub fn for_status(status: u16) -> Self {
        match status {
            405 => Self::NotFound,
            503 => Self::AgentOffline,
            s => Self::ALL
                .into_iter()
                .find(|c| c.http_status() == s)
                .unwrap_or(if (400..500).contains(&s) {
                    Self::BadRequest
                } else {
                    Self::Internal
                }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::DockerError => "docker_error",
            Self::DockerUnavailable => "docker_unavailable",
            Self::Internal => "internal",
            Self::AgentOffline => "agent_offline",
            Self::Timeout => "timeout",
            Self::Busy => "busy",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{code, message}`: the error body on MQTT and HTTP alike.
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

/// The reply envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Reply {
    pub fn success<T: Serialize>(result: &T) -> Self {
        match serde_json::to_value(result) {
            Ok(v) => Self {
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Self::failure(ErrorBody::internal(format!(
                "could not encode the result: {e}"
            ))),
        }
    }

    pub fn failure(error: ErrorBody) -> Self {
        Self {
            ok: false,
            result: None,
            error: Some(error),
        }
    }

    pub fn from_result<T: Serialize>(r: Result<T, ErrorBody>) -> Self {
        match r {
            Ok(v) => Self::success(&v),
            Err(e) => Self::failure(e),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // A Reply holds only JSON values and strings, which always serialize.
        serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"ok":false,"error":{"code":"internal","message":"could not encode the reply"}}"#.to_vec()
        })
    }

    /// Decodes a reply payload into the op's result type.
    pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ErrorBody> {
        let reply: Reply = serde_json::from_slice(payload).map_err(|e| {
            ErrorBody::internal(format!(
                "the agent sent a reply that is not a zedops reply: {e}"
            ))
        })?;
        reply.into_result()
    }

    pub fn into_result<T: DeserializeOwned>(self) -> Result<T, ErrorBody> {
        if self.ok {
            let value = self.result.unwrap_or(serde_json::Value::Null);
            serde_json::from_value(value).map_err(|e| {
                ErrorBody::internal(format!("the agent's result has an unexpected shape: {e}"))
            })
        } else {
            Err(self.error.unwrap_or_else(|| {
                ErrorBody::internal("the agent reported a failure without an error")
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shapes() {
        let ok = Reply::success(&serde_json::json!({"a": 1}));
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            serde_json::json!({"ok": true, "result": {"a": 1}})
        );
        let err = Reply::failure(ErrorBody::not_found(
            "no container named web-9 on agent maestro",
        ));
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            serde_json::json!({"ok": false, "error": {"code": "not_found", "message": "no container named web-9 on agent maestro"}})
        );
        let back: Result<serde_json::Value, _> = Reply::decode(&err.to_bytes());
        assert_eq!(back.unwrap_err().code, ErrorCode::NotFound);
    }

    #[test]
    fn codes_and_statuses() {
        for code in ErrorCode::ALL {
            let s = serde_json::to_string(&code).unwrap();
            assert_eq!(s, format!("\"{}\"", code.as_str()));
            assert!((400..600).contains(&code.http_status()));
        }
        assert_eq!(ErrorCode::AgentOffline.http_status(), 503);
        assert_eq!(ErrorCode::Timeout.http_status(), 504);
        for code in ErrorCode::ALL {
            let back = ErrorCode::for_status(code.http_status());
            assert_eq!(back.http_status(), code.http_status(), "{code}");
        }
        assert_eq!(ErrorCode::for_status(503), ErrorCode::AgentOffline);
        assert_eq!(ErrorCode::for_status(418), ErrorCode::BadRequest);
        assert_eq!(ErrorCode::for_status(599), ErrorCode::Internal);
    }

    #[test]
    fn garbage_reply_is_an_error() {
        let r: Result<serde_json::Value, _> = Reply::decode(b"\xff\x00");
        assert_eq!(r.unwrap_err().code, ErrorCode::Internal);
    }
}
