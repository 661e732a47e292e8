//! The resolved settings, with every default in one place.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

use intake_core::Retention;
use intake_delivery::program::ProgramConfig;
use intake_delivery::relay::{RelayConfig, RelayTls};
use intake_delivery::webhook::{HttpUrl, WebhookConfig};
pub use intake_delivery::{TargetName, TargetsConfig};
use intake_http::{AccessConfig, AccessMode, HttpConfig, RateLimit, Scopes, Token};
use intake_policy::PolicyConfig;
use intake_smtp::limits::LimitSettings;
use intake_smtp::proxy::ProxySettings;
use intake_smtp::{DomainPolicy, SessionConfig};
use intake_store::StoreKind;
pub use intake_store::StoreSettings;

use intake_config::{ConfigError, Reader, Sources};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

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
}

/// Retention settings.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// What to keep (0 / empty in the config: no limit of that kind).
    pub policy: Retention,
    /// How often eviction runs.
    pub interval: Duration,
}

/// Where accepted mail goes.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// The targets of the default listener, in order (250 only when all took the message).
    pub targets: Vec<TargetName>,
    /// Each target's section (`[relay]`, `[webhook]`, `[program]`), when configured.
    pub sections: TargetsConfig,
}

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

/// Everything `intake` needs to run, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// SMTP listen address.
    pub smtp_listen: SocketAddr,
    /// Session settings (without the live objects the server adds: checks, AUTH, limits).
    pub smtp: SessionConfig,
    /// Per-client caps and rates (`smtp.max_connections_per_ip` ...), applied to the one
    /// [`ClientLimits`](intake_smtp::limits::ClientLimits) the server keeps.
    pub limits: LimitSettings,
    /// Clients never limited (`smtp.limits_exempt`).
    pub limits_exempt: Vec<ipnet::IpNet>,
    /// Implicit-TLS (port 465 style) listen address, if any.
    pub smtps_listen: Option<SocketAddr>,
    /// Certificate chain and private key (PEM), if TLS is configured.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// PROXY protocol on the SMTP listeners, if enabled.
    pub proxy: Option<ProxySettings>,
    /// The store.
    pub store: StoreSettings,
    /// HTTP API and web inbox.
    pub http: HttpSettings,
    /// How much mail to keep.
    pub retention: RetentionSettings,
    /// Secret for mailbox aliases (`aliases.secret`); empty: see `alias_secret_file`.
    pub alias_secret: String,
    /// File holding the alias secret (`aliases.secret_file`); None: a random secret kept
    /// in the store.
    pub alias_secret_file: Option<PathBuf>,
    /// Policy checks: valid recipients, greylisting.
    pub policy: PolicyConfig,
    /// Delivery targets: store, relay.
    pub delivery: DeliverySettings,
    /// SMTP AUTH.
    pub auth: AuthConfig,
    /// Listeners besides the default one.
    pub listeners: Vec<ListenerSettings>,
    /// Targets by recipient domain (before a listener's own).
    pub routes: Vec<RouteSettings>,
    /// Bearer tokens of the admin API (`/api/v1/admin`); empty: no admin API.
    pub admin_tokens: Vec<String>,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `intake=debug`.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Who to run as after binding the listeners.
    pub run: crate::privileges::RunAs,
    /// State shared by the nodes of a cluster (Redis); no `redis_url`: a single node.
    pub cluster: intake_cluster::ClusterConfig,
    /// The POP3 server (`[pop3]`; off unless `pop3.listen` is set).
    pub pop3: intake_pop3::Pop3Settings,
    /// Problems that did not stop loading.
    pub warnings: Vec<ConfigError>,
}

impl Settings {
    /// Resolves a merged table; returns every error found.
    pub fn from_table(
        table: &toml::Table,
        sources: &Sources,
    ) -> Result<Settings, Vec<ConfigError>> {
        let mut r = Reader::new(table, sources);
        let s = read(&mut r);
        r.unknown_keys();
        if r.errors.is_empty() {
            Ok(Settings {
                warnings: r.warnings,
                ..s
            })
        } else {
            Err(r.errors)
        }
    }

    /// The built-in defaults (no file, no environment).
    pub fn defaults() -> Settings {
        Settings::from_table(&toml::Table::new(), &Sources::default()).expect("defaults are valid")
    }
}

/// Every setting's key path.
pub fn known_keys() -> Vec<String> {
    let table = toml::Table::new();
    let sources = Sources::default();
    let mut r = Reader::new(&table, &sources);
    read(&mut r);
    r.known.into_iter().collect()
}

fn read(r: &mut Reader<'_>) -> Settings {
    let smtp = intake_smtp::settings::SmtpSettings::read(r);
    let hostname = smtp.session.hostname.clone();
    let domains = smtp.session.domains.clone();
    let tls_files = smtp.tls_files.clone();

    let store = read_store(r);

    let mut http = read_http(r, tls_files.is_some());
    let retention = read_retention(r);
    let alias_secret: String = r.get("aliases.secret", String::new());
    let secret_file: String = r.get("aliases.secret_file", String::new());
    let alias_secret_file = (!secret_file.is_empty()).then(|| PathBuf::from(secret_file));
    if !alias_secret.is_empty() && alias_secret_file.is_some() {
        r.error(
            "aliases.secret_file",
            "set aliases.secret or aliases.secret_file, not both",
        );
    }
    let mut policy = intake_policy::settings::read(r);
    let delivery = read_delivery(r, &hostname, &domains);
    let auth = read_auth(r, tls_files.is_some());
    let listeners = read_listeners(r, tls_files.is_some(), &delivery, smtp.listen);
    let routes = read_routes(r, &delivery);
    for (i, l) in listeners.iter().enumerate() {
        if let PolicyProfile::Named(name) = &l.policy
            && !policy.profiles.contains_key(name)
        {
            r.error(
                &format!("listener[{i}].policy"),
                format!(
                    "{name:?}: expected \"default\", \"none\" or a profile of [policy.profiles] ({})",
                    policy.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }
    let admin_tokens: Vec<String> = r.get("admin.tokens", Vec::new());
    if admin_tokens.iter().any(|t| t.len() < 16) {
        r.error(
            "admin.tokens",
            "each token must be at least 16 characters (e.g. openssl rand -hex 32)",
        );
    }
    // The access guard knows them too: an admin token is an HTTP token with the admin scope.
    for t in admin_tokens.iter().filter(|t| !t.is_empty()) {
        http.config.access.tokens.push(Token::new(t, Scopes::ADMIN));
    }

    let run = crate::privileges::RunAs {
        user: r.get("run.user", String::new()),
        group: r.get("run.group", String::new()),
    };
    if run.user.is_empty() && !run.group.is_empty() {
        r.error("run.group", "run.group needs run.user");
    }

    let log_level: String = r.get("log.level", "info".to_string());
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        r.error(
            "log.level",
            format!("{log_level:?} is not a log filter (examples: info, debug, intake=debug)"),
        );
    }
    let format: String = r.get("log.format", "text".to_string());
    let log_format = match format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            r.error(
                "log.format",
                format!("{other:?}: expected \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    // Our Authentication-Results name is our host name.
    policy.sender_auth.hostname = hostname.clone();

    let cluster = intake_cluster::ClusterConfig::read(r);
    let pop3 = intake_pop3::Pop3Settings::read(r);
    Settings {
        smtp_listen: smtp.listen,
        smtp: smtp.session,
        limits: smtp.limits,
        limits_exempt: smtp.limits_exempt,
        smtps_listen: smtp.tls_listen,
        tls_files: smtp.tls_files,
        proxy: smtp.proxy,
        store,
        http,
        retention,
        alias_secret,
        alias_secret_file,
        policy,
        delivery,
        auth,
        listeners,
        routes,
        admin_tokens,
        log_level,
        log_format,
        run,
        cluster,
        pop3,
        warnings: Vec::new(),
    }
}

fn read_delivery(r: &mut Reader<'_>, hostname: &str, domains: &DomainPolicy) -> DeliverySettings {
    let names: Vec<String> = r.get("delivery.targets", vec!["store".to_string()]);
    let mut targets = Vec::new();
    for n in &names {
        let Some(kind) = TargetName::parse(n) else {
            r.error(
                "delivery.targets",
                format!(
                    "{n:?}: expected one of {}",
                    intake_delivery::registry::known_names()
                ),
            );
            continue;
        };
        if targets.contains(&kind) {
            r.error("delivery.targets", format!("{n:?} is listed twice"));
        }
        targets.push(kind);
    }
    if names.is_empty() {
        r.error(
            "delivery.targets",
            "at least one target is needed (\"store\", \"relay\")",
        );
    }
    let d = RelayConfig::new("");
    let server: String = r.get("relay.server", String::new());
    let lmtp: bool = r.get("relay.lmtp", false);
    let helo: String = r.get("relay.helo", String::new());
    let tls: String = r.get("relay.tls", "optional".to_string());
    let tls = match tls.as_str() {
        "off" => RelayTls::Off,
        "optional" => RelayTls::Optional,
        "required" => RelayTls::Required,
        other => {
            r.error(
                "relay.tls",
                format!("{other:?}: expected \"off\", \"optional\" or \"required\""),
            );
            RelayTls::Optional
        }
    };
    let tls_ca: String = r.get("relay.tls_ca", String::new());
    let tls_name: String = r.get("relay.tls_name", String::new());
    let user: String = r.get("relay.auth_user", String::new());
    let password: String = r.get("relay.auth_password", String::new());
    if user.is_empty() != password.is_empty() {
        r.error(
            "relay.auth_user",
            "relay.auth_user and relay.auth_password go together",
        );
    }
    let max_connections: usize = r.get("relay.max_connections", d.max_connections);
    if max_connections == 0 {
        r.error("relay.max_connections", "must be at least 1");
    }
    let connect_timeout = r.timeout("relay.connect_timeout", d.connect_timeout);
    let command_timeout = r.timeout("relay.command_timeout", d.command_timeout);
    let data_timeout = r.timeout("relay.data_timeout", d.data_timeout);
    let idle_timeout = r.duration("relay.idle_timeout", d.idle_timeout);
    let relay_verify: bool = r.get("relay.verify_recipients", false);
    let wanted = targets.iter().any(|t| *t == "relay");
    let relay = if server.is_empty() {
        if wanted {
            r.error(
                "relay.server",
                "delivery.targets has \"relay\": the downstream host:port is needed",
            );
        }
        None
    } else if !server.contains(':') {
        r.error(
            "relay.server",
            format!("{server:?} is not host:port such as 127.0.0.1:24"),
        );
        None
    } else {
        let mut c = RelayConfig::new(server);
        if !tls_name.is_empty() && !c.set_tls_name(&tls_name) {
            r.error("relay.tls_name", format!("{tls_name:?} is not a host name"));
        }
        c.lmtp = lmtp;
        c.helo = if helo.is_empty() {
            hostname.to_string()
        } else {
            helo
        };
        c.tls = tls;
        c.tls_ca = (!tls_ca.is_empty()).then(|| PathBuf::from(tls_ca));
        c.auth = (!user.is_empty()).then_some((user, password));
        c.max_connections = max_connections.max(1);
        c.connect_timeout = connect_timeout;
        c.command_timeout = command_timeout;
        c.data_timeout = data_timeout;
        c.idle_timeout = idle_timeout;
        c.verify_recipients = relay_verify;
        Some(c)
    };
    if wanted && domains.is_catch_all() {
        r.warn(
            "smtp.domains",
            "mail for every domain is relayed: list the domains the downstream serves, \
             unless it refuses the others itself",
        );
    }
    let webhook = read_webhook(r, targets.iter().any(|t| *t == "webhook"));
    let program = read_program(r, targets.iter().any(|t| *t == "program"));
    DeliverySettings {
        targets,
        sections: TargetsConfig {
            relay,
            webhook,
            program,
        },
    }
}

/// A list of target names from a `[[listener]]` or `[[route]]` table; each must have its
/// section configured.
fn read_target_list(
    r: &mut Reader<'_>,
    key: &str,
    v: &toml::Value,
    delivery: &DeliverySettings,
) -> Vec<TargetName> {
    let names: Vec<String> = v.clone().try_into().unwrap_or_else(|_| {
        r.error(key, "expected a list such as [\"store\"]");
        Vec::new()
    });
    let mut kinds = Vec::new();
    for n in names {
        let Some(k) = TargetName::parse(&n) else {
            r.error(key, format!("{n:?} is not a target"));
            continue;
        };
        if !k.is_configured(&delivery.sections) {
            r.error(key, format!("{n:?} needs its section ([{n}])"));
        }
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    if kinds.is_empty() {
        r.error(key, "at least one target is needed");
    }
    kinds
}

/// `[[route]]` tables.
fn read_routes(r: &mut Reader<'_>, delivery: &DeliverySettings) -> Vec<RouteSettings> {
    let mut out = Vec::new();
    for (i, t) in r.tables("route").into_iter().enumerate() {
        let key = |k: &str| format!("route[{i}].{k}");
        for k in t.keys() {
            if k != "domains" && k != "targets" {
                r.error(&key(k), "unknown setting");
            }
        }
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

/// `[[listener]]` tables; `default` is the default listener's address (no two alike).
fn read_listeners(
    r: &mut Reader<'_>,
    have_tls: bool,
    delivery: &DeliverySettings,
    default: SocketAddr,
) -> Vec<ListenerSettings> {
    const KEYS: &[&str] = &[
        "name",
        "address",
        "tls",
        "auth",
        "allow_plaintext_auth",
        "relay",
        "restrict_senders",
        "policy",
        "targets",
    ];
    let mut out: Vec<ListenerSettings> = Vec::new();
    for (i, t) in r.tables("listener").into_iter().enumerate() {
        let key = |k: &str| format!("listener[{i}].{k}");
        for k in t.keys() {
            if !KEYS.contains(&k.as_str()) {
                r.error(&key(k), "unknown setting");
            }
        }
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
            policy,
            targets,
        });
    }
    out
}

fn read_auth(r: &mut Reader<'_>, have_tls: bool) -> AuthConfig {
    let enabled: bool = r.get("auth.enabled", false);
    let allow_plaintext: bool = r.get("auth.allow_plaintext", false);
    let required: bool = r.get("auth.required", false);
    let restrict_senders: bool = r.get("auth.restrict_senders", true);
    let relay: bool = r.get("auth.relay", false);
    let window = r.timeout("auth.failure_window", Duration::from_secs(900));
    let per_client: u32 = r.get("auth.max_failures_per_client", 10);
    let per_account: u32 = r.get("auth.max_failures_per_account", 10);
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
    }
}

fn read_webhook(r: &mut Reader<'_>, wanted: bool) -> Option<WebhookConfig> {
    let url: String = r.get("webhook.url", String::new());
    let secret: String = r.get("webhook.secret", String::new());
    let timeout = r.timeout("webhook.timeout", Duration::from_secs(30));
    let tls_ca: String = r.get("webhook.tls_ca", String::new());
    if url.is_empty() {
        if wanted {
            r.error(
                "webhook.url",
                "delivery.targets has \"webhook\": the URL is needed",
            );
        }
        return None;
    }
    let Some(parsed) = HttpUrl::parse(&url) else {
        r.error(
            "webhook.url",
            format!("{url:?} is not http://host[:port]/path or https://…"),
        );
        return None;
    };
    if !parsed.tls && !tls_ca.is_empty() {
        r.warn("webhook.tls_ca", "ignored: webhook.url is not https://");
    }
    if secret.is_empty() {
        r.warn("webhook.secret", "webhook requests will not be signed");
    }
    Some(WebhookConfig {
        url,
        secret,
        timeout,
        tls_ca: (!tls_ca.is_empty()).then(|| PathBuf::from(tls_ca)),
    })
}

fn read_program(r: &mut Reader<'_>, wanted: bool) -> Option<ProgramConfig> {
    let command: Vec<String> = r.get("program.command", Vec::new());
    let d = ProgramConfig::new(Vec::new());
    let timeout = r.timeout("program.timeout", d.timeout);
    let max_running: usize = r.get("program.max_running", d.max_running);
    if max_running == 0 {
        r.error("program.max_running", "must be at least 1");
    }
    let path: String = r.get("program.path", d.path.clone());
    let dir: String = r.get("program.directory", String::new());
    if command.is_empty() || command[0].is_empty() {
        if wanted {
            r.error(
                "program.command",
                "delivery.targets has \"program\": the command is needed, e.g. [\"/usr/local/bin/deliver\", \"--queue\"]",
            );
        }
        return None;
    }
    Some(ProgramConfig {
        command,
        timeout,
        max_running: max_running.max(1),
        path,
        dir: (!dir.is_empty()).then(|| PathBuf::from(dir)),
    })
}

fn read_http(r: &mut Reader<'_>, have_certificate: bool) -> HttpSettings {
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
            ..d
        },
        tls,
        mailpit_listen,
    }
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

/// `[store]`: the backend and its settings (SQLite's own keys are read whatever the type,
/// so that switching back keeps them).
fn read_store(r: &mut Reader<'_>) -> StoreSettings {
    let d = StoreSettings::sqlite("./intake-data");
    let kind: String = r.get("store.type", "sqlite".to_string());
    let url: String = r.get("store.url", String::new());
    let path: String = r.get("store.path", "./intake-data".to_string());
    let search_name: String = r.get("store.search", d.search.name().to_string());
    let search = intake_core::SearchMode::parse(&search_name).unwrap_or_else(|| {
        r.error(
            "store.search",
            format!(
                "{search_name:?}: expected one of {}",
                intake_core::SearchMode::NAMES
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        d.search
    });
    // The server stores' pool (PostgreSQL, MariaDB/MySQL).
    let mut pool_size: u32 = r.get("store.pool_size", d.pool.pool_size);
    if pool_size == 0 {
        r.error("store.pool_size", "must be at least 1");
        pool_size = 1;
    }
    let mut connect_timeout = r.duration("store.connect_timeout", d.pool.connect_timeout);
    if connect_timeout.is_zero() {
        r.error(
            "store.connect_timeout",
            "must be more than 0 (how long to wait for the database)",
        );
        connect_timeout = d.pool.connect_timeout;
    }
    let mut s = StoreSettings {
        kind: StoreKind::parse(&kind).unwrap_or_else(|| {
            r.error(
                "store.type",
                format!(
                    "{kind:?}: expected one of {}",
                    StoreKind::NAMES
                        .iter()
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            StoreKind::Sqlite
        }),
        url,
        path: PathBuf::from(path),
        max_batch: r.get("store.max_batch", d.max_batch),
        commit_delay: r.duration("store.commit_delay", d.commit_delay),
        search,
        sqlite: intake_store::SqliteOptions {
            busy_timeout: r.duration("store.busy_timeout", d.sqlite.busy_timeout),
            index_max_lag: r.duration("store.index_max_lag", d.sqlite.index_max_lag),
        },
        redis: read_store_redis(r, &d.redis),
        mysql: intake_store::MysqlOptions {
            require_durable_commit: r.get(
                "store.require_durable_commit",
                d.mysql.require_durable_commit,
            ),
        },
        pool: intake_store::PoolOptions {
            pool_size,
            connect_timeout,
        },
    };
    if s.max_batch == 0 {
        r.error("store.max_batch", "must be at least 1");
        s.max_batch = 1;
    }
    if s.kind.needs_url() && s.url.is_empty() {
        r.error(
            "store.url",
            format!(
                "store.type = {:?} needs the server's address, such as {}",
                s.kind.name(),
                match s.kind {
                    StoreKind::Postgres => "\"postgres://intake@db.internal/intake\"",
                    StoreKind::Mysql => "\"mysql://intake@db.internal/intake\"",
                    _ => "\"redis://cache.internal:6379/0\"",
                }
            ),
        );
    }
    if !s.kind.needs_url() && !s.url.is_empty() {
        r.error("store.url", "the sqlite store takes store.path, not a URL");
    }
    if s.kind == StoreKind::Redis
        && !s.url.is_empty()
        && let Err(e) = intake_cluster::check_url(&s.url)
    {
        r.error("store.url", e.to_string());
    }
    s
}

/// `store.redis_*`: options only the Redis store reads.
fn read_store_redis(
    r: &mut Reader<'_>,
    d: &intake_store::RedisOptions,
) -> intake_store::RedisOptions {
    let cap: u64 = r.get("store.redis_mailbox_cap", 0);
    let o = intake_store::RedisOptions {
        key_prefix: r.get("store.redis_key_prefix", d.key_prefix.clone()),
        accept_weak_durability: r.get(
            "store.redis_accept_weak_durability",
            d.accept_weak_durability,
        ),
        timeout: r.duration("store.redis_timeout", d.timeout),
        mailbox_cap: (cap > 0).then_some(cap),
        search_scan: r.get("store.redis_search_scan", d.search_scan),
    };
    if o.timeout.is_zero() {
        r.error("store.redis_timeout", "must be more than 0");
    }
    o
}

fn read_retention(r: &mut Reader<'_>) -> RetentionSettings {
    let per_mailbox: u64 = r.get("retention.per_mailbox", 1000);
    let max_age = r.duration("retention.max_age", Duration::from_secs(7 * 86_400));
    let max_size = r.size("retention.max_store_size", 2 << 30);
    let interval = r.duration("retention.interval", Duration::from_secs(60));
    if interval.is_zero() {
        r.error("retention.interval", "must be at least 1s");
    }
    RetentionSettings {
        policy: Retention {
            per_mailbox: (per_mailbox > 0).then_some(per_mailbox),
            max_age: (!max_age.is_zero()).then_some(max_age),
            max_bytes: (max_size > 0).then_some(max_size),
        },
        interval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_table;

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Settings, Vec<ConfigError>> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("intake.toml");
        std::fs::write(&f, file).unwrap();
        let vars = env.iter().map(|(a, b)| (a.to_string(), b.to_string()));
        let (t, s) = load_table(Some(&f), vars)?;
        Settings::from_table(&t, &s)
    }

    #[test]
    fn store_search_is_read_and_checked() {
        let s = load("[store]\nsearch = \"headers\"\n", &[]).unwrap();
        assert_eq!(s.store.search, intake_core::SearchMode::Headers);
        let s = load("", &[("INTAKE_STORE__SEARCH", "off")]).unwrap();
        assert_eq!(s.store.search, intake_core::SearchMode::Off);
        assert_eq!(
            load("", &[]).unwrap().store.search,
            intake_core::SearchMode::Full
        );
        let errs = load("[store]\nsearch = \"bodies\"\n", &[]).unwrap_err();
        assert!(
            errs.iter().any(|e| e.key == "store.search"
                && e.to_string().contains("\"full\", \"headers\", \"off\"")),
            "{errs:?}"
        );
    }

    #[test]
    fn defaults() {
        let s = Settings::defaults();
        assert_eq!(s.smtp_listen.to_string(), "127.0.0.1:2525");
        assert_eq!(s.store, StoreSettings::sqlite("./intake-data"));
        assert!(s.smtp.domains.is_catch_all());
        assert!(s.smtp.lenient_helo);
    }

    #[test]
    fn every_error_is_reported_with_its_key() {
        let errs = load(
            "[smtp]\nlisten = \"nowhere\"\nmax_recipients = \"many\"\nmax_message_size = \"10XB\"\n\
             domains = [\"a@b\"]\ntypo_key = 1\n[store]\ntype = \"oracle\"\n",
            &[("INTAKE_SMTP__COMMAND_TIMEOUT", "soon")],
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "smtp.listen",
            "smtp.max_recipients",
            "smtp.max_message_size",
            "smtp.domains",
            "smtp.typo_key",
            "store.type",
            "smtp.command_timeout",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        let env_err = errs
            .iter()
            .find(|e| e.key == "smtp.command_timeout")
            .unwrap();
        assert!(
            env_err.to_string().contains("INTAKE_SMTP__COMMAND_TIMEOUT"),
            "{env_err}"
        );
    }

    #[test]
    fn env_overrides_and_unknown_env_is_a_warning() {
        let s = load(
            "[smtp]\nmax_message_size = \"1MB\"\n",
            &[
                ("INTAKE_SMTP__MAX_MESSAGE_SIZE", "\"10MiB\""),
                ("INTAKE_SMTP__DOMAINS", r#"["example.com"]"#),
                ("INTAKE_DATA_DIR", "/somewhere"),
            ],
        )
        .unwrap();
        assert_eq!(s.smtp.max_message_size, 10 << 20);
        assert!(s.smtp.domains.accepts("example.com") && !s.smtp.domains.accepts("other.test"));
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].to_string().contains("INTAKE_DATA_DIR"));
    }

    #[test]
    fn policy_settings() {
        let s = load(
            "[greylist]\nenabled = true\nallow_networks = [\"10.0.0.0/8\"]\n",
            &[
                (
                    "INTAKE_RECIPIENTS__ADDRESSES",
                    r#"["alice@example.test", "@team.test"]"#,
                ),
                ("INTAKE_GREYLIST__DELAY", "2s"),
            ],
        )
        .unwrap();
        assert_eq!(s.policy.recipients.addresses.len(), 2);
        assert_eq!(s.policy.recipients.on_error, intake_core::OnError::Defer);
        assert!(s.policy.greylist.enabled);
        assert_eq!(s.policy.greylist.delay, Duration::from_secs(2));
        assert_eq!(s.policy.greylist.lifetime, Duration::from_secs(35 * 86_400));
        assert_eq!(s.policy.greylist.on_error, intake_core::OnError::FailOpen);
        assert_eq!(s.policy.greylist.allow_networks.len(), 1);
        assert!(!Settings::defaults().policy.greylist.enabled);
        let errs = load(
            "[recipients]\naddresses = [\"bob\"]\non_error = \"maybe\"\n[greylist]\ntimeout = 0\n",
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "recipients.addresses",
                "recipients.on_error",
                "greylist.timeout"
            ]
        );
    }

    #[test]
    fn delivery_targets_and_their_settings() {
        // The acceptance check's contract, from the environment alone.
        let s = load(
            "",
            &[
                ("INTAKE_DELIVERY__TARGETS", "[\"relay\"]"),
                ("INTAKE_RELAY__SERVER", "127.0.0.1:2526"),
            ],
        )
        .unwrap();
        assert_eq!(s.delivery.targets, ["relay"]);
        assert_eq!(
            s.delivery.sections.relay.as_ref().unwrap().server,
            "127.0.0.1:2526"
        );
        assert!(
            s.warnings.iter().any(|w| w.key == "smtp.domains"),
            "relaying every domain is worth a warning"
        );
        assert_eq!(Settings::defaults().delivery.targets, ["store"]);
        // Each target without what it needs, and nonsense, is an error with its key.
        let errs = load(
            "[delivery]\ntargets = [\"relay\", \"webhook\", \"program\", \"fax\"]\n\
             [relay]\ntls = \"maybe\"\n",
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "delivery.targets",
            "relay.server",
            "relay.tls",
            "webhook.url",
            "program.command",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        let errs = load("[webhook]\nurl = \"ftp://x.test/\"\n", &[]).unwrap_err();
        assert_eq!(errs[0].key, "webhook.url");
        let s = load(
            "[delivery]\ntargets = [\"store\", \"program\"]\n\
             [program]\ncommand = [\"/bin/cat\"]\ntimeout = \"5s\"\n",
            &[],
        )
        .unwrap();
        let p = s.delivery.sections.program.unwrap();
        assert_eq!((p.command.len(), p.timeout.as_secs()), (1, 5));
    }

    #[test]
    fn listeners_that_could_relay_openly_or_leak_passwords_do_not_load() {
        let errs = load(
            "[[listener]]\naddress = \"127.0.0.1:2587\"\nrelay = true\n\
             [[listener]]\naddress = \"127.0.0.1:2588\"\nauth = \"required\"\n\
             [[listener]]\naddress = \"127.0.0.1:2589\"\ntls = \"implicit\"\ntypo = 1\n\
             [[listener]]\naddress = \"127.0.0.1:2589\"\ntargets = [\"relay\"]\n",
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "listener[0].relay",   // relaying without a login
            "listener[1].auth",    // AUTH without TLS
            "listener[2].tls",     // TLS without a certificate
            "listener[2].typo",    // unknown key
            "listener[3].address", // the same address twice
            "listener[3].targets", // relay without [relay]
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        let s = load(
            "[[listener]]\nname = \"app\"\naddress = \"127.0.0.1:2587\"\nauth = \"required\"\n\
             allow_plaintext_auth = true\npolicy = \"none\"\n",
            &[],
        )
        .unwrap();
        let l = &s.listeners[0];
        assert_eq!(
            (l.name.as_str(), l.auth, l.policy.clone()),
            ("app", AuthMode::Required, PolicyProfile::None)
        );
        assert_eq!(l.targets, ["store"], "the default targets");
    }

    #[test]
    fn a_listener_names_an_existing_policy_profile() {
        let s = load(
            "[policy.profiles.lenient]\nchecks = []\n\
             [[listener]]\nname = \"mx2\"\naddress = \"127.0.0.1:2526\"\npolicy = \"lenient\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            s.listeners[0].policy,
            PolicyProfile::Named("lenient".into())
        );
        let errors = load(
            "[[listener]]\nname = \"mx2\"\naddress = \"127.0.0.1:2526\"\npolicy = \"strict\"\n",
            &[],
        )
        .unwrap_err();
        let text = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            text.contains("\"strict\"") && text.contains("policy.profiles"),
            "{text}"
        );
    }

    #[test]
    fn listeners_and_routes_come_from_the_environment_too() {
        let s = load(
            "[[listener]]\nname = \"mx2\"\naddress = \"127.0.0.1:2526\"\n",
            &[
                ("INTAKE_LISTENER__0__ADDRESS", "127.0.0.1:2600"),
                ("INTAKE_LISTENER__1__NAME", "hook"),
                ("INTAKE_LISTENER__1__ADDRESS", "127.0.0.1:2601"),
                ("INTAKE_LISTENER__1__POLICY", "none"),
                ("INTAKE_ROUTE__0__DOMAINS", r#"["dev.example.com"]"#),
                ("INTAKE_ROUTE__0__TARGETS", r#"["store"]"#),
            ],
        )
        .unwrap();
        let got: Vec<(&str, String)> = s
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.address.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("mx2", "127.0.0.1:2600".to_string()),
                ("hook", "127.0.0.1:2601".to_string())
            ]
        );
        assert_eq!(s.routes.len(), 1);
        assert!(s.routes[0].domains.accepts("dev.example.com"));
        // A mistake names the variable it came from.
        let errs = load("", &[("INTAKE_LISTENER__0__ADDRESS", "nowhere")]).unwrap_err();
        let text = errs
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains("INTAKE_LISTENER__0__ADDRESS"), "{text}");
    }

    #[test]
    fn routes_need_domains_and_configured_targets() {
        let errs = load(
            "[[route]]\ndomains = [\"a@b\"]\ntargets = [\"store\"]\n\
             [[route]]\ndomains = [\"x.test\"]\ntargets = [\"webhook\"]\n\
             [[route]]\ntargets = [\"store\"]\nwhat = 1\n",
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "route[0].domains",
            "route[1].targets",
            "route[2].domains",
            "route[2].what",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn store_settings_are_backend_neutral() {
        let s = load(
            "[store]\npath = \"/srv/mail\"\nmax_batch = 64\nbusy_timeout = \"2s\"\n",
            &[("INTAKE_STORE__COMMIT_DELAY", "0")],
        )
        .unwrap();
        assert_eq!(s.store.kind, intake_store::StoreKind::Sqlite);
        assert_eq!(s.store.path, PathBuf::from("/srv/mail"));
        assert_eq!(
            (s.store.max_batch, s.store.commit_delay),
            (64, Duration::ZERO)
        );
        assert_eq!(s.store.sqlite.busy_timeout, Duration::from_secs(2));
        let s = load(
            "[store]\ntype = \"postgres\"\n",
            &[("INTAKE_STORE__URL", "postgres://intake:pw@db/intake")],
        )
        .unwrap();
        assert_eq!(s.store.kind, intake_store::StoreKind::Postgres);
        assert_eq!(
            s.store.describe(),
            "postgres at postgres://intake:***@db/intake"
        );
        assert_eq!(s.store.pool, intake_store::PoolOptions::default());
        let s = load(
            "[store]\ntype = \"mariadb\"\npool_size = 4\nconnect_timeout = \"2s\"\n\
             require_durable_commit = false\n",
            &[("INTAKE_STORE__URL", "mysql://intake:pw@db:3306/intake")],
        )
        .unwrap();
        assert_eq!(s.store.kind, intake_store::StoreKind::Mysql);
        assert_eq!(
            s.store.mysql,
            intake_store::MysqlOptions {
                require_durable_commit: false,
            }
        );
        assert_eq!(
            s.store.pool,
            intake_store::PoolOptions {
                pool_size: 4,
                connect_timeout: Duration::from_secs(2),
            }
        );
        assert_eq!(
            s.store.describe(),
            "mysql at mysql://intake:***@db:3306/intake"
        );
        let s = load(
            "[store]\ntype = \"postgres\"\nurl = \"postgres://db/x\"\npool_size = 4\n",
            &[("INTAKE_STORE__CONNECT_TIMEOUT", "2s")],
        )
        .unwrap();
        assert_eq!(
            (s.store.pool.pool_size, s.store.pool.connect_timeout),
            (4, Duration::from_secs(2))
        );
        for (file, key) in [
            ("[store]\ntype = \"redis\"\n", "store.url"),
            ("[store]\npool_size = 0\n", "store.pool_size"),
            ("[store]\nurl = \"postgres://db/x\"\n", "store.url"),
            ("[store]\ntype = \"oracle\"\n", "store.type"),
            (
                "[store]\nconnect_timeout = \"0s\"\n",
                "store.connect_timeout",
            ),
            (
                "[aliases]\nsecret = \"a\"\nsecret_file = \"/run/secrets/alias\"\n",
                "aliases.secret_file",
            ),
        ] {
            let errs = load(file, &[]).unwrap_err();
            assert!(errs.iter().any(|e| e.key == key), "{file}: {errs:?}");
        }
        let s = load("[aliases]\nsecret_file = \"/run/secrets/alias\"\n", &[]).unwrap();
        assert_eq!(
            s.alias_secret_file.as_deref(),
            Some(std::path::Path::new("/run/secrets/alias"))
        );
    }

    #[test]
    fn known_keys_cover_every_section() {
        let keys = known_keys();
        for k in ["smtp.listen", "smtp.domains", "store.path", "log.level"] {
            assert!(keys.iter().any(|x| x == k), "{k}");
        }
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    /// Every setting is documented, and the example file is valid and complete.
    #[test]
    fn docs_and_example_cover_every_key() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let doc = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
        let example = std::fs::read_to_string(root.join("intake.example.toml")).unwrap();
        let table: toml::Table = example.parse().unwrap();
        Settings::from_table(&table, &crate::config::Sources::default()).expect("example is valid");
        for key in known_keys() {
            let (section, name) = key.split_once('.').unwrap();
            let var = format!("INTAKE_{}__{}", section.to_uppercase(), name.to_uppercase());
            assert!(
                doc.contains(&format!("`{name}`")) && doc.contains(&var),
                "{key} ({var}) not in docs/configuration.md"
            );
            assert!(
                table.get(section).and_then(|s| s.get(name)).is_some(),
                "{key} not in intake.example.toml"
            );
        }
        // And the other way round: every variable the reference names is a setting.
        let known: std::collections::BTreeSet<String> = known_keys().into_iter().collect();
        let mut named = 0;
        for (i, _) in doc.match_indices("INTAKE_") {
            let var: String = doc[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let Some((section, name)) = var["INTAKE_".len()..].split_once("__") else {
                continue; // INTAKE_CONFIG, INTAKE_LISTENER, INTAKE_ROUTE
            };
            if name.is_empty() || name.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                continue; // INTAKE_SECTION__KEY as a pattern, INTAKE_LISTENER__0__…
            }
            named += 1;
            let key = format!("{section}.{name}")
                .replace("__", ".")
                .to_lowercase();
            if key.starts_with("policy.profiles.") {
                continue; // one per named profile
            }
            assert!(
                known.contains(&key) || section == "SECTION",
                "docs/configuration.md names {var}, but {key} is not a setting"
            );
        }
        assert!(named > 100, "the reference names the settings' variables");
        // Each setting's row is inside a table: a row after a blank line starts no table.
        let lines: Vec<&str> = doc.lines().collect();
        for (i, pair) in lines.windows(2).enumerate() {
            assert!(
                !pair[1].starts_with("| `") || pair[0].starts_with('|'),
                "docs/configuration.md line {}: a table row outside a table",
                i + 2
            );
        }
    }

    /// The example configurations in docs/policy.md load without errors.
    #[test]
    fn policy_examples_are_valid() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let doc = std::fs::read_to_string(root.join("docs/policy.md")).unwrap();
        let blocks: Vec<&str> = doc
            .split("```toml\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .collect();
        assert_eq!(blocks.len(), 2, "the MX and the gateway");
        let load = |b: &str| {
            let table: toml::Table = b.parse().unwrap_or_else(|e| panic!("{e}\n{b}"));
            Settings::from_table(&table, &crate::config::Sources::default())
                .unwrap_or_else(|e| panic!("{e:?}\n{b}"))
        };
        // The MX: rejects listed clients, greylists, tags spam, records SPF/DKIM/DMARC.
        let mx = load(blocks[0]).policy;
        assert!(mx.dnsbl.enabled && mx.dnsbl.zones.len() == 3);
        assert_eq!(mx.dnsbl.action, intake_policy::DnsblAction::Reject);
        assert!(mx.greylist.enabled);
        assert!(mx.rspamd.enabled && !mx.rspamd.refuse);
        assert!(mx.sender_auth.enabled && !mx.sender_auth.dmarc_enforce);
        assert_eq!(mx.sender_auth.hostname, "mx.inbox.example");
        assert_eq!(
            mx.profile(intake_policy::DEFAULT_PROFILE).unwrap(),
            [
                "dnsbl",
                "helo",
                "recipients",
                "greylist",
                "sender_auth",
                "rspamd"
            ]
        );
        // The gateway: only valid recipients.
        let gw = load(blocks[1]).policy;
        assert!(gw.recipients.file.is_some());
        assert!(gw.greylist.enabled && gw.sender_auth.dmarc_enforce);
        assert_eq!(gw.spamd.reject_score, Some(10.0));
    }
}
