//! The resolved settings, with every default in one place.

use std::net::SocketAddr;
use std::path::PathBuf;

use intake_config::{ConfigError, Reader, Sources};
pub use intake_delivery::TargetName;
pub use intake_delivery::settings::DeliverySettings;
pub use intake_http::settings::HttpSettings;
use intake_http::{Scopes, Token};
use intake_policy::PolicyConfig;
use intake_smtp::SessionConfig;
use intake_smtp::limits::LimitSettings;
use intake_smtp::proxy::ProxySettings;
pub use intake_store::StoreSettings;
pub use intake_store::read::RetentionSettings;

use super::listeners::{self, AuthConfig, ListenerSettings, PolicyProfile, RouteSettings};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
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
    /// Tags deliveries get (`mailpit.tags_from_header`, `mailpit.tags_from_plus_addresses`;
    /// only while the Mailpit listener is on).
    pub mailpit_tags: intake_store::DeliveryTags,
    /// The POP3 server (`[pop3]`; off unless `pop3.listen` is set).
    pub pop3: intake_pop3::Pop3Settings,
    /// The directory of recipients and logins (`[directory]`: LDAP or SQL), if any.
    pub directory: Option<intake_directory::DirectorySettings>,
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

    let store = intake_store::read::read_store(r);

    let mut http = intake_http::settings::read_http(r, tls_files.is_some());
    // Tags deliveries get while the Mailpit listener is on, as Mailpit's options say.
    let tags_header: bool = r.get("mailpit.tags_from_header", true);
    let tags_plus: bool = r.get("mailpit.tags_from_plus_addresses", true);
    let mailpit_tags = intake_store::DeliveryTags {
        header: tags_header && http.mailpit_listen.is_some(),
        plus_addresses: tags_plus && http.mailpit_listen.is_some(),
    };
    let retention = intake_store::read::read_retention(r);
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
    let delivery = intake_delivery::settings::read_delivery(r, &hostname, domains.is_catch_all());
    let auth = listeners::read_auth(r, tls_files.is_some());
    let listeners = listeners::read_listeners(
        r,
        tls_files.is_some(),
        &delivery,
        smtp.listen,
        auth.directory,
    );
    let routes = listeners::read_routes(r, &delivery);
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
    // Mailpit's chaos triggers run as checks of every profile.
    policy.chaos = http.mailpit_chaos;
    if http.mailpit_release && delivery.sections.relay.is_none() {
        r.error(
            "mailpit.release",
            "releasing messages needs the [relay] downstream to send them to (relay.server)",
        );
    }

    let cluster = intake_cluster::ClusterConfig::read(r);
    let pop3 = intake_pop3::Pop3Settings::read(r);
    let directory = intake_directory::DirectorySettings::read(r);
    let answers =
        |f: fn(&intake_directory::DirectorySettings) -> bool| directory.as_ref().is_some_and(f);
    if policy.recipients.directory && !answers(|d| d.answers_recipients()) {
        r.error(
            "recipients.directory",
            "needs a [directory] that answers recipients (LDAP, or directory.recipient_query)",
        );
    }
    let wants_logins = auth.directory || listeners.iter().any(|l| l.auth_directory);
    if wants_logins && !answers(|d| d.answers_logins()) {
        r.error(
            "auth.directory",
            "needs a [directory] that answers logins (LDAP, or directory.password_query)",
        );
    }
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
        mailpit_tags,
        directory,
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
