//! The admin API for SMTP AUTH users (`/api/v1/admin/users`), behind a bearer token.
//!
//! Kept apart from the read API: its own routes ([`routes`]) and its own OpenAPI document
//! (`/api/v1/admin/openapi.json`). Every route declares the `admin` need, so the access
//! guard opens it to a credential with the `admin` scope (an `admin.tokens` token, or an
//! `http.tokens` token with that scope), in every access mode; with no such credential
//! configured the routes answer 404, as if they did not exist. Passwords are hashed
//! (argon2id) off the async runtime and never returned.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use intake_core::User;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::routes;

use crate::AppState;
use crate::access::{Need, Routes};
use crate::error::{ApiError, ErrorBody, ErrorDetail};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Intake admin API",
        description = "Manage the users who may log in with SMTP AUTH. Bearer token from `admin.tokens`."
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth)
)]
struct AdminDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Request bodies of the admin routes: a user and a password hash fit well within this.
pub(crate) const MAX_BODY: usize = 16 * 1024;

/// The admin routes, each needing the `admin` scope, and their document (built when it is
/// asked for, see [`Routes`]).
pub(crate) fn routes() -> Routes<AppState> {
    register(Routes::new()).on(
        Method::GET,
        "/api/v1/admin/openapi.json",
        Need::Admin,
        || async { crate::docs::json(&DOC, doc) },
    )
}

static DOC: std::sync::OnceLock<axum::body::Bytes> = std::sync::OnceLock::new();

fn doc() -> utoipa::openapi::OpenApi {
    register(Routes::documented(AdminDoc::openapi())).into_doc()
}

fn register(routes: Routes<AppState>) -> Routes<AppState> {
    routes
        .api(Need::Admin, routes!(list_users, add_user))
        .api(Need::Admin, routes!(set_password))
        .api(Need::Admin, routes!(set_enabled))
}

fn error(status: StatusCode, code: &'static str, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            status: status.as_u16(),
            code,
            message: message.into(),
        },
    };
    (status, Json(body)).into_response()
}

/// A user as the API shows it (never the hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// The login (lower-cased address).
    pub address: String,
    /// Whether the user may log in.
    pub enabled: bool,
    /// Other envelope senders the user may use (`a@example.com`, `@example.com`).
    pub senders: Vec<String>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            address: u.address,
            enabled: u.enabled,
            senders: u.senders,
        }
    }
}

/// A new user: a password (hashed with argon2id) or an existing hash to import.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewUser {
    /// The login: the user's address.
    pub address: String,
    /// The password.
    #[serde(default)]
    pub password: Option<String>,
    /// Or an existing hash (argon2, bcrypt, SHA-512-crypt, Dovecot `{SCHEME}hash`).
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Other envelope senders the user may use.
    #[serde(default)]
    pub senders: Vec<String>,
}

/// A new password or hash.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewPassword {
    /// The password.
    #[serde(default)]
    pub password: Option<String>,
    /// Or an existing hash.
    #[serde(default)]
    pub password_hash: Option<String>,
}

/// Enabled or not.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Enabled {
    /// Whether the user may log in.
    pub enabled: bool,
}

/// The hash to store: a password hashed off the runtime, or an imported hash checked for
/// a scheme AUTH can verify.
async fn hash_of(password: Option<String>, hash: Option<String>) -> Result<String, Response> {
    match (password, hash) {
        (Some(p), None) if !p.is_empty() => {
            tokio::task::spawn_blocking(move || intake_core::password::hash(&p))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()).into_response())
        }
        (None, Some(h)) => {
            let bare = h.split_once('}').map(|(_, b)| b).unwrap_or(&h);
            let plain = h.starts_with('{') && !bare.starts_with('$');
            if plain || !bare.starts_with('$') {
                return Err(ApiError::BadRequest(
                    "password_hash: not a hash Intake can verify".into(),
                )
                .into_response());
            }
            Ok(h)
        }
        _ => Err(ApiError::BadRequest(
            "give either a non-empty password or a password_hash".into(),
        )
        .into_response()),
    }
}

/// Every user.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin",
    security(("admin_token" = [])),
    responses((status = 200, body = [UserView]), (status = 401, body = ErrorBody)))]
async fn list_users(State(a): State<AppState>) -> Result<Json<Vec<UserView>>, ApiError> {
    let users = a.users.user_list().await?;
    Ok(Json(users.into_iter().map(UserView::from).collect()))
}

/// Adds a user; the next SMTP AUTH sees it.
#[utoipa::path(post, path = "/api/v1/admin/users", tag = "admin", request_body = NewUser,
    security(("admin_token" = [])),
    responses((status = 201, body = UserView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn add_user(State(a): State<AppState>, Json(n): Json<NewUser>) -> Response {
    let address = n.address.trim().to_lowercase();
    if !address.contains('@') || address.contains(char::is_whitespace) {
        return ApiError::BadRequest("address: expected user@example.com".into()).into_response();
    }
    if n.senders
        .iter()
        .any(|s| !s.contains('@') || s.contains(char::is_whitespace))
    {
        return ApiError::BadRequest("senders: addresses or @domains".into()).into_response();
    }
    let hash = match hash_of(n.password, n.password_hash).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let user = User {
        address: address.clone(),
        password_hash: hash,
        enabled: true,
        senders: n.senders.iter().map(|s| s.trim().to_lowercase()).collect(),
    };
    match a.users.user_add(user.clone()).await {
        Ok(true) => (StatusCode::CREATED, Json(UserView::from(user))).into_response(),
        Ok(false) => error(StatusCode::CONFLICT, "conflict", "the user exists already"),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Replaces a user's password.
#[utoipa::path(put, path = "/api/v1/admin/users/{address}/password", tag = "admin",
    request_body = NewPassword, security(("admin_token" = [])),
    params(("address" = String, Path, description = "The user's address")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn set_password(
    State(a): State<AppState>,
    Path(address): Path<String>,
    Json(n): Json<NewPassword>,
) -> Response {
    let hash = match hash_of(n.password, n.password_hash).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    match a.users.user_set_password(&address, &hash).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => ApiError::NotFound("no such user".into()).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Enables or disables a user (a disabled user cannot log in).
#[utoipa::path(put, path = "/api/v1/admin/users/{address}/enabled", tag = "admin",
    request_body = Enabled, security(("admin_token" = [])),
    params(("address" = String, Path, description = "The user's address")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_enabled(
    State(a): State<AppState>,
    Path(address): Path<String>,
    Json(e): Json<Enabled>,
) -> Response {
    match a.users.user_set_enabled(&address, e.enabled).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => ApiError::NotFound("no such user".into()).into_response(),
        Err(err) => ApiError::from(err).into_response(),
    }
}
