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

/// How a listener writes its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Intake's API: every error under `/api/` is an [`ErrorBody`].
    Json,
    /// The Mailpit listener: the message as plain text, as Mailpit writes its errors.
    PlainText,
}

/// The longest error body rewritten; errors are short, and a longer body is left alone.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// The stable code of an error status without one of its own.
fn code_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        413 => "too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        429 => "rate_limited",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "error",
    }
}

fn is_json(r: &Response) -> bool {
    r.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Rewrites the errors that axum, its extractors and the docs page answer on their own
/// (plain text or empty: a path that is not UTF-8, a duplicated query parameter, a body
/// past the limit, a method the route does not have, a missing docs file) into the
/// listener's [`Dialect`]. Successful responses pass untouched.
pub(crate) async fn uniform(
    dialect: Dialect,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let r = next.run(req).await;
    let status = r.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return r;
    }
    match dialect {
        Dialect::Json if api && !is_json(&r) => {
            let (mut parts, body) = r.into_parts();
            let text = match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
                Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
                Err(_) => String::new(),
            };
            let message = if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_lowercase()
            } else {
                text
            };
            let body = ErrorBody {
                error: ErrorDetail {
                    status: status.as_u16(),
                    code: code_of(status),
                    message,
                },
            };
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let json = serde_json::to_vec(&body).unwrap_or_default();
            Response::from_parts(parts, axum::body::Body::from(json))
        }
        Dialect::PlainText if is_json(&r) => {
            let (mut parts, body) = r.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
                return Response::from_parts(parts, axum::body::Body::empty());
            };
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            Response::from_parts(parts, axum::body::Body::from(message + "\n"))
        }
        _ => r,
    }
}
