//! Per-listener settings, resolved once at start-up and shared by every session.

use std::sync::Arc;
use std::time::Duration;

use intake_core::{Clock, IdSource, Pipeline, RandomIds, SystemClock};
use intake_proto::LineEndings;

/// Which recipient domains Intake accepts mail for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainPolicy {
    exact: Vec<String>,
    /// `*.example.org` patterns, kept as `.example.org`.
    suffixes: Vec<String>,
}

impl DomainPolicy {
    /// From patterns: `example.com` (exactly that domain) or `*.example.org` (any
    /// subdomain of it, not the domain itself). No patterns: every domain (catch-all).
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(patterns: I) -> Result<Self, String> {
        let mut p = DomainPolicy::default();
        for pat in patterns {
            let pat = pat.as_ref().trim().trim_end_matches('.').to_lowercase();
            if let Some(rest) = pat.strip_prefix("*.") {
                if rest.is_empty() || rest.contains('*') {
                    return Err(format!("bad domain pattern {pat:?}"));
                }
                p.suffixes.push(format!(".{rest}"));
            } else if pat.is_empty() || pat.contains('*') || pat.contains('@') || pat.contains(' ')
            {
                return Err(format!(
                    "bad domain pattern {pat:?}: use example.com or *.example.com"
                ));
            } else {
                p.exact.push(pat);
            }
        }
        Ok(p)
    }

    /// True when no domains are configured: every domain is accepted.
    pub fn is_catch_all(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty()
    }

    /// Whether mail for `domain` is accepted.
    pub fn accepts(&self, domain: &str) -> bool {
        if self.is_catch_all() {
            return true;
        }
        let d = domain.trim_end_matches('.').to_lowercase();
        self.exact.contains(&d) || self.suffixes.iter().any(|s| d.ends_with(s.as_str()))
    }

    /// The first exact domain, if any (used to complete `<Postmaster>`).
    pub fn first_domain(&self) -> Option<&str> {
        self.exact.first().map(String::as_str)
    }
}

/// Whether and how a listener offers TLS (RFC 3207).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// No STARTTLS.
    #[default]
    Off,
    /// STARTTLS offered; plaintext mail accepted too.
    Optional,
    /// STARTTLS offered; MAIL before it gets `530 5.7.0`.
    Required,
}

/// What to do about a protocol violation that is a mark of spamware rather than harm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViolationPolicy {
    /// Log it and carry on.
    #[default]
    Note,
    /// Refuse: for an early talker, answer 554 and close; for improper pipelining, refuse
    /// each pipelined command with 503 5.5.0.
    Reject,
}

/// SMTP AUTH on a listener (RFC 4954).
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// Checks logins; `None`: AUTH is not offered.
    pub authenticator: Option<Arc<dyn intake_core::Authenticator>>,
    /// Offer AUTH without TLS (a password in clear text): only for trusted networks.
    pub allow_plaintext: bool,
    /// MAIL needs a login first (`530 5.7.0`).
    pub required: bool,
    /// MAIL FROM must be the user's address or one of its senders (`553 5.7.1`).
    pub restrict_senders: bool,
    /// A logged-in user may send to any domain (submission); without a login only
    /// `smtp.domains` are accepted. Never an open relay: without AUTH this does nothing.
    pub relay: bool,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("offered", &self.authenticator.is_some())
            .field("allow_plaintext", &self.allow_plaintext)
            .field("required", &self.required)
            .field("restrict_senders", &self.restrict_senders)
            .field("relay", &self.relay)
            .finish()
    }
}

/// Settings every session of a listener shares.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The listener's name in logs and metrics (`default`, or a `[[listener]]`'s name).
    pub listener: std::sync::Arc<str>,
    /// Our name in the greeting, EHLO reply and `Received:` header.
    pub hostname: String,
    /// Recipient domains we accept.
    pub domains: DomainPolicy,
    /// Largest message, octets (advertised in SIZE, enforced while reading).
    pub max_message_size: u64,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Longest command line, octets including CRLF.
    pub max_line_length: usize,
    /// Client errors before the session is closed with 421.
    pub max_errors: u32,
    /// Accept EHLO/HELO without a name.
    pub lenient_helo: bool,
    /// Bare CR/LF policy for commands and DATA.
    pub line_endings: LineEndings,
    /// Idle time allowed while waiting for a command.
    pub command_timeout: Duration,
    /// Idle time allowed while receiving message content.
    pub data_timeout: Duration,
    /// Open connections at most; more are answered 421 and closed.
    pub max_connections: usize,
    /// How long in-flight sessions get to finish on shutdown.
    pub shutdown_timeout: Duration,
    /// STARTTLS policy (needs a certificate).
    pub tls: TlsMode,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// Per-client limits shared by the listener's connections.
    pub limits: Option<std::sync::Arc<crate::limits::ClientLimits>>,
    /// Messages one connection may send (0: no limit).
    pub max_messages_per_connection: usize,
    /// How long a whole session may last.
    pub session_timeout: Duration,
    /// Wait this long before the greeting, to catch clients that talk first.
    pub greeting_delay: Duration,
    /// Clients that talk before the greeting.
    pub early_talkers: ViolationPolicy,
    /// Clients that pipeline before PIPELINING was offered.
    pub unauthorized_pipelining: ViolationPolicy,
    /// The policy checks, by stage (none: accept whatever the protocol allows).
    pub checks: Arc<Pipeline>,
    /// How long the store may take to make a message durable before the client gets a
    /// 451 (the message may still be committed: the client's retry is then a duplicate).
    pub deliver_timeout: Duration,
    /// Where sessions read the time (`Received:` dates, arrival times).
    pub clock: Arc<dyn Clock>,
    /// Where message ids come from.
    pub ids: Arc<dyn IdSource>,
    /// SMTP AUTH.
    pub auth: AuthSettings,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            listener: "default".into(),
            hostname: "localhost".into(),
            domains: DomainPolicy::default(),
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: 4096,
            max_errors: 20,
            lenient_helo: true,
            line_endings: LineEndings::Reject,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            max_connections: 1000,
            shutdown_timeout: Duration::from_secs(30),
            tls: TlsMode::Off,
            tls_handshake_timeout: Duration::from_secs(30),
            limits: None,
            max_messages_per_connection: 0,
            session_timeout: Duration::from_secs(1800),
            greeting_delay: Duration::ZERO,
            early_talkers: ViolationPolicy::Note,
            unauthorized_pipelining: ViolationPolicy::Note,
            checks: Arc::new(Pipeline::new()),
            deliver_timeout: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            auth: AuthSettings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_patterns() {
        let p = DomainPolicy::new(["Example.com", "*.example.org"]).unwrap();
        assert!(p.accepts("example.com"));
        assert!(p.accepts("EXAMPLE.COM."));
        assert!(!p.accepts("sub.example.com"));
        assert!(p.accepts("a.example.org"));
        assert!(p.accepts("a.b.example.org"));
        assert!(!p.accepts("example.org"));
        assert!(!p.accepts("badexample.org"));
        assert!(
            DomainPolicy::new(Vec::<String>::new())
                .unwrap()
                .accepts("anything.test")
        );
        assert!(DomainPolicy::new(["a@b"]).is_err());
        assert!(DomainPolicy::new(["*."]).is_err());
    }
}
