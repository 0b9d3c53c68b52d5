//! Every API error is JSON `{"code": ..., "message": ...}` with a stable code.
//!
//! Building a response is all this module does: logging and metrics read the
//! [`ApiError`] a response carries in its extensions, in the router's
//! middleware.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error_chain::error_chain;
use crate::host::HostError;
use crate::runtime::GuestFault;
use crate::store::StoreError;

/// An error response.
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    /// Stable, machine-readable.
    pub code: &'static str,
    /// For humans.
    pub message: String,
    /// For the log only: what caused the error, where the message leaves
    /// it out (a store outage's backend error).
    #[serde(skip)]
    cause: Option<String>,
}

impl ApiError {
    /// An error with its status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            cause: None,
        }
    }

    /// 400 for a request the API cannot read.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl From<HostError> for ApiError {
    fn from(error: HostError) -> Self {
        let status = match &error {
            HostError::InvalidName(_) | HostError::InvalidPayload { .. } | HostError::Load(_) => {
                StatusCode::BAD_REQUEST
            }
            HostError::NoHandler { .. }
            | HostError::NoProjection { .. }
            | HostError::Rollback(_) => StatusCode::NOT_FOUND,
            HostError::Rejected { .. } | HostError::CommandIdReused { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            HostError::Conflict { .. } | HostError::RouteConflict(_) => StatusCode::CONFLICT,
            HostError::NotGranted { .. } => StatusCode::FORBIDDEN,
            HostError::Store(StoreError::InvalidName(_)) => StatusCode::BAD_REQUEST,
            HostError::Guest(GuestFault::Instantiation { .. } | GuestFault::Busy { .. })
            | HostError::Store(StoreError::Unavailable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            HostError::HandlerFailed { .. }
            | HostError::InvalidOutput { .. }
            | HostError::Guest(_)
            | HostError::Repository(_)
            | HostError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut answer = ApiError::new(status, error.code(), error.to_string());
        if let HostError::Store(StoreError::Unavailable { source, .. }) = &error {
            answer.cause = Some(error_chain(source.as_ref()));
        }
        answer
    }
}

impl ApiError {
    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What caused it, for the log, where the message leaves it out.
    pub(super) fn cause(&self) -> Option<&str> {
        self.cause.as_deref()
    }
}

/// The response carries its error in its extensions, for the middleware
/// that logs and counts.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(&self)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response.extensions_mut().insert(self);
        response
    }
}
