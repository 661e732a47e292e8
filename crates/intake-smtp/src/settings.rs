//! `[smtp]` and `[tls]` read from the configuration: the default listener's address and
//! session settings, per-client limits (as values: the server keeps the one live
//! [`ClientLimits`](crate::limits::ClientLimits)), PROXY protocol, and the certificate files.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use intake_config::Reader;

use crate::config::{DomainPolicy, SessionConfig, TlsMode};
use crate::limits::LimitSettings;
use crate::proxy::ProxySettings;

/// What `[smtp]` and `[tls]` say.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// The default listener's address (`smtp.listen`).
    pub listen: SocketAddr,
    /// The implicit-TLS listener's address (`smtp.tls_listen`), if any.
    pub tls_listen: Option<SocketAddr>,
    /// Certificate chain and private key (PEM), if TLS is configured.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Session settings, without the live parts the server adds (checks, AUTH, limits).
    pub session: SessionConfig,
    /// Per-client caps and rates.
    pub limits: LimitSettings,
    /// Clients never limited (`smtp.limits_exempt`).
    pub limits_exempt: Vec<ipnet::IpNet>,
    /// PROXY protocol on the SMTP listeners, if enabled.
    pub proxy: Option<ProxySettings>,
}

/// The host's name, for the greeting and `Received:` when `smtp.hostname` is not set.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl SmtpSettings {
    /// Reads `[smtp]` and `[tls]`, recording every problem in `r`.
    pub fn read(r: &mut Reader<'_>) -> SmtpSettings {
        let d = SessionConfig::default();
        let listen = r.address(
            "smtp.listen",
            "127.0.0.1:2525".parse().expect("valid"),
            "127.0.0.1:2525",
        );
        let hostname: String = r.get("smtp.hostname", String::new());
        let hostname = if hostname.is_empty() {
            system_hostname()
        } else {
            hostname
        };
        let patterns: Vec<String> = r.get("smtp.domains", Vec::new());
        let domains = DomainPolicy::new(&patterns).unwrap_or_else(|e| {
            r.error("smtp.domains", e);
            DomainPolicy::default()
        });
        let max_message_size = r.size("smtp.max_message_size", d.max_message_size);
        if max_message_size == 0 {
            r.error("smtp.max_message_size", "must be more than 0");
        }
        let max_recipients: usize = r.get("smtp.max_recipients", d.max_recipients);
        if max_recipients == 0 {
            r.error(
                "smtp.max_recipients",
                "must be at least 1 (RFC 5321 asks for 100)",
            );
        }
        let max_line_length = r.size("smtp.max_line_length", d.max_line_length as u64) as usize;
        if max_line_length < 512 {
            r.error(
                "smtp.max_line_length",
                "must be at least 512 (RFC 5321 §4.5.3.1.4)",
            );
        }
        let max_connections = r.at_least("smtp.max_connections", d.max_connections, 1);
        let session_timeout = r.timeout("smtp.session_timeout", d.session_timeout);
        let deliver_timeout = r.timeout("smtp.deliver_timeout", d.deliver_timeout);
        let tls_files = read_tls_files(r);
        let default_mode = if tls_files.is_some() {
            TlsMode::Optional
        } else {
            TlsMode::Off
        };
        let tls: TlsMode = r.get("smtp.tls", default_mode);
        if tls != TlsMode::Off && tls_files.is_none() {
            r.error(
                "smtp.tls",
                format!(
                    "{:?} needs tls.certificate and tls.key",
                    format!("{tls:?}").to_lowercase()
                ),
            );
        }
        let limits = LimitSettings {
            connections_per_ip: r.get("smtp.max_connections_per_ip", 50),
            connections_per_network: r.get("smtp.max_connections_per_network", 200),
            connection_rate: r.get("smtp.connection_rate", 0),
            message_rate: r.get("smtp.message_rate", 0),
            recipient_rate: r.get("smtp.recipient_rate", 0),
        };
        let limits_exempt = r.networks("smtp.limits_exempt", &["127.0.0.0/8", "::1/128"]);
        let proxy_on: bool = r.get("smtp.proxy_protocol", false);
        let trusted = r.networks("smtp.proxy_trusted", &["127.0.0.1/32", "::1/128"]);
        let proxy_timeout = r.duration("smtp.proxy_timeout", Duration::from_secs(5));
        let proxy = proxy_on.then_some(ProxySettings {
            trusted,
            timeout: proxy_timeout,
        });
        let tls_listen = r.optional_address("smtp.tls_listen", "0.0.0.0:465");
        if tls_listen.is_some() && tls_files.is_none() {
            r.error(
                "smtp.tls_listen",
                "an implicit-TLS listener needs tls.certificate and tls.key",
            );
        }
        let session = SessionConfig {
            listener: "default".into(),
            hostname,
            domains,
            max_message_size,
            max_recipients,
            max_line_length,
            max_errors: r.get("smtp.max_errors", d.max_errors),
            lenient_helo: r.get("smtp.lenient_helo", d.lenient_helo),
            line_endings: r.get("smtp.bare_line_endings", d.line_endings),
            command_timeout: r.duration("smtp.command_timeout", d.command_timeout),
            data_timeout: r.duration("smtp.data_timeout", d.data_timeout),
            max_connections,
            shutdown_timeout: r.duration("smtp.shutdown_timeout", d.shutdown_timeout),
            tls,
            tls_handshake_timeout: r
                .duration("smtp.tls_handshake_timeout", d.tls_handshake_timeout),
            max_messages_per_connection: r.get(
                "smtp.max_messages_per_connection",
                d.max_messages_per_connection,
            ),
            session_timeout,
            greeting_delay: r.duration("smtp.greeting_delay", d.greeting_delay),
            early_talkers: r.get("smtp.early_talkers", d.early_talkers),
            unauthorized_pipelining: r
                .get("smtp.unauthorized_pipelining", d.unauthorized_pipelining),
            deliver_timeout,
            ..d
        };
        SmtpSettings {
            listen,
            tls_listen: tls_files.as_ref().and(tls_listen),
            tls_files,
            session,
            limits,
            limits_exempt,
            proxy,
        }
    }
}

/// `tls.certificate` and `tls.key`: both or neither, each file readable and in PEM form
/// (checked here so that `intake check-config` says what `serve` would refuse).
fn read_tls_files(r: &mut Reader<'_>) -> Option<(PathBuf, PathBuf)> {
    let certificate = r.optional_path("tls.certificate");
    let key = r.optional_path("tls.key");
    match (certificate, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            if let Err(e) = crate::tls::TlsCerts::load(&cert, &key) {
                let which = if e.is_about_the_key() {
                    "tls.key"
                } else {
                    "tls.certificate"
                };
                r.error(which, format!("{e}"));
            }
            Some((cert, key))
        }
        (Some(_), None) => {
            r.error(
                "tls.key",
                "tls.certificate is set: the private key is needed too",
            );
            None
        }
        (None, Some(_)) => {
            r.error(
                "tls.certificate",
                "tls.key is set: the certificate is needed too",
            );
            None
        }
    }
}
