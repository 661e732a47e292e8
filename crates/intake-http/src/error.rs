//! API errors: the one place that picks the status and what the client sees.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use intake_core::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// Everything a handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed (bad id, query, page, timeout).
    BadRequest(String),
    /// 404: no such message, part or route.
    NotFound(String),
    /// 408: `/wait` found nothing in time.
    Timeout(String),
    /// 413: the request body is over the limit.
    TooLarge(String),
    /// 429: over the client's rate; seconds until it may retry.
    RateLimited(u64),
    /// 429: the client holds as many event streams and waits as it may.
    TooManyStreams(usize),
    /// 500: our failure; the detail goes to the log only.
    Internal(String),
}

/// The error document.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The HTTP status, repeated.
    pub status: u16,
    /// Stable machine-readable code: bad_request, not_found, timeout, too_large,
    /// rate_limited, too_many_streams, internal.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadQuery(q) => ApiError::BadRequest(format!("query: {q}")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Timeout(m) => (StatusCode::REQUEST_TIMEOUT, "timeout", m),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
            ApiError::RateLimited(secs) => {
                let body = ErrorBody {
                    error: ErrorDetail {
                        status: 429,
                        code: "rate_limited",
                        message: format!("too many requests; retry in {secs} s"),
                    },
                };
                let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                return r;
            }
            ApiError::TooManyStreams(max) => {
                let body = ErrorBody {
                    error: ErrorDetail {
                        status: 429,
                        code: "too_many_streams",
                        message: format!(
                            "at most {max} event streams and waits per client address; close one first"
                        ),
                    },
                };
                let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(5));
                return r;
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "API request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the server log".into(),
                )
            }
        };
        let body = ErrorBody {
            error: ErrorDetail {
                status: status.as_u16(),
                code,
                message,
            },
        };
        (status, Json(body)).into_response()
    }
}
