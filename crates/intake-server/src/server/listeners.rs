//! The SMTP listeners, all made by one builder: the default listener (`smtp.listen`) is
//! simply the first, the implicit-TLS one (`smtp.tls_listen`) the second, then each
//! `[[listener]]`. A listener's service is the `[smtp]` session settings with its own TLS,
//! AUTH, checks and targets, and the live objects every listener shares (the limits, the
//! authenticator, the targets).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use intake_delivery::TargetSet;

use super::targets::checks_for;
use crate::config::{AuthMode, ListenerSettings, PolicyProfile, Settings, TlsPolicy};

/// The live objects every listener shares, built once and kept across reloads.
pub(super) struct Shared {
    pub targets: Arc<TargetSet>,
    /// Logins against Intake's own users.
    pub auth: Arc<dyn intake_core::Authenticator>,
    /// Logins against the `[directory]`, when one is configured.
    pub directory_auth: Option<Arc<dyn intake_core::Authenticator>>,
    pub limits: Arc<intake_smtp::limits::ClientLimits>,
    pub tls: Option<Arc<intake_smtp::tls::TlsCerts>>,
    /// The store's group-commit counter (sessions receiving content), for the driver.
    pub arrivals: Option<intake_core::Arrivals>,
}

/// Every SMTP listener the settings ask for, the default one first. The default listener
/// and the implicit-TLS one are described like a `[[listener]]`: named `default`, with the
/// `[auth]` rules, the `default` policy profile and `delivery.targets`.
pub(super) fn specs(settings: &Settings) -> Vec<ListenerSettings> {
    let a = &settings.auth;
    let auth = match (a.enabled, a.required) {
        (false, _) => AuthMode::Off,
        (true, false) => AuthMode::Optional,
        (true, true) => AuthMode::Required,
    };
    let default = ListenerSettings {
        name: "default".into(),
        address: settings.smtp_listen,
        tls: match settings.smtp.tls {
            intake_smtp::TlsMode::Off => TlsPolicy::Off,
            intake_smtp::TlsMode::Optional => TlsPolicy::Optional,
            intake_smtp::TlsMode::Required => TlsPolicy::Required,
        },
        auth,
        allow_plaintext_auth: a.allow_plaintext,
        relay: a.relay,
        restrict_senders: a.restrict_senders,
        auth_directory: a.directory,
        policy: PolicyProfile::Default,
        targets: settings.delivery.targets.clone(),
    };
    let mut out = vec![default.clone()];
    if let Some(address) = settings.smtps_listen {
        out.push(ListenerSettings {
            address,
            tls: TlsPolicy::Implicit,
            ..default
        });
    }
    out.extend(settings.listeners.iter().cloned());
    out
}

/// What a listener is called in the log and in errors.
pub(super) fn label(spec: &ListenerSettings) -> String {
    match (spec.name.as_str(), spec.tls) {
        ("default", TlsPolicy::Implicit) => "SMTPS listener".into(),
        ("default", _) => "SMTP listener".into(),
        (name, _) => format!("listener {name:?}"),
    }
}

/// The key a reload finds a running listener by: its name and configured address.
pub(super) fn key(spec: &ListenerSettings) -> (String, SocketAddr) {
    (spec.name.clone(), spec.address)
}

/// The service of one listener: the `[smtp]` session settings with its TLS, AUTH, policy
/// checks and targets.
pub(super) fn service(
    settings: &Settings,
    spec: &ListenerSettings,
    shared: &Shared,
    profiles: &intake_policy::Profiles,
) -> anyhow::Result<intake_smtp::Service> {
    let mut cfg = settings.smtp.clone();
    cfg.listener = spec.name.as_str().into();
    cfg.tls = match spec.tls {
        TlsPolicy::Off => intake_smtp::TlsMode::Off,
        TlsPolicy::Optional | TlsPolicy::Implicit => intake_smtp::TlsMode::Optional,
        TlsPolicy::Required => intake_smtp::TlsMode::Required,
    };
    cfg.limits = Some(shared.limits.clone());
    let authenticator = match (&shared.directory_auth, spec.auth_directory) {
        (Some(directory), true) => directory.clone(),
        _ => shared.auth.clone(),
    };
    cfg.auth = intake_smtp::config::AuthSettings {
        authenticator: (spec.auth != AuthMode::Off).then_some(authenticator),
        allow_plaintext: spec.allow_plaintext_auth,
        required: spec.auth == AuthMode::Required,
        restrict_senders: spec.restrict_senders,
        relay: spec.relay,
    };
    let profile = match &spec.policy {
        PolicyProfile::Default => Some("default"),
        PolicyProfile::Named(name) => Some(name.as_str()),
        PolicyProfile::None => None,
    };
    cfg.checks = Arc::new(match profile {
        Some(p) => checks_for(profiles, p, &shared.targets, &spec.targets)?,
        None => intake_core::Pipeline::new(),
    });
    Ok(intake_smtp::Service {
        cfg: Arc::new(cfg),
        targets: shared.targets.pick(&spec.targets)?,
        arrivals: shared.arrivals.clone(),
        tls: shared.tls.clone(),
        implicit_tls: spec.tls == TlsPolicy::Implicit,
        proxy: settings.proxy.clone(),
        live: Some(Arc::new(intake_smtp::LiveConfig::default())),
    })
}

/// Binds an SMTP listener with a deep accept queue: a burst of connections (a restart of a
/// busy peer, a reconnecting load balancer) waits in the kernel rather than being dropped.
pub(super) fn bind(spec: &ListenerSettings) -> anyhow::Result<TcpListener> {
    let addr = spec.address;
    let bind = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(4096)
    };
    let what = match (spec.name.as_str(), spec.tls) {
        ("default", TlsPolicy::Implicit) => "(smtp.tls_listen)".to_string(),
        ("default", _) => "(smtp.listen)".to_string(),
        (name, _) => format!("(listener {name:?})"),
    };
    bind().with_context(|| format!("binding SMTP to {addr} {what}"))
}
