//! The API's one error type: every error body is `{code, message}`, with the status of `docs/protocol.md` § Error codes.
//! Errors raised by poem itself (a malformed query, an unknown route) are turned into the same
//! shape in [`json_errors`].

use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::ApiResponse;
use zedops_proto::{ErrorBody, ErrorCode};

#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is invalid: a bad name, action or parameter (`bad_request`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid token (`unauthorized`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The token's role does not allow this (`forbidden`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// Unknown agent or container (`not_found`).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// Ambiguous container reference or conflicting state (`conflict`).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// This token, or the server, already holds as many requests to agents or event streams as it
    /// may; retry when one finishes (`busy`).
    #[oai(status = 429)]
    Busy(Json<ErrorBody>),
    /// A failure inside zedops (`internal`).
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// Docker refused or failed the operation (`docker_error`).
    #[oai(status = 502)]
    BadGateway(Json<ErrorBody>),
    /// The agent is offline or its Docker engine is unavailable (`agent_offline`, `docker_unavailable`).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
    /// The agent did not answer before the deadline (`timeout`).
    #[oai(status = 504)]
    Timeout(Json<ErrorBody>),
}

impl From<ErrorBody> for ApiError {
    /// The variant of the code's status: the one mapping of codes to statuses is
    /// [`ErrorCode::http_status`].
    fn from(e: ErrorBody) -> Self {
        let j = Json(e);
        match j.0.code.http_status() {
            400 => Self::BadRequest(j),
            401 => Self::Unauthorized(j),
            403 => Self::Forbidden(j),
            404 => Self::NotFound(j),
            409 => Self::Conflict(j),
            429 => Self::Busy(j),
            502 => Self::BadGateway(j),
            503 => Self::Unavailable(j),
            504 => Self::Timeout(j),
            _ => Self::Internal(j),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ErrorBody::new(e.code(), e.to_string()).into()
    }
}

impl From<crate::store::EnrollError> for ApiError {
    fn from(e: crate::store::EnrollError) -> Self {
        use crate::store::EnrollError;
        match e {
            EnrollError::Store(e) => e.into(),
            EnrollError::BadRequest(m) => ErrorBody::bad_request(m).into(),
            other => ErrorBody::new(ErrorCode::Unauthorized, other.to_string()).into(),
        }
    }
}

pub type ApiResult<T> = Result<Json<T>, ApiError>;

/// Turns any poem error without a JSON body into `{code, message}` with the same status.
pub async fn json_errors(err: poem::Error) -> Response {
    let resp = err.into_response();
    let is_json = resp
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let status = resp.status();
    let text = resp.into_body().into_string().await.unwrap_or_default();
    let message = match (status.as_u16(), text.trim()) {
        (404, _) => "no such route: see /docs for the API".to_owned(),
        (405, _) => "this method is not allowed on this route: see /docs for the API".to_owned(),
        (_, "") => status.canonical_reason().unwrap_or("error").to_owned(),
        (_, t) => t.to_owned(),
    };
    error_response(status, &message)
}

/// A `{code, message}` error response with `status`.
pub fn error_response(status: poem::http::StatusCode, message: &str) -> Response {
    let body = ErrorBody::new(ErrorCode::for_status(status.as_u16()), message);
    Json(body).with_status(status).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_answers_its_status() {
        for code in ErrorCode::ALL {
            let r = ApiError::from(ErrorBody::new(code, "x")).into_response();
            assert_eq!(r.status().as_u16(), code.http_status(), "{code}");
        }
    }
}
