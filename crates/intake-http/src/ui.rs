//! The web inbox: static assets embedded in the binary (read from disk in debug builds),
//! served with a strict Content-Security-Policy. Message HTML is never part of this page: it
//! is shown in a sandboxed iframe from `/api/v1/messages/{id}/html`.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::AppState;
use crate::access::{Need, Routes};
use crate::error::ApiError;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// The page's own policy: only our scripts and styles, frames only from us.
pub(crate) const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     frame-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

fn asset(path: &str) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::NotFound(format!("no asset {path}")).into_response();
    };
    let h = page_headers(
        content_type_value(file.metadata.mimetype()),
        HeaderValue::from_static(PAGE_CSP),
        "no-cache",
    );
    (h, file.data.into_owned()).into_response()
}

/// The headers of a page: its type and content security policy, no sniffing, no referrer,
/// and `cache_control`.
pub(crate) fn page_headers(
    content_type: HeaderValue,
    csp: HeaderValue,
    cache_control: &'static str,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    h
}

pub(crate) fn routes() -> Routes<AppState> {
    Routes::new()
        .on(Method::GET, "/", Need::Page, || async {
            asset("index.html")
        })
        .on(
            Method::GET,
            "/assets/{*path}",
            Need::Page,
            |Path(p): Path<String>| async move { asset(&p) },
        )
}

/// CORS for the API, when origins are configured.
pub(crate) fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([header::CONTENT_TYPE]),
    )
}

/// `content_type` as a header value; `application/octet-stream` where it cannot be one.
pub(crate) fn content_type_value(content_type: &str) -> HeaderValue {
    HeaderValue::from_str(content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// The headers for content from a message, served from our origin: its type, and never
/// run (a sandbox) nor sniffed by a browser.
pub(crate) fn sandboxed(content_type: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, content_type_value(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    h
}
