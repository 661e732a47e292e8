//! Who may read what: the access mode, credentials (bearer tokens with scopes, basic auth
//! from an htpasswd file) and the one decision per request.
//!
//! Every route declares a [`Need`] where it is registered (`routes.rs`): the page and docs,
//! one mailbox (or one message by its id), something that spans mailboxes, the metrics, or
//! user management. The mode says who may do what:
//!
//! | need | open | public | private |
//! |---|---|---|---|
//! | probes (`/healthz`, `/readyz`) | anyone | anyone | anyone |
//! | page, docs | anyone | anyone | any valid credential |
//! | metrics | anyone | `metrics`, or a client in `metrics_networks` | the same |
//! | one mailbox: read | anyone | anyone | `read` |
//! | one mailbox: delete | anyone | anyone if `public_delete`, else `delete` | `delete` |
//! | all mail: read (list, search, events, wait) | anyone | `read` | `read` |
//! | all mail: delete (the Mailpit API) | anyone | `delete` | `delete` |
//! | admin (and any route that declared nothing) | `admin` | `admin` | `admin` |
//!
//! `admin` covers every scope; an `admin.tokens` token is a token with the `admin` scope.
//! With no credential able to open them, admin routes answer 404. A message id carries 74
//! random bits, so reading one message by its id counts as reading its mailbox. Without a
//! credential a refused request gets `403` in public mode and `401` with `WWW-Authenticate`
//! in private mode (and for admin routes in open mode); a wrong credential gets `401`, and
//! too many wrong ones from one address `429` without being checked (the failed-login
//! limiter of `intake_core::login_limit`, shared with SMTP AUTH's type).

mod guard;
mod htpasswd;
mod routes;

use std::path::PathBuf;

use ipnet::IpNet;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

pub use guard::Login;
pub(crate) use guard::{Checker, Granted, Guard, check};
pub use htpasswd::verify_password;
pub(crate) use routes::{Routes, Rule, Rules};

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
    /// Read `/metrics` (in `public` and `private` modes).
    pub const METRICS: Scopes = Scopes(8);

    /// Both sets.
    pub fn union(self, o: Scopes) -> Scopes {
        Scopes(self.0 | o.0)
    }

    /// True when these scopes cover `need` (admin covers all).
    pub fn covers(self, need: Scopes) -> bool {
        self.0 & Scopes::ADMIN.0 != 0 || self.0 & need.0 == need.0
    }

    /// `read`, `delete`, `metrics`, `admin`, separated by commas.
    pub fn parse(text: &str) -> Result<Scopes, String> {
        let mut s = Scopes::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            s = s.union(match part {
                "read" => Scopes::READ,
                "delete" => Scopes::DELETE,
                "metrics" => Scopes::METRICS,
                "admin" => Scopes::ADMIN,
                other => {
                    return Err(format!(
                        "{other:?} is not a scope (read, delete, metrics, admin)"
                    ));
                }
            });
        }
        if s == Scopes::default() {
            return Err("no scope given (read, delete, metrics, admin)".into());
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
        if self.covers(Scopes::METRICS) {
            v.push("metrics");
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
        write!(
            f,
            "Token({:?}, {:?})",
            intake_core::redact::Redacted(&self.hash),
            self.scopes
        )
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

    /// What the token allows.
    pub fn scopes(&self) -> Scopes {
        self.scopes
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
    /// Clients that may read `/metrics` without a credential in `public` and `private` modes.
    pub metrics_networks: Vec<IpNet>,
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
            metrics_networks: Vec::new(),
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Anyone in every mode: the health and readiness probes.
    Probe,
    /// The web page, its assets, the API docs, what-may-I-do.
    Page,
    /// The metrics: the `metrics` scope, or a client in `metrics_networks`.
    Metrics,
    /// Read one mailbox, or one message by its id.
    MailboxRead,
    /// Delete from one mailbox, or one message by its id.
    MailboxDelete,
    /// Anything that spans mailboxes: list all, search all, watch all.
    AllRead,
    /// Delete across mailboxes (the Mailpit API's delete-all and delete-by-search).
    AllDelete,
    /// User management, and any route that declared nothing (closed by default).
    Admin,
}

/// An event stream of one mailbox (`mailbox=`)?
pub(crate) fn one_mailbox_stream(query: Option<&str>) -> bool {
    query_param(query, "mailbox").is_some_and(|m| !m.trim().is_empty())
}

/// The query parameter `key`, percent-decoded.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    crate::model::form_pairs(query?)?
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// A search query scoped to one mailbox (`mailbox:` filter)?
pub(crate) fn one_mailbox_query(query: Option<&str>) -> bool {
    query_param(query, "query")
        .and_then(|q| intake_core::Query::parse(&q).ok())
        .is_some_and(|q| q.mailbox.is_some())
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
        (_, Need::Probe) => return Decision::Allow,
        (_, Need::Admin) => Scopes::ADMIN,
        (AccessMode::Open, _) => return Decision::Allow,
        (AccessMode::Public, Need::Page | Need::MailboxRead) => return Decision::Allow,
        (AccessMode::Public, Need::MailboxDelete) if cfg.public_delete => return Decision::Allow,
        (AccessMode::Private, Need::Page) => Scopes::default(),
        (_, Need::MailboxRead | Need::AllRead) => Scopes::READ,
        (_, Need::MailboxDelete | Need::AllDelete) => Scopes::DELETE,
        (_, Need::Metrics) => Scopes::METRICS,
    };
    match who {
        None => Decision::NeedCredential,
        Some(s) if s.covers(scope) => Decision::Allow,
        Some(_) => Decision::Forbidden,
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
        let q = |s| one_mailbox_query(Some(s));
        assert!(!q("query=invoice"));
        assert!(q("query=invoice%20mailbox:bob@x.test"));
        assert!(q("query=mailbox%3Abob%40x.test"));
        assert!(!one_mailbox_stream(None));
        assert!(!one_mailbox_stream(Some("mailbox=")));
        assert!(one_mailbox_stream(Some("mailbox=bob%40x.test")));
    }

    #[test]
    fn metrics_need_their_scope_and_admin_is_closed_even_in_open_mode() {
        for mode in [AccessMode::Public, AccessMode::Private] {
            let c = cfg(mode);
            assert_eq!(decide(&c, Need::Metrics, None), Decision::NeedCredential);
            assert_eq!(
                decide(&c, Need::Metrics, Some(Scopes::READ)),
                Decision::Forbidden
            );
            assert_eq!(
                decide(&c, Need::Metrics, Some(Scopes::METRICS)),
                Decision::Allow
            );
            assert_eq!(decide(&c, Need::Probe, None), Decision::Allow);
        }
        let open = cfg(AccessMode::Open);
        assert_eq!(decide(&open, Need::Metrics, None), Decision::Allow);
        assert_eq!(decide(&open, Need::Admin, None), Decision::NeedCredential);
        assert_eq!(
            decide(&open, Need::Admin, Some(Scopes::READ)),
            Decision::Forbidden
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
        assert!(!verify_password("x", &htpasswd::DUMMY_HASH));
        assert!(
            bcrypt::verify("x", &htpasswd::DUMMY_HASH).is_ok(),
            "the dummy is a valid hash"
        );
    }
}
