//! Who may read what: the access mode, credentials (bearer tokens with scopes, basic auth
//! from an htpasswd file) and the one decision per request.
//!
//! Every route has a [`Need`]: the page and docs, one mailbox (or one message by its id),
//! or something that spans mailboxes. The mode says who may do what:
//!
//! | need | open | public | private |
//! |---|---|---|---|
//! | page, docs | anyone | anyone | any valid credential |
//! | one mailbox: read | anyone | anyone | `read` |
//! | one mailbox: delete | anyone | anyone if `public_delete`, else `delete` | `delete` |
//! | all mail: read (list, search, events, wait) | anyone | `read` | `read` |
//! | all mail: delete (the Mailpit API) | anyone | `delete` | `delete` |
//! | admin | anyone | `admin` | `admin` |
//!
//! `admin` covers every scope. A message id carries 74 random bits, so reading one message
//! by its id counts as reading its mailbox. Without a credential a refused request gets
//! `403` in public mode and `401` with `WWW-Authenticate` in private mode; a wrong credential
//! gets `401`, and too many wrong ones from one address `429` without being checked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::slots::client_ip;

/// Who may use the HTTP side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    /// Everyone may do everything (a developer's mail catcher on loopback).
    Open,
    /// Anyone may use one mailbox by its address; routes over all mail need a credential.
    Public,
    /// Every route needs a credential.
    Private,
}

impl std::str::FromStr for AccessMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(AccessMode::Open),
            "public" => Ok(AccessMode::Public),
            "private" => Ok(AccessMode::Private),
            other => Err(format!(
                "{other:?}: expected \"open\", \"public\" or \"private\""
            )),
        }
    }
}

/// What a credential allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// Read any mail.
    pub const READ: Scopes = Scopes(1);
    /// Delete any mail.
    pub const DELETE: Scopes = Scopes(2);
    /// Everything, user management included.
    pub const ADMIN: Scopes = Scopes(4);

    /// Both sets.
    pub fn union(self, o: Scopes) -> Scopes {
        Scopes(self.0 | o.0)
    }

    /// True when these scopes cover `need` (admin covers all).
    pub fn covers(self, need: Scopes) -> bool {
        self.0 & Scopes::ADMIN.0 != 0 || self.0 & need.0 == need.0
    }

    /// `read`, `delete`, `admin`, separated by commas.
    pub fn parse(text: &str) -> Result<Scopes, String> {
        let mut s = Scopes::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            s = s.union(match part {
                "read" => Scopes::READ,
                "delete" => Scopes::DELETE,
                "admin" => Scopes::ADMIN,
                other => {
                    return Err(format!("{other:?} is not a scope (read, delete, admin)"));
                }
            });
        }
        if s == Scopes::default() {
            return Err("no scope given (read, delete, admin)".into());
        }
        Ok(s)
    }

    fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.covers(Scopes::READ) {
            v.push("read");
        }
        if self.covers(Scopes::DELETE) {
            v.push("delete");
        }
        if self.covers(Scopes::ADMIN) {
            v.push("admin");
        }
        v
    }
}

/// A bearer token: only its SHA-256 is kept.
#[derive(Clone)]
pub struct Token {
    hash: [u8; 32],
    scopes: Scopes,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(<redacted>, {:?})", self.scopes)
    }
}

impl Token {
    /// A token from its secret and scopes.
    pub fn new(secret: &str, scopes: Scopes) -> Token {
        Token {
            hash: Sha256::digest(secret.as_bytes()).into(),
            scopes,
        }
    }

    /// `secret:scope[,scope…]`, e.g. `s3cret:read,delete`.
    pub fn parse(text: &str) -> Result<Token, String> {
        let (secret, scopes) = text
            .rsplit_once(':')
            .ok_or("a token is \"secret:scopes\", e.g. \"s3cret:read\"")?;
        if secret.len() < 6 {
            return Err("a token's secret must be at least 6 characters".into());
        }
        Ok(Token {
            hash: Sha256::digest(secret.as_bytes()).into(),
            scopes: Scopes::parse(scopes)?,
        })
    }
}

/// Access settings.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// The mode.
    pub mode: AccessMode,
    /// Bearer tokens.
    pub tokens: Vec<Token>,
    /// An htpasswd file (bcrypt, argon2, SHA-256/512-crypt lines), re-read when it changes.
    pub htpasswd: Option<PathBuf>,
    /// What a user of the htpasswd file may do.
    pub htpasswd_scopes: Scopes,
    /// Public mode: anonymous clients may delete mail of a mailbox they name.
    pub public_delete: bool,
    /// Wrong credentials allowed per client IP and minute before `429` (0: no limit).
    pub auth_failures_per_minute: u32,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            mode: AccessMode::Open,
            tokens: Vec::new(),
            htpasswd: None,
            htpasswd_scopes: Scopes::READ.union(Scopes::DELETE),
            public_delete: true,
            auth_failures_per_minute: 10,
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// The web page, its assets, the API docs, what-may-I-do.
    Page,
    /// Read one mailbox, or one message by its id.
    MailboxRead,
    /// Delete from one mailbox, or one message by its id.
    MailboxDelete,
    /// Anything that spans mailboxes: list all, search all, watch all.
    AllRead,
    /// Delete across mailboxes (the Mailpit API's delete-all and delete-by-search).
    AllDelete,
    /// User management, and any route not classified below (fail closed).
    Admin,
}

/// The query parameter `key`, percent-decoded.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    crate::model::form_pairs(query?)?
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// A search query scoped to one mailbox (`mailbox:` filter)?
fn one_mailbox_query(query: Option<&str>) -> bool {
    query_param(query, "query")
        .and_then(|q| intake_core::Query::parse(&q).ok())
        .is_some_and(|q| q.mailbox.is_some())
}

/// The need of a route, by method and matched path template. A route missing here needs
/// `admin`: a new route is closed until it is classified (and the access test, which walks
/// the OpenAPI document, fails until its table says what the route needs).
pub(crate) fn classify(method: &Method, template: Option<&str>, query: Option<&str>) -> Need {
    let Some(t) = template else {
        // No route matched: a 404 reveals nothing, except in private mode.
        return Need::Page;
    };
    let get = method == Method::GET || method == Method::HEAD;
    match (t, get, method) {
        ("/", true, _) | ("/assets/{*path}", true, _) => Need::Page,
        (t, true, _) if t == "/api/v1/openapi.json" || t.starts_with("/api/docs") => Need::Page,
        ("/api/v1/access", true, _) => Need::Page,
        ("/metrics", true, _) | ("/healthz", true, _) | ("/readyz", true, _) => Need::Page,
        ("/api/v1/mailboxes/{address}/messages", true, _)
        | ("/api/v1/mailboxes/{address}/alias", true, _) => Need::MailboxRead,
        ("/api/v1/mailboxes/{address}", _, &Method::DELETE) => Need::MailboxDelete,
        ("/api/v1/messages", true, _) => Need::AllRead,
        ("/api/v1/messages/{id}", true, _)
        | ("/api/v1/messages/{id}/raw", true, _)
        | ("/api/v1/messages/{id}/headers", true, _)
        | ("/api/v1/messages/{id}/html", true, _)
        | ("/api/v1/messages/{id}/attachments/{part}", true, _) => Need::MailboxRead,
        ("/api/v1/messages/{id}/read", _, &Method::POST)
        | ("/api/v1/messages/{id}/read", _, &Method::DELETE) => Need::MailboxRead,
        ("/api/v1/messages/{id}", _, &Method::DELETE) => Need::MailboxDelete,
        ("/api/v1/search", true, _) | ("/api/v1/wait", true, _) => {
            if one_mailbox_query(query) {
                Need::MailboxRead
            } else {
                Need::AllRead
            }
        }
        ("/api/v1/events", true, _) => {
            if query_param(query, "mailbox").is_some_and(|m| !m.trim().is_empty()) {
                Need::MailboxRead
            } else {
                Need::AllRead
            }
        }
        _ => Need::Admin,
    }
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    /// No credential where one is needed.
    NeedCredential,
    /// A valid credential without the scope.
    Forbidden,
}

pub(crate) fn decide(cfg: &AccessConfig, need: Need, who: Option<Scopes>) -> Decision {
    let scope = match (cfg.mode, need) {
        (AccessMode::Open, _) => return Decision::Allow,
        (AccessMode::Public, Need::Page | Need::MailboxRead) => return Decision::Allow,
        (AccessMode::Public, Need::MailboxDelete) if cfg.public_delete => return Decision::Allow,
        (AccessMode::Private, Need::Page) => Scopes::default(),
        (_, Need::MailboxRead | Need::AllRead) => Scopes::READ,
        (_, Need::MailboxDelete | Need::AllDelete) => Scopes::DELETE,
        (_, Need::Admin) => Scopes::ADMIN,
    };
    match who {
        None => Decision::NeedCredential,
        Some(s) if s.covers(scope) => Decision::Allow,
        Some(_) => Decision::Forbidden,
    }
}

/// What a request presented.
enum Presented {
    None,
    Bearer(String),
    Basic(String, String),
    Malformed,
}

fn presented(req: &Request) -> Presented {
    let Some(v) = req.headers().get(header::AUTHORIZATION) else {
        return Presented::None;
    };
    let Ok(v) = v.to_str() else {
        return Presented::Malformed;
    };
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Presented::Bearer(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        if let Some((u, p)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            return Presented::Basic(u.to_string(), p.to_string());
        }
    }
    Presented::Malformed
}

/// A bcrypt hash of a random password: checked when the user does not exist, so that an
/// unknown user costs the same time as a wrong password.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let random = uuid_like_random();
    bcrypt::hash(random, bcrypt::DEFAULT_COST).unwrap_or_default()
});

fn uuid_like_random() -> String {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let h = Sha256::digest(format!("{t:?}{:p}", &t));
    base64::engine::general_purpose::STANDARD.encode(h)
}

/// Checks a password against one stored hash (the same schemes as SMTP AUTH users).
/// Slow on purpose for bcrypt and argon2: call it off the async threads.
pub fn verify_password(password: &str, stored: &str) -> bool {
    intake_core::password::verify(stored, password)
}

struct HtLoaded {
    /// Modification time and length of the file as last read.
    stamp: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
    users: HashMap<String, String>,
    /// SHA-256 of `user NUL password` of credentials verified since the last load.
    verified: HashMap<[u8; 32], ()>,
}

/// The htpasswd file, re-read (at most once a second) when it changes.
struct Htpasswd {
    path: PathBuf,
    loaded: Mutex<HtLoaded>,
}

impl Htpasswd {
    fn new(path: PathBuf) -> Self {
        Htpasswd {
            path,
            loaded: Mutex::new(HtLoaded {
                stamp: None,
                checked: None,
                users: HashMap::new(),
                verified: HashMap::new(),
            }),
        }
    }

    fn refresh(&self, l: &mut HtLoaded) {
        let now = Instant::now();
        if l.checked
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        l.checked = Some(now);
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp == l.stamp && l.stamp.is_some() {
            return;
        }
        l.stamp = stamp;
        l.verified.clear();
        l.users.clear();
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                for line in text.lines().map(str::trim) {
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let Some((user, hash)) = line.split_once(':') else {
                        continue;
                    };
                    if !intake_core::password::is_supported(hash) {
                        tracing::warn!(file = %self.path.display(), user,
                            "htpasswd: unsupported hash scheme (use bcrypt, argon2 or SHA-512-crypt); user ignored");
                        continue;
                    }
                    l.users.insert(user.to_string(), hash.to_string());
                }
                tracing::info!(file = %self.path.display(), users = l.users.len(), "htpasswd loaded");
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "htpasswd unreadable: no basic-auth user can log in")
            }
        }
    }

    async fn verify(self: &Arc<Self>, user: &str, password: &str) -> bool {
        let key: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(user.as_bytes());
            h.update([0]);
            h.update(password.as_bytes());
            h.finalize().into()
        };
        let hash = {
            let mut l = self.loaded.lock().expect("htpasswd lock");
            self.refresh(&mut l);
            if l.verified.contains_key(&key) {
                return true;
            }
            l.users.get(user).cloned()
        };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.clone());
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &hash))
            .await
            .unwrap_or(false);
        if ok && known {
            let mut l = self.loaded.lock().expect("htpasswd lock");
            if l.verified.len() > 10_000 {
                l.verified.clear();
            }
            l.verified.insert(key, ());
        }
        ok && known
    }
}

/// Access control state, shared by every request.
/// How a router's routes are classified.
pub(crate) type Classifier = fn(&Method, Option<&str>, Option<&str>) -> Need;

#[derive(Clone)]
pub(crate) struct Guard {
    classify: Classifier,
    cfg: Arc<AccessConfig>,
    htpasswd: Option<Arc<Htpasswd>>,
    failures: Option<crate::ratelimit::Limiter>,
    locked: Arc<Mutex<HashMap<IpAddr, Instant>>>,
}

/// What the request may do, for handlers (`/api/v1/access`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Granted {
    pub scopes: Option<Scopes>,
}

impl Guard {
    pub(crate) fn new(cfg: AccessConfig, classify: Classifier) -> Guard {
        let failures = std::num::NonZeroU32::new(cfg.auth_failures_per_minute)
            .map(|n| crate::ratelimit::keyed(Quota::per_minute(n)));
        Guard {
            classify,
            htpasswd: cfg.htpasswd.clone().map(|p| Arc::new(Htpasswd::new(p))),
            cfg: Arc::new(cfg),
            failures,
            locked: Arc::default(),
        }
    }

    fn token_scopes(&self, presented: &str) -> Option<Scopes> {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every token is compared, in constant time, whatever matched before.
        let mut found = Scopes::default();
        let mut any = subtle::Choice::from(0);
        for t in &self.cfg.tokens {
            let eq = t.hash.ct_eq(&h);
            any |= eq;
            if bool::from(eq) {
                found = t.scopes;
            }
        }
        bool::from(any).then_some(found)
    }

    /// Seconds until `ip` may try credentials again, when it is locked out.
    fn locked_for(&self, ip: IpAddr) -> Option<u64> {
        let mut locked = self.locked.lock().expect("lockout lock");
        let until = *locked.get(&ip)?;
        let now = Instant::now();
        if now >= until {
            locked.remove(&ip);
            return None;
        }
        Some((until - now).as_secs().max(1))
    }

    /// Counts a wrong credential; Some(seconds) when the client is now locked out.
    fn failed(&self, ip: IpAddr) -> Option<u64> {
        let l = self.failures.as_ref()?;
        let Err(not_until) = l.check_key(&ip) else {
            return None;
        };
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let mut locked = self.locked.lock().expect("lockout lock");
        if locked.len() > 100_000 {
            let now = Instant::now();
            locked.retain(|_, t| *t > now);
        }
        locked.insert(ip, Instant::now() + wait);
        Some(wait.as_secs().max(1))
    }
}

fn refuse(status: StatusCode, code: &'static str, message: &str, challenge: bool) -> Response {
    let body = crate::error::ErrorBody {
        error: crate::error::ErrorDetail {
            status: status.as_u16(),
            code,
            message: message.to_string(),
        },
    };
    let mut r = (status, axum::Json(body)).into_response();
    if challenge {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Intake\", charset=\"UTF-8\""),
        );
    }
    r
}

/// The middleware: classify, check the credential, decide.
pub(crate) async fn check(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let mode = g.cfg.mode;
    if mode == AccessMode::Open {
        req.extensions_mut().insert(Granted { scopes: None });
        return next.run(req).await;
    }
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let mut need = (g.classify)(req.method(), template.as_deref(), req.uri().query());
    if template.is_none() && mode == AccessMode::Private {
        need = Need::AllRead;
    }
    let ip = client_ip(req.extensions());
    let who = match presented(&req) {
        Presented::None => None,
        other => {
            if let Some(secs) = g.locked_for(ip) {
                return ApiError::RateLimited(secs).into_response();
            }
            let scopes = match other {
                Presented::Bearer(t) => g.token_scopes(&t),
                Presented::Basic(u, p) => match &g.htpasswd {
                    Some(h) if h.verify(&u, &p).await => Some(g.cfg.htpasswd_scopes),
                    _ => None,
                },
                _ => None,
            };
            match scopes {
                Some(s) => Some(s),
                None => {
                    tracing::info!(client = %ip, "HTTP: wrong credentials");
                    if let Some(secs) = g.failed(ip) {
                        return ApiError::RateLimited(secs).into_response();
                    }
                    return refuse(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "wrong credentials",
                        g.htpasswd.is_some(),
                    );
                }
            }
        }
    };
    match decide(&g.cfg, need, who) {
        Decision::Allow => {
            req.extensions_mut().insert(Granted { scopes: who });
            next.run(req).await
        }
        Decision::NeedCredential if mode == AccessMode::Private => refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server needs a credential (basic auth or a bearer token)",
            g.htpasswd.is_some(),
        ),
        Decision::NeedCredential => refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this route spans all mailboxes (or deletes) and needs a credential; one mailbox is open by its address",
            false,
        ),
        Decision::Forbidden => refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "your credential does not have the scope this route needs",
            false,
        ),
    }
}

/// What this client may do: the web page hides the rest.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessInfo {
    /// The server's access mode.
    pub mode: AccessMode,
    /// A valid credential was presented.
    pub authenticated: bool,
    /// Its scopes.
    pub scopes: Vec<&'static str>,
    /// May list, search and watch all mail.
    pub all_mail: bool,
    /// May delete mail of a mailbox it opens.
    pub delete: bool,
}

impl AccessInfo {
    pub(crate) fn of(cfg: &AccessConfig, g: Option<Granted>) -> AccessInfo {
        let scopes = g.and_then(|g| g.scopes);
        AccessInfo {
            mode: cfg.mode,
            authenticated: scopes.is_some(),
            scopes: scopes.map(Scopes::names).unwrap_or_default(),
            all_mail: decide(cfg, Need::AllRead, scopes) == Decision::Allow,
            delete: decide(cfg, Need::MailboxDelete, scopes) == Decision::Allow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: AccessMode) -> AccessConfig {
        AccessConfig {
            mode,
            ..AccessConfig::default()
        }
    }

    #[test]
    fn tokens_parse_with_scopes_and_never_print_their_secret() {
        let t = Token::parse("s3cret:read,delete").unwrap();
        assert!(t.scopes.covers(Scopes::READ) && t.scopes.covers(Scopes::DELETE));
        assert!(!t.scopes.covers(Scopes::ADMIN));
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(Token::parse("s3cret").is_err());
        assert!(Token::parse("s3cret:write").is_err());
        assert!(Token::parse("abc:read").is_err(), "too short");
        assert!(Token::parse("a:b:c:d:read").is_ok(), "colons in the secret");
    }

    #[test]
    fn admin_covers_everything() {
        assert!(Scopes::ADMIN.covers(Scopes::READ.union(Scopes::DELETE)));
        assert!(!Scopes::READ.covers(Scopes::DELETE));
    }

    #[test]
    fn public_mode_opens_one_mailbox_and_closes_all_mail() {
        let c = cfg(AccessMode::Public);
        assert_eq!(decide(&c, Need::MailboxRead, None), Decision::Allow);
        assert_eq!(decide(&c, Need::MailboxDelete, None), Decision::Allow);
        assert_eq!(decide(&c, Need::AllRead, None), Decision::NeedCredential);
        assert_eq!(
            decide(&c, Need::AllRead, Some(Scopes::DELETE)),
            Decision::Forbidden
        );
        assert_eq!(
            decide(&c, Need::AllRead, Some(Scopes::READ)),
            Decision::Allow
        );
        let no_delete = AccessConfig {
            public_delete: false,
            ..c
        };
        assert_eq!(
            decide(&no_delete, Need::MailboxDelete, None),
            Decision::NeedCredential
        );
    }

    #[test]
    fn private_mode_needs_a_credential_even_for_the_page() {
        let c = cfg(AccessMode::Private);
        assert_eq!(decide(&c, Need::Page, None), Decision::NeedCredential);
        assert_eq!(
            decide(&c, Need::Page, Some(Scopes::DELETE)),
            Decision::Allow
        );
        assert_eq!(
            decide(&c, Need::MailboxRead, Some(Scopes::DELETE)),
            Decision::Forbidden
        );
    }

    #[test]
    fn searches_and_waits_scoped_to_one_mailbox_are_mailbox_reads() {
        let g = Method::GET;
        let q = |s| classify(&g, Some("/api/v1/search"), Some(s));
        assert_eq!(q("query=invoice"), Need::AllRead);
        assert_eq!(q("query=invoice%20mailbox:bob@x.test"), Need::MailboxRead);
        assert_eq!(q("query=mailbox%3Abob%40x.test"), Need::MailboxRead);
        let e = |s| classify(&g, Some("/api/v1/events"), s);
        assert_eq!(e(None), Need::AllRead);
        assert_eq!(e(Some("mailbox=")), Need::AllRead);
        assert_eq!(e(Some("mailbox=bob%40x.test")), Need::MailboxRead);
        assert_eq!(
            classify(&Method::PUT, Some("/api/v1/messages"), None),
            Need::Admin,
            "an unclassified route is closed"
        );
    }

    #[test]
    fn htpasswd_schemes_verify_and_the_dummy_never_does() {
        let sha512 = "$6$saltsalt$8iYtNHxjWRl.NF6oNZ5tF.iKFlQREaXBLlSmZKP6dy9l5z3vsooWNW0/GZ6Nej73/TFug6pIPSqbJoCT6dfnj.";
        let bcrypt = bcrypt::hash("hunter2", 4).unwrap();
        for h in [sha512, bcrypt.as_str()] {
            assert!(intake_core::password::is_supported(h));
            assert!(verify_password("hunter2", h), "{h}");
            assert!(!verify_password("hunter3", h), "{h}");
        }
        assert!(verify_password(
            "hunter2",
            &format!("{{SHA512-CRYPT}}{sha512}")
        ));
        assert!(!intake_core::password::is_supported("plain:hunter2"));
        assert!(!verify_password("x", &DUMMY_HASH));
        assert!(
            bcrypt::verify("x", &DUMMY_HASH).is_ok(),
            "the dummy is a valid hash"
        );
    }
}
