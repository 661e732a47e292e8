//! The access guard: one middleware per listener that finds what the matched route
//! declared ([`Rules`]), checks the credential (with failed attempts counted by the shared
//! [`LoginLimiter`]) and decides. A route that declared nothing needs `admin`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use intake_core::{FailureLimit, LoginLimiter, LoginLimits};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::htpasswd::Htpasswd;
use super::routes::Rules;
use super::{AccessConfig, AccessMode, Decision, Need, Scopes, decide};
use crate::error::ApiError;
use crate::slots::client_ip;

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

/// Credentials and their failure counts: built once per process (in the HTTP state) and
/// shared by every listener, so a guesser has one budget across the API and Mailpit.
#[derive(Clone)]
pub(crate) struct Guard {
    cfg: Arc<AccessConfig>,
    htpasswd: Option<Arc<Htpasswd>>,
    failures: Option<Arc<LoginLimiter>>,
    /// Some credential can open `admin` routes; without one they answer 404.
    admin_possible: bool,
}

/// The outcome of a login outside HTTP ([`crate::AppState::login`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// A token or an htpasswd user with these scopes.
    Valid(Scopes),
    /// A known user with a wrong password, or a client over its failed-login limit.
    Wrong,
    /// Neither a token nor a known user.
    Unknown,
}

/// What the request may do, for handlers (`/api/v1/access`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Granted {
    pub scopes: Option<Scopes>,
}

impl Guard {
    /// The failed-login limiter, if `auth_failures_per_minute` is set.
    pub(crate) fn login_limiter(&self) -> Option<Arc<LoginLimiter>> {
        self.failures.clone()
    }

    pub(crate) fn new(cfg: AccessConfig) -> Guard {
        let failures = (cfg.auth_failures_per_minute > 0).then(|| {
            let limit = FailureLimit {
                max_failures: cfg.auth_failures_per_minute,
                window: std::time::Duration::from_secs(60),
            };
            Arc::new(LoginLimiter::new(LoginLimits::new(limit, limit)))
        });
        let admin_possible = cfg.tokens.iter().any(|t| t.scopes.covers(Scopes::ADMIN))
            || (cfg.htpasswd.is_some() && cfg.htpasswd_scopes.covers(Scopes::ADMIN));
        Guard {
            htpasswd: cfg.htpasswd.clone().map(|p| Arc::new(Htpasswd::new(p))),
            cfg: Arc::new(cfg),
            failures,
            admin_possible,
        }
    }

    /// The settings.
    pub(crate) fn config(&self) -> &AccessConfig {
        &self.cfg
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

    /// The scopes of the credential presented: `Ok(None)` for none, `Err` with the
    /// response when it is wrong or its client has failed too often.
    async fn credential(
        &self,
        presented: Presented,
        ip: IpAddr,
    ) -> Result<Option<Scopes>, Response> {
        let account = match &presented {
            Presented::None => return Ok(None),
            Presented::Basic(u, _) => Some(u.as_str()),
            _ => None,
        };
        if let Some(l) = &self.failures
            && let Err(wait) = l.admit(ip, account).await
        {
            return Err(ApiError::RateLimited(wait.as_secs().max(1)).into_response());
        }
        let scopes = match &presented {
            Presented::Bearer(t) => self.token_scopes(t),
            Presented::Basic(u, p) => match &self.htpasswd {
                Some(h) if h.verify(u, p).await => Some(self.cfg.htpasswd_scopes),
                _ => None,
            },
            _ => None,
        };
        match scopes {
            Some(s) => Ok(Some(s)),
            None => {
                tracing::info!(client = %ip, "HTTP: wrong credentials");
                if let Some(l) = &self.failures {
                    l.failed(ip, account);
                }
                Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "wrong credentials",
                    self.challenge(),
                ))
            }
        }
    }

    /// A login outside HTTP (POP3): a token given as the password (any user name), or an
    /// htpasswd user, under the same failed-login limits as HTTP's basic auth.
    pub(crate) async fn login(&self, user: &str, password: &str, ip: IpAddr) -> Login {
        if let Some(l) = &self.failures
            && l.admit(ip, Some(user)).await.is_err()
        {
            return Login::Wrong;
        }
        if let Some(scopes) = self.token_scopes(password) {
            return Login::Valid(scopes);
        }
        let Some(h) = &self.htpasswd else {
            return Login::Unknown;
        };
        if h.verify(user, password).await {
            return Login::Valid(self.cfg.htpasswd_scopes);
        }
        if !h.knows(user) {
            return Login::Unknown;
        }
        tracing::info!(client = %ip, user, "wrong password");
        if let Some(l) = &self.failures {
            l.failed(ip, Some(user));
        }
        Login::Wrong
    }

    /// The challenge a refusal carries: basic auth when there are users to log in as.
    fn challenge(&self) -> Option<&'static str> {
        self.htpasswd
            .is_some()
            .then_some("Basic realm=\"Intake\", charset=\"UTF-8\"")
    }
}

fn refuse(
    status: StatusCode,
    code: &'static str,
    message: &str,
    challenge: Option<&'static str>,
) -> Response {
    let body = crate::error::ErrorBody {
        error: crate::error::ErrorDetail {
            status: status.as_u16(),
            code,
            message: message.to_string(),
        },
    };
    let mut r = (status, axum::Json(body)).into_response();
    if let Some(c) = challenge {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
    }
    r
}

/// The guard of one listener: the shared [`Guard`] and the rules its routes declared.
#[derive(Clone)]
pub(crate) struct Checker {
    pub(crate) guard: Guard,
    pub(crate) rules: Arc<Rules>,
}

/// The middleware: find the route's need, check the credential, decide.
pub(crate) async fn check(State(c): State<Checker>, mut req: Request, next: Next) -> Response {
    let g = &c.guard;
    let mode = g.cfg.mode;
    let need = match req.extensions().get::<MatchedPath>() {
        Some(t) => c.rules.need(req.method(), t.as_str(), req.uri().query()),
        // No route matched: a 404 reveals nothing, except in private mode.
        None if mode == AccessMode::Private => Need::AllRead,
        None => Need::Page,
    };
    if need == Need::Admin && !g.admin_possible {
        return ApiError::NotFound("no such route".into()).into_response();
    }
    if mode == AccessMode::Open && need != Need::Admin {
        req.extensions_mut().insert(Granted { scopes: None });
        return next.run(req).await;
    }
    let ip = client_ip(req.extensions());
    let who = match g.credential(presented(&req), ip).await {
        Ok(who) => who,
        Err(refusal) => return refusal,
    };
    let trusted = need == Need::Metrics && g.cfg.metrics_networks.iter().any(|n| n.contains(&ip));
    let decision = if trusted {
        Decision::Allow
    } else {
        decide(&g.cfg, need, who)
    };
    match decision {
        Decision::Allow => {
            req.extensions_mut().insert(Granted { scopes: who });
            next.run(req).await
        }
        Decision::NeedCredential if need == Need::Admin && mode == AccessMode::Open => refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an admin bearer token is needed",
            Some("Bearer"),
        ),
        Decision::NeedCredential if mode == AccessMode::Private => refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server needs a credential (basic auth or a bearer token)",
            g.challenge(),
        ),
        Decision::NeedCredential => refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this route spans all mailboxes (or deletes) and needs a credential; one mailbox is open by its address",
            None,
        ),
        Decision::Forbidden => refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "your credential does not have the scope this route needs",
            None,
        ),
    }
}
