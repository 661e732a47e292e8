//! `[auth]`, `[[listener]]` and `[[route]]`: how the server's SMTP listeners are assembled
//! from the sections the crates read.

use std::net::SocketAddr;
use std::time::Duration;

use intake_config::Reader;
use intake_delivery::TargetName;
use intake_delivery::settings::{DeliverySettings, read_target_list};
use intake_smtp::DomainPolicy;

/// SMTP AUTH of the default listener (`[auth]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthConfig {
    /// Offer AUTH (users from the store).
    pub enabled: bool,
    /// Offer it without TLS too.
    pub allow_plaintext: bool,
    /// MAIL needs a login.
    pub required: bool,
    /// MAIL FROM must be the user's address or one of its senders.
    pub restrict_senders: bool,
    /// Logged-in users may send to any domain.
    pub relay: bool,
    /// Failed logins allowed per client address within the window.
    pub per_client: intake_core::FailureLimit,
    /// Failed logins allowed per account within the window.
    pub per_account: intake_core::FailureLimit,
    /// Check logins in the `[directory]` instead of Intake's own users.
    pub directory: bool,
}

/// TLS on an extra listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// No TLS.
    Off,
    /// STARTTLS offered.
    Optional,
    /// STARTTLS offered and needed before MAIL.
    Required,
    /// The handshake first (port 465, RFC 8314).
    Implicit,
}

/// SMTP AUTH on an extra listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Not offered.
    Off,
    /// Offered; mail without a login is accepted as on an MX.
    Optional,
    /// MAIL needs a login.
    Required,
}

/// Which policy checks a listener runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyProfile {
    /// The `default` profile (the enabled checks, or `[policy.profiles.default]`).
    Default,
    /// None (submission: users are known, the checks are for strangers).
    None,
    /// A profile of `[policy.profiles.<name>]`.
    Named(String),
}

/// One `[[listener]]` besides the default one (`smtp.listen`, `smtp.tls_listen`).
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// For logs.
    pub name: String,
    /// Where it listens.
    pub address: SocketAddr,
    /// TLS.
    pub tls: TlsPolicy,
    /// AUTH.
    pub auth: AuthMode,
    /// Offer AUTH without TLS.
    pub allow_plaintext_auth: bool,
    /// Logged-in users may send to any domain.
    pub relay: bool,
    /// MAIL FROM must be the logged-in user's.
    pub restrict_senders: bool,
    /// Logins checked in the `[directory]` rather than Intake's users.
    pub auth_directory: bool,
    /// The policy checks.
    pub policy: PolicyProfile,
    /// Where its mail goes.
    pub targets: Vec<TargetName>,
}

/// A `[[route]]`: recipients at these domains go to these targets, on every listener.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// Domain patterns (`example.com`, `*.example.com`).
    pub domains: DomainPolicy,
    /// The targets.
    pub targets: Vec<TargetName>,
}

/// Reads `[auth]`: AUTH on the default listener and the failed-login limits of every one.
pub fn read_auth(r: &mut Reader<'_>, have_tls: bool) -> AuthConfig {
    let enabled: bool = r.get("auth.enabled", false);
    let allow_plaintext: bool = r.get("auth.allow_plaintext", false);
    let required: bool = r.get("auth.required", false);
    let restrict_senders: bool = r.get("auth.restrict_senders", true);
    let relay: bool = r.get("auth.relay", false);
    let window = r.timeout("auth.failure_window", Duration::from_secs(900));
    let per_client: u32 = r.get("auth.max_failures_per_client", 10);
    let per_account: u32 = r.get("auth.max_failures_per_account", 10);
    let directory: bool = r.get("auth.directory", false);
    if enabled && !have_tls && !allow_plaintext {
        r.error(
            "auth.enabled",
            "AUTH is offered only over TLS: set tls.certificate and tls.key (or auth.allow_plaintext for a trusted network)",
        );
    }
    if required && !enabled {
        r.error("auth.required", "needs auth.enabled");
    }
    AuthConfig {
        enabled,
        allow_plaintext,
        required,
        restrict_senders,
        relay,
        per_client: intake_core::FailureLimit {
            max_failures: per_client.max(1),
            window,
        },
        per_account: intake_core::FailureLimit {
            max_failures: per_account.max(1),
            window,
        },
        directory,
    }
}

/// The keys of a `[[listener]]` table (documented in docs/configuration.md, checked by a
/// test both ways).
pub const LISTENER_KEYS: &[&str] = &[
    "name",
    "address",
    "tls",
    "auth",
    "allow_plaintext_auth",
    "relay",
    "restrict_senders",
    "auth_directory",
    "policy",
    "targets",
];

/// The keys of a `[[route]]` table.
pub const ROUTE_KEYS: &[&str] = &["domains", "targets"];

/// Reports the keys of table `what[i]` that are not in `keys`, with the closest one.
fn unknown_keys(r: &mut Reader<'_>, what: &str, i: usize, t: &toml::Table, keys: &[&str]) {
    for k in t.keys().filter(|k| !keys.contains(&k.as_str())) {
        let message = match intake_config::closest(keys.iter().copied(), k) {
            Some(near) => format!("unknown setting; did you mean {what}[{i}].{near}?"),
            None => "unknown setting".to_string(),
        };
        r.error(&format!("{what}[{i}].{k}"), message);
    }
}

/// Reads the `[[route]]` tables.
pub fn read_routes(r: &mut Reader<'_>, delivery: &DeliverySettings) -> Vec<RouteSettings> {
    let mut out = Vec::new();
    for (i, t) in r.tables("route").into_iter().enumerate() {
        let key = |k: &str| format!("route[{i}].{k}");
        unknown_keys(r, "route", i, &t, ROUTE_KEYS);
        let patterns: Vec<String> = t
            .get("domains")
            .and_then(|v| v.clone().try_into().ok())
            .unwrap_or_default();
        if patterns.is_empty() {
            r.error(
                &key("domains"),
                "expected a list of domains such as [\"example.com\"]",
            );
            continue;
        }
        let domains = match DomainPolicy::new(&patterns) {
            Ok(d) => d,
            Err(e) => {
                r.error(&key("domains"), e);
                continue;
            }
        };
        let Some(v) = t.get("targets") else {
            r.error(&key("targets"), "expected a list such as [\"relay\"]");
            continue;
        };
        let targets = read_target_list(r, &key("targets"), v, delivery);
        out.push(RouteSettings { domains, targets });
    }
    out
}

/// Reads the `[[listener]]` tables; `default` is the default listener's address (no two
/// alike).
pub fn read_listeners(
    r: &mut Reader<'_>,
    have_tls: bool,
    delivery: &DeliverySettings,
    default: SocketAddr,
    auth_directory_default: bool,
) -> Vec<ListenerSettings> {
    let mut out: Vec<ListenerSettings> = Vec::new();
    for (i, t) in r.tables("listener").into_iter().enumerate() {
        let key = |k: &str| format!("listener[{i}].{k}");
        unknown_keys(r, "listener", i, &t, LISTENER_KEYS);
        let text = |r: &mut Reader<'_>, k: &str, default: &str| -> String {
            match t.get(k) {
                None => default.to_string(),
                Some(toml::Value::String(s)) => s.clone(),
                Some(_) => {
                    r.error(&key(k), "expected a string");
                    default.to_string()
                }
            }
        };
        let flag = |r: &mut Reader<'_>, k: &str, default: bool| -> bool {
            match t.get(k) {
                None => default,
                Some(toml::Value::Boolean(b)) => *b,
                Some(_) => {
                    r.error(&key(k), "expected true or false");
                    default
                }
            }
        };
        let name = text(r, "name", &format!("listener{i}"));
        let address = text(r, "address", "");
        let address = match address.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                r.error(
                    &key("address"),
                    format!("{address:?} is not an address:port such as 0.0.0.0:587"),
                );
                continue;
            }
        };
        if address.port() != 0 && (address == default || out.iter().any(|l| l.address == address)) {
            r.error(
                &key("address"),
                format!("{address} is used by another listener"),
            );
        }
        let tls = match text(r, "tls", "off").as_str() {
            "off" => TlsPolicy::Off,
            "optional" => TlsPolicy::Optional,
            "required" => TlsPolicy::Required,
            "implicit" => TlsPolicy::Implicit,
            other => {
                r.error(
                    &key("tls"),
                    format!(
                        "{other:?}: expected \"off\", \"optional\", \"required\" or \"implicit\""
                    ),
                );
                TlsPolicy::Off
            }
        };
        if tls != TlsPolicy::Off && !have_tls {
            r.error(&key("tls"), "needs tls.certificate and tls.key");
        }
        let auth = match text(r, "auth", "off").as_str() {
            "off" => AuthMode::Off,
            "optional" => AuthMode::Optional,
            "required" => AuthMode::Required,
            other => {
                r.error(
                    &key("auth"),
                    format!("{other:?}: expected \"off\", \"optional\" or \"required\""),
                );
                AuthMode::Off
            }
        };
        let allow_plaintext_auth = flag(r, "allow_plaintext_auth", false);
        if auth != AuthMode::Off && tls == TlsPolicy::Off && !allow_plaintext_auth {
            r.error(
                &key("auth"),
                "AUTH is offered only over TLS: set tls, or allow_plaintext_auth on a trusted network",
            );
        }
        let relay = flag(r, "relay", false);
        if relay && auth == AuthMode::Off {
            r.error(&key("relay"), "relaying needs a login: set auth");
        }
        let restrict_senders = flag(r, "restrict_senders", true);
        let auth_directory = flag(r, "auth_directory", auth_directory_default);
        let policy = match text(r, "policy", "default").as_str() {
            "default" => PolicyProfile::Default,
            "none" => PolicyProfile::None,
            // Checked against [policy.profiles] once both are read.
            other => PolicyProfile::Named(other.to_string()),
        };
        let targets = match t.get("targets") {
            None => delivery.targets.clone(),
            Some(v) => read_target_list(r, &key("targets"), v, delivery),
        };
        out.push(ListenerSettings {
            name,
            address,
            tls,
            auth,
            allow_plaintext_auth,
            relay,
            restrict_senders,
            auth_directory,
            policy,
            targets,
        });
    }
    out
}
