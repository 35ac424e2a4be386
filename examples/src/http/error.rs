//! JSON errors with stable codes: every failure of the HTTP API is
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status —
//! requests the API cannot read included ([`ApiJson`], [`ApiQuery`],
//! [`ApiPath`] turn axum's rejections into these). A `500` never carries
//! what went wrong inside: its message gives a reference, and the log line
//! with the same reference has the detail.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thinklio_core::{ApprovalError, JobError, RuntimeError, StoreError};
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

    /// `500`: `detail` goes to the log under a new reference, the body
    /// says only that something failed and gives the reference.
    pub fn internal(code: &str, detail: &dyn std::fmt::Display) -> Self {
        let reference = uuid::Uuid::now_v7().simple().to_string();
        tracing::error!(code, reference = %reference, error = %detail, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code,
            format!("the server failed to answer this request (reference {reference})"),
        )
    }

    /// `403` for a key whose scope does not cover the route.
    pub fn scope(needed: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "auth.scope",
            format!("this route needs an API key of scope `{needed}`"),
        )
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
            RuntimeError::Image(thinklio_core::ImageError::TooLarge { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            RuntimeError::Image(_) => StatusCode::BAD_REQUEST,
            RuntimeError::MessageTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RuntimeError::UnknownAgent(_) | RuntimeError::UnknownTemplate(_) => {
                StatusCode::NOT_FOUND
            }
            RuntimeError::AgentPaused(_) | RuntimeError::AgentArchived(_) => StatusCode::CONFLICT,
            RuntimeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            RuntimeError::Forbidden(_) => StatusCode::FORBIDDEN,
            RuntimeError::Store(StoreError::NotFound { .. }) => StatusCode::NOT_FOUND,
            RuntimeError::Store(StoreError::Conflict(_)) => StatusCode::CONFLICT,
            RuntimeError::Job(JobError::Forbidden { .. } | JobError::BadToken { .. }) => {
                StatusCode::FORBIDDEN
            }
            RuntimeError::Job(JobError::Ended { .. }) => StatusCode::CONFLICT,
            RuntimeError::Job(JobError::NotDispatched { .. }) => StatusCode::BAD_REQUEST,
            RuntimeError::Approval(ApprovalError::InvalidArguments { .. }) => {
                StatusCode::BAD_REQUEST
            }
            RuntimeError::Approval(_) => StatusCode::CONFLICT,
            RuntimeError::InteractionFailed { .. } | RuntimeError::Model(_) => {
                StatusCode::BAD_GATEWAY
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            return Self::internal(e.code().as_str(), &e);
        }
        Self::new(status, e.code().as_str(), e.to_string())
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        Self::internal("keys.storage", &e)
    }
}

/// A JSON body, or a JSON error saying why it could not be read: `400
/// request.bad_json` (not JSON, or not the expected shape), `413
/// request.too_large` (over the body limit), `415 request.not_json`.
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Query parameters, or `400 request.bad_query`.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Path parameters, or `400 request.bad_path`.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request.not_json",
                "the body must be JSON (Content-Type: application/json)",
            ),
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request.too_large",
                    "the body is larger than this server accepts",
                )
            }
            other => Self::bad_request("request.bad_json", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request("request.bad_query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request("request.bad_path", r.body_text())
    }
}
