//! The driver's one error type. [`ErrorBody`] (the wire's `{code, message}`) is made from it in
//! one place.

use super::*;

/// What the driver fails with; [`ErrorBody`] (the wire's `{code, message}`) is made from it in one
/// place, `From<DriverError> for ErrorBody`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    /// Docker answered with an error status.
    #[error("Docker refused to {what} on agent {agent}: {message}")]
    Refused {
        what: String,
        agent: String,
        status: u16,
        message: String,
    },
    #[error("Docker on agent {agent} sent an unexpected answer to {what}: {detail}")]
    Unexpected {
        what: String,
        agent: String,
        detail: String,
    },
    #[error("Docker on agent {agent} did not finish {what} within {limit:?}")]
    TimedOut {
        what: String,
        agent: String,
        limit: Duration,
    },
    /// The engine cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
    /// Ambiguous reference, or a state the action does not apply to.
    #[error("{0}")]
    Conflict(String),
}

impl From<DriverError> for ErrorBody {
    fn from(e: DriverError) -> Self {
        let code = match &e {
            DriverError::Refused { status: 404, .. } | DriverError::NotFound(_) => {
                ErrorCode::NotFound
            }
            DriverError::Refused { status: 409, .. } | DriverError::Conflict(_) => {
                ErrorCode::Conflict
            }
            DriverError::Refused { status: 400, .. } => ErrorCode::BadRequest,
            DriverError::Refused { .. }
            | DriverError::Unexpected { .. }
            | DriverError::TimedOut { .. } => ErrorCode::DockerError,
            DriverError::Unavailable(_) => ErrorCode::DockerUnavailable,
        };
        ErrorBody::new(code, e.to_string())
    }
}
