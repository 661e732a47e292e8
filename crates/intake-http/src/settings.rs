//! `[http]`, `[mailpit]` and `[admin]` read from the configuration: the listeners' addresses,
//! limits and timeouts, and who may read what (`http.access`, tokens, htpasswd).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use intake_config::Reader;

use crate::{AccessConfig, AccessMode, HttpConfig, RateLimit, Scopes, Token};

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Where to listen; None: no HTTP server.
    pub listen: Option<SocketAddr>,
    /// API behaviour.
    pub config: HttpConfig,
    /// Serve HTTPS with the `[tls]` certificate.
    pub tls: bool,
    /// The Mailpit-compatible API's own listener, if any.
    pub mailpit_listen: Option<SocketAddr>,
    /// Mailpit's chaos triggers may be set (`mailpit.chaos`).
    pub mailpit_chaos: bool,
    /// Caught messages may be released to the `[relay]` downstream (`mailpit.release`).
    pub mailpit_release: bool,
}

/// Reads `[http]`, `[mailpit]` and `admin.tokens` (an admin token is an HTTP token with the
/// admin scope); `have_certificate`: whether `[tls]` is configured (HTTPS needs it).
pub fn read_http(r: &mut Reader<'_>, have_certificate: bool) -> HttpSettings {
    let d = HttpConfig::default();
    let listen: String = r.get("http.listen", "127.0.0.1:8025".to_string());
    let listen = if listen.is_empty() {
        None
    } else {
        match listen.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                r.error(
                    "http.listen",
                    format!(
                        "{listen:?} is not an address:port such as 127.0.0.1:8025 (empty: no HTTP)"
                    ),
                );
                None
            }
        }
    };
    let default_rl = d.rate_limit.expect("default has a rate limit");
    let per_second: u32 = r.get("http.rate_limit", default_rl.per_second);
    let burst: u32 = r.get("http.rate_limit_burst", default_rl.burst);
    let cors_origins: Vec<String> = r.get("http.cors_origins", Vec::new());
    let max_wait = r.duration("http.max_wait", d.max_wait);
    if max_wait.is_zero() {
        r.error("http.max_wait", "must be at least 1s");
    }
    let max_connections: usize = r.get("http.max_connections", d.max_connections);
    if max_connections == 0 {
        r.error("http.max_connections", "must be at least 1");
    }
    let max_connections_per_ip: usize =
        r.get("http.max_connections_per_ip", d.max_connections_per_ip);
    let max_streams_per_ip: usize = r.get("http.max_streams_per_ip", d.max_streams_per_ip);
    let mut timeout = |key: &str, default: Duration| {
        let t = r.duration(key, default);
        if t.is_zero() {
            r.error(key, "must be at least 1s");
        }
        t
    };
    let header_timeout = timeout("http.header_timeout", d.header_timeout);
    let idle_timeout = timeout("http.idle_timeout", d.idle_timeout);
    let body_timeout = timeout("http.body_timeout", d.body_timeout);
    let access = read_access(r, listen);
    let tls: bool = r.get("http.tls", false);
    let mailpit: String = r.get("mailpit.listen", String::new());
    let mailpit_listen = if mailpit.is_empty() {
        None
    } else {
        match mailpit.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                r.error(
                    "mailpit.listen",
                    format!(
                        "{mailpit:?} is not an address:port such as 127.0.0.1:8026 (empty: off)"
                    ),
                );
                None
            }
        }
    };
    let mailpit_chaos: bool = r.get("mailpit.chaos", false);
    let mailpit_release: bool = r.get("mailpit.release", false);
    let link_check = read_link_check(r);
    let html_check: bool = r.get("mailpit.html_check", d.html_check);
    if tls && !have_certificate {
        r.error(
            "http.tls",
            "HTTPS needs tls.certificate and tls.key (the same files SMTP uses)",
        );
    }
    HttpSettings {
        listen,
        config: HttpConfig {
            rate_limit: (per_second > 0).then_some(RateLimit {
                per_second,
                burst: burst.max(1),
            }),
            cors_origins,
            max_wait,
            max_connections,
            max_connections_per_ip,
            max_streams_per_ip,
            header_timeout,
            idle_timeout,
            body_timeout,
            access,
            link_check,
            html_check,
            ..d
        },
        tls,
        mailpit_listen,
        mailpit_chaos,
        mailpit_release,
    }
}

/// `mailpit.link_check` and the non-public networks it may reach all the same
/// (`mailpit.link_check_allow`, CIDR networks).
fn read_link_check(r: &mut Reader<'_>) -> crate::LinkCheck {
    let enabled: bool = r.get("mailpit.link_check", false);
    let nets: Vec<String> = r.get("mailpit.link_check_allow", Vec::new());
    let mut allow = Vec::new();
    for n in nets {
        match n.parse::<ipnet::IpNet>() {
            Ok(net) => allow.push(net),
            Err(_) => r.error(
                "mailpit.link_check_allow",
                format!("{n:?} is not a network such as 10.0.0.0/8 or fd00::/8"),
            ),
        }
    }
    crate::LinkCheck { enabled, allow }
}

/// Who may read what (`http.access`, credentials). A listener that is not on loopback must
/// say which mode it wants: mail is private by nature, so there is no silent default there.
fn read_access(r: &mut Reader<'_>, listen: Option<SocketAddr>) -> AccessConfig {
    let d = AccessConfig::default();
    let mode_text: String = r.get("http.access", String::new());
    let mode = if mode_text.is_empty() {
        match listen {
            Some(a) if !a.ip().is_loopback() => {
                r.error(
                    "http.access",
                    format!(
                        "http.listen is {a}, not a loopback address: choose who may read mail with \
                         http.access = \"public\" (anyone may read a mailbox whose address they know; \
                         listing, searching or watching all mail needs a credential), \"private\" \
                         (every route needs a credential) or \"open\" (anyone may read everything)"
                    ),
                );
                AccessMode::Private
            }
            _ => AccessMode::Open,
        }
    } else {
        match mode_text.parse() {
            Ok(m) => m,
            Err(e) => {
                r.error("http.access", e);
                AccessMode::Private
            }
        }
    };
    let token_text: Vec<String> = r.get("http.tokens", Vec::new());
    let mut tokens = Vec::new();
    for t in &token_text {
        match Token::parse(t) {
            Ok(t) => tokens.push(t),
            // Never echo the token itself.
            Err(e) => r.error("http.tokens", format!("a token is not valid: {e}")),
        }
    }
    let htpasswd: String = r.get("http.htpasswd", String::new());
    let htpasswd = (!htpasswd.is_empty()).then(|| PathBuf::from(htpasswd));
    if let Some(p) = &htpasswd
        && std::fs::metadata(p).is_err()
    {
        r.error("http.htpasswd", format!("{} cannot be read", p.display()));
    }
    let scope_text: Vec<String> = r.get(
        "http.htpasswd_scopes",
        vec!["read".to_string(), "delete".to_string()],
    );
    let htpasswd_scopes = match Scopes::parse(&scope_text.join(",")) {
        Ok(s) => s,
        Err(e) => {
            r.error("http.htpasswd_scopes", e);
            d.htpasswd_scopes
        }
    };
    let metrics_networks = r.networks("http.metrics_networks", &[]);
    if mode == AccessMode::Private && tokens.is_empty() && htpasswd.is_none() {
        r.error(
            "http.access",
            "\"private\" needs a credential: set http.tokens or http.htpasswd",
        );
    }
    AccessConfig {
        mode,
        tokens,
        htpasswd,
        htpasswd_scopes,
        public_delete: r.get("http.public_delete", d.public_delete),
        auth_failures_per_minute: r
            .get("http.auth_failures_per_minute", d.auth_failures_per_minute),
        metrics_networks,
    }
}
