//! JSON errors with stable codes: every failure of the HTTP API is
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thinklio_core::{JobError, RuntimeError, StoreError};
use utoipa::ToSchema;

use super::keys::KeyError;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, dotted code (`auth.missing_key`, `session.not_found`, ...).
    pub code: String,
    /// A sentence for people.
    pub message: String,
}

/// An error of the HTTP API.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: String,
    /// The message.
    pub message: String,
    /// Seconds to wait, for `429`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// `400` for a request that does not make sense.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// `404`.
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// `403` for something of another account.
    pub fn wrong_account(what: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "auth.wrong_account",
            format!("this {what} belongs to another account than the API key's"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let status = match &e {
            RuntimeError::EmptyMessage => StatusCode::BAD_REQUEST,
            RuntimeError::MessageTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RuntimeError::UnknownAgent(_) => StatusCode::NOT_FOUND,
            RuntimeError::Forbidden(_) => StatusCode::FORBIDDEN,
            RuntimeError::Store(StoreError::NotFound { .. }) => StatusCode::NOT_FOUND,
            RuntimeError::Store(StoreError::Conflict(_)) => StatusCode::CONFLICT,
            RuntimeError::Job(JobError::Forbidden { .. } | JobError::BadToken { .. }) => {
                StatusCode::FORBIDDEN
            }
            RuntimeError::Job(JobError::Ended { .. }) => StatusCode::CONFLICT,
            RuntimeError::InteractionFailed { .. } | RuntimeError::Model(_) => {
                StatusCode::BAD_GATEWAY
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(code = e.code(), error = %e, "request failed");
        }
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        tracing::error!(error = %e, "API key storage failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "keys.storage",
            e.to_string(),
        )
    }
}
