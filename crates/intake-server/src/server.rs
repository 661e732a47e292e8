//! Wiring: open the store, bind the listeners, run until shut down.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use intake_core::{EventBus, MailStore};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::fdlimit;

/// The alias secret: `aliases.secret`, the contents of `aliases.secret_file`, or else one
/// generated once and kept in the store (shared by every node on the same data; an
/// `alias.key` an older version left in `store.path` is imported).
async fn alias_secret(settings: &Settings, store: &intake_store::Store) -> anyhow::Result<Vec<u8>> {
    if !settings.alias_secret.is_empty() {
        return Ok(settings.alias_secret.as_bytes().to_vec());
    }
    if let Some(file) = &settings.alias_secret_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading {} (aliases.secret_file)", file.display()))?;
        let key = text.trim();
        anyhow::ensure!(
            !key.is_empty(),
            "{} (aliases.secret_file) is empty",
            file.display()
        );
        return Ok(key.as_bytes().to_vec());
    }
    let legacy = settings.store.path.join("alias.key");
    store
        .alias_secret(Some(&legacy))
        .await
        .context("reading the alias secret from the store")
}

/// A running server.
pub struct Running {
    /// Applies a new configuration to the running listeners (SIGHUP).
    pub reloader: Arc<Reloader>,
    /// Where SMTP listens (the real port when the configured one was 0).
    pub smtp_addr: SocketAddr,
    /// Where implicit-TLS SMTP listens, if it does.
    pub smtps_addr: Option<SocketAddr>,
    /// The `[[listener]]`s: name and where each listens.
    pub listener_addrs: Vec<(String, SocketAddr)>,
    /// Where HTTP listens, if it does.
    pub http_addr: Option<SocketAddr>,
    /// Where the Mailpit-compatible API listens, if it does.
    pub mailpit_addr: Option<SocketAddr>,
    /// The TLS certificates in use (reloaded on SIGHUP).
    pub tls: Option<Arc<intake_smtp::tls::TlsCerts>>,
    /// The store the server writes.
    pub store: Arc<dyn MailStore>,
    /// Committed changes.
    pub events: EventBus,
    shutdown: CancellationToken,
    smtp: JoinHandle<std::io::Result<()>>,
    smtps: Option<JoinHandle<std::io::Result<()>>>,
    listeners: Vec<JoinHandle<std::io::Result<()>>>,
    /// The `[[listener]]` names, in the order of `listeners`.
    listener_names: Vec<String>,
    http: Option<JoinHandle<std::io::Result<()>>>,
    mailpit: Option<JoinHandle<std::io::Result<()>>>,
    /// The cluster's sync task: at shutdown it removes this node's counts from Redis.
    cluster: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets sessions finish (up to the shutdown timeout), then closes the
    /// store after its last commit.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server has stopped (after [`Running::shutdown_token`] is cancelled),
    /// then closes the store after its last commit.
    ///
    /// A listener task that ends on its own (an error, a panic) stops the whole server: it
    /// is logged, the other listeners stop accepting and let the transactions in flight
    /// finish, the store is closed as on any shutdown, and the error says which listener
    /// ended and why (`intake serve` exits non-zero with it).
    pub async fn wait(self) -> anyhow::Result<()> {
        use futures_util::StreamExt;
        let mut tasks = vec![(ListenerTask::new("SMTP listener", self.smtp), false)];
        tasks.extend(
            self.smtps
                .map(|h| (ListenerTask::new("SMTPS listener", h), false)),
        );
        for (name, h) in self.listener_names.iter().zip(self.listeners) {
            tasks.push((ListenerTask::new(format!("listener {name:?}"), h), false));
        }
        tasks.extend(
            self.http
                .map(|h| (ListenerTask::new("HTTP listener", h), true)),
        );
        tasks.extend(
            self.mailpit
                .map(|h| (ListenerTask::new("Mailpit API listener", h), true)),
        );
        let token = self.shutdown.clone();
        let mut running: futures_util::stream::FuturesUnordered<_> = tasks
            .into_iter()
            .map(|(task, http)| task.finish(http, token.clone()))
            .collect();
        let mut failure: Option<anyhow::Error> = None;
        // Until shutdown is asked for, any listener that ends is a failure.
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => {}
            Some(ended) = running.next() => {
                let early = !self.shutdown.is_cancelled();
                let error = ended.failure().or_else(|| {
                    early.then(|| anyhow::anyhow!("{} stopped accepting", ended.name))
                });
                if let Some(e) = error {
                    tracing::error!(error = %format!("{e:#}"), "a listener ended: shutting down");
                    failure = Some(e);
                }
                self.shutdown.cancel();
            }
        }
        // The others stop accepting and finish their sessions (SMTP: up to
        // smtp.shutdown_timeout); HTTP gives open requests a short grace.
        while let Some(ended) = running.next().await {
            if let Some(e) = ended.failure() {
                tracing::error!(error = %format!("{e:#}"), "listener failed");
                failure.get_or_insert(e);
            }
        }
        if let Some(h) = self.cluster {
            let _ = h.await;
        }
        // Whatever happened above: queued writes are finished and the store closed.
        self.store.close().await;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The token that stops the server.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// A listener's task, named for the log.
struct ListenerTask {
    name: String,
    handle: JoinHandle<std::io::Result<()>>,
}

/// How a listener task ended.
struct Ended {
    name: String,
    /// None: the HTTP grace after shutdown ran out first (open requests are left).
    result: Option<Result<std::io::Result<()>, tokio::task::JoinError>>,
}

/// How long HTTP requests may go on after shutdown (event streams never end by themselves).
const HTTP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl ListenerTask {
    fn new(name: impl Into<String>, handle: JoinHandle<std::io::Result<()>>) -> Self {
        ListenerTask {
            name: name.into(),
            handle,
        }
    }

    /// Waits for the task; an HTTP one only until `HTTP_GRACE` after `shutdown`.
    async fn finish(self, http: bool, shutdown: CancellationToken) -> Ended {
        let ListenerTask { name, handle } = self;
        let result = if http {
            let grace = async {
                shutdown.cancelled().await;
                tokio::time::sleep(HTTP_GRACE).await;
            };
            tokio::select! {
                r = handle => Some(r),
                _ = grace => None,
            }
        } else {
            Some(handle.await)
        };
        Ended { name, result }
    }
}

impl Ended {
    /// The error, if the task failed (an error returned, or a panic).
    fn failure(&self) -> Option<anyhow::Error> {
        match &self.result {
            None | Some(Ok(Ok(()))) => None,
            Some(Ok(Err(e))) => Some(anyhow::anyhow!("{}: {e}", self.name)),
            Some(Err(e)) => Some(anyhow::anyhow!("{} task: {e}", self.name)),
        }
    }
}

/// Binds an SMTP listener with a deep accept queue: a burst of connections (a restart of a
/// busy peer, a reconnecting load balancer) waits in the kernel rather than being dropped.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Raises the open-file limit and refuses to start when the connection caps do not fit.
fn check_descriptors(settings: &Settings) -> anyhow::Result<()> {
    let limit = fdlimit::raise().context("reading the open-file limit")?;
    let smtp_listeners = 1 + u64::from(settings.smtps_listen.is_some());
    let budget = fdlimit::Budget {
        smtp: settings.smtp.max_connections as u64 * smtp_listeners,
        http: settings.http.config.max_connections as u64
            * (u64::from(settings.http.listen.is_some())
                + u64::from(settings.http.mailpit_listen.is_some())),
        limit,
    };
    budget.check().map_err(anyhow::Error::msg)?;
    tracing::info!(
        open_file_limit = budget.limit,
        smtp_connections = budget.smtp,
        http_connections = budget.http,
        reserved = fdlimit::RESERVED,
        "descriptor budget"
    );
    Ok(())
}

/// The one authenticator of the process (users from the store), shared by every listener
/// so that failed logins count wherever they happen.
fn authenticator(
    settings: &Settings,
    users: Arc<dyn intake_core::UserDirectory>,
) -> Arc<dyn intake_core::Authenticator> {
    let a = &settings.auth;
    Arc::new(intake_core::StoreAuthenticator::new(
        users,
        a.per_client,
        a.per_account,
    ))
}

/// AUTH of the default listener, from `[auth]`.
fn auth_settings(
    settings: &Settings,
    authenticator: &Arc<dyn intake_core::Authenticator>,
) -> intake_smtp::config::AuthSettings {
    let a = &settings.auth;
    intake_smtp::config::AuthSettings {
        authenticator: a.enabled.then(|| authenticator.clone()),
        allow_plaintext: a.allow_plaintext,
        required: a.required,
        restrict_senders: a.restrict_senders,
        relay: a.relay,
    }
}

/// The service of one `[[listener]]`: the default listener's settings with its own TLS,
/// AUTH, checks and targets.
fn listener_service(
    l: &crate::config::ListenerSettings,
    default: &intake_smtp::Service,
    targets: &TargetSet,
    authenticator: &Arc<dyn intake_core::Authenticator>,
) -> anyhow::Result<intake_smtp::Service> {
    use crate::config::{AuthMode, PolicyProfile, TlsPolicy};
    let mut cfg = (*default.cfg).clone();
    cfg.listener = l.name.as_str().into();
    cfg.tls = match l.tls {
        TlsPolicy::Off => intake_smtp::TlsMode::Off,
        TlsPolicy::Optional | TlsPolicy::Implicit => intake_smtp::TlsMode::Optional,
        TlsPolicy::Required => intake_smtp::TlsMode::Required,
    };
    if l.policy == PolicyProfile::None {
        cfg.checks = Arc::new(intake_core::Pipeline::new());
    }
    cfg.auth = intake_smtp::config::AuthSettings {
        authenticator: (l.auth != AuthMode::Off).then(|| authenticator.clone()),
        allow_plaintext: l.allow_plaintext_auth,
        required: l.auth == AuthMode::Required,
        restrict_senders: l.restrict_senders,
        relay: l.relay,
    };
    Ok(intake_smtp::Service {
        cfg: Arc::new(cfg),
        targets: targets.pick(&l.targets)?,
        tls: default.tls.clone(),
        implicit_tls: l.tls == TlsPolicy::Implicit,
        proxy: default.proxy.clone(),
        live: None,
    })
}

/// Delivery targets of these kinds (one instance of each kind, shared by the listeners
/// that use it, so that a relay's connection limit holds for the whole process).
struct TargetSet {
    routes: Vec<intake_core::Route>,
    /// The relay itself (for recipient verification).
    relay_target: Option<Arc<intake_smtp::relay::RelayTarget>>,
    store: Arc<dyn intake_core::DeliveryTarget>,
    /// The store engine's group-commit counter, for listeners that deliver to the store.
    arrivals: Option<intake_core::Arrivals>,
    relay: Option<Arc<dyn intake_core::DeliveryTarget>>,
    webhook: Option<Arc<dyn intake_core::DeliveryTarget>>,
    program: Option<Arc<dyn intake_core::DeliveryTarget>>,
}

impl TargetSet {
    /// The targets of these kinds, with the `[[route]]`s tried first.
    fn pick(&self, kinds: &[crate::config::TargetKind]) -> anyhow::Result<intake_core::Targets> {
        Ok(intake_core::Targets::new(self.list(kinds)?)
            .with_routes(self.routes.clone())
            .with_arrivals(self.arrivals.clone()))
    }

    fn list(
        &self,
        kinds: &[crate::config::TargetKind],
    ) -> anyhow::Result<Vec<Arc<dyn intake_core::DeliveryTarget>>> {
        use crate::config::TargetKind;
        let mut list = Vec::new();
        for k in kinds {
            let t = match k {
                TargetKind::Store => Some(self.store.clone()),
                TargetKind::Relay => self.relay.clone(),
                TargetKind::Webhook => self.webhook.clone(),
                TargetKind::Program => self.program.clone(),
            };
            list.push(t.with_context(|| format!("delivery target {k:?} is not configured"))?);
        }
        Ok(list)
    }
}

/// The policy checks of a listener whose targets are `kinds`: the `[recipients]` and
/// `[greylist]` checks, then, with `relay.verify_recipients`, the downstream's word on each
/// recipient that goes to the relay (by `kinds` or a `[[route]]`).
/// Every policy profile's checks, built once from the settings (one resolver for all).
/// In a cluster, greylist records are kept in its Redis rather than in the store.
fn policy_profiles(
    settings: &Settings,
    store: &Arc<intake_store::Store>,
    cluster: Option<&Arc<intake_cluster::Cluster>>,
) -> anyhow::Result<intake_policy::Profiles> {
    let grey: Arc<dyn intake_core::GreyState> = match cluster {
        Some(c) => c.grey_state(),
        None => Arc::new(intake_core::StoreGreyState(store.clone())),
    };
    intake_policy::Profiles::build_with(
        &settings.policy,
        store.clone(),
        grey,
        settings.smtp.clock.clone(),
    )
    .map_err(anyhow::Error::msg)
    .context("setting up the policy checks")
}

/// The link to the cluster's Redis when `cluster.redis_url` is set; the client limits in
/// `settings` count the other nodes from the first sync on.
fn cluster(settings: &Settings) -> anyhow::Result<Option<Arc<intake_cluster::Cluster>>> {
    if settings.cluster.redis_url.is_empty() {
        return Ok(None);
    }
    let c = intake_cluster::Cluster::new(settings.cluster.clone())
        .map_err(anyhow::Error::msg)
        .context("setting up the cluster's Redis (cluster.redis_url)")?;
    if let Some(l) = &settings.smtp.limits {
        c.share_limits(l.clone());
    }
    Ok(Some(c))
}

/// Where live events between nodes go, if anywhere: the one place that decides.
///
/// - `store.type = "redis"`: always, over Redis pub/sub (on `cluster.redis_url` when set,
///   else on the store's own Redis), since every node reads the same store;
/// - `[cluster] redis_url` set: over that Redis, for every store but PostgreSQL (whose nodes
///   share events through the database's own LISTEN/NOTIFY);
/// - otherwise none: one node.
fn event_feed(settings: &Settings) -> Option<intake_cluster::FeedConfig> {
    use intake_store::StoreKind;
    let cluster = &settings.cluster;
    let store = &settings.store;
    let (redis_url, key_prefix, timeout) = match store.kind {
        StoreKind::Postgres => return None,
        _ if !cluster.redis_url.is_empty() => (
            cluster.redis_url.clone(),
            cluster.key_prefix.clone(),
            cluster.timeout,
        ),
        StoreKind::Redis => (
            store.url.clone(),
            store.redis.key_prefix.clone(),
            store.redis.timeout,
        ),
        _ => return None,
    };
    Some(intake_cluster::FeedConfig {
        redis_url,
        key_prefix,
        node: uuid::Uuid::new_v4().simple().to_string(),
        timeout,
    })
}

/// The store with the event feed [`event_feed`] picks, if any: a layer over the same
/// backend and bus that also sends every committed change to the other nodes (and puts
/// theirs on the bus).
fn with_event_feed(
    settings: &Settings,
    opened: Arc<intake_store::Store>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<intake_store::Store>> {
    let Some(cfg) = event_feed(settings) else {
        return Ok(opened);
    };
    let bus = opened.events().clone();
    let feed = intake_cluster::RedisFeed::start(cfg, bus.clone(), shutdown.clone())
        .map_err(anyhow::Error::msg)
        .context("starting the event feed between nodes")?;
    let store = intake_store::Store::new(opened.backends().clone())
        .with_events(bus)
        .with_feed(feed);
    Ok(Arc::new(store))
}

fn checks_for(
    settings: &Settings,
    profiles: &intake_policy::Profiles,
    profile: &str,
    targets: &TargetSet,
    kinds: &[crate::config::TargetKind],
) -> anyhow::Result<intake_core::Pipeline> {
    use crate::config::TargetKind;
    // The profile's checks, then (for relayed mail) recipient verification.
    let mut checks = (*profiles
        .get(profile)
        .with_context(|| format!("no policy profile {profile:?} (policy.profiles)"))?)
    .clone();
    let relays = |k: &[TargetKind]| k.contains(&TargetKind::Relay);
    let any_relay = relays(kinds) || settings.routes.iter().any(|r| relays(&r.targets));
    if let (true, true, Some(relay)) = (
        settings.delivery.relay_verify,
        any_relay,
        targets.relay_target.clone(),
    ) {
        let routes: Vec<(intake_smtp::DomainPolicy, bool)> = settings
            .routes
            .iter()
            .map(|r| (r.domains.clone(), relays(&r.targets)))
            .collect();
        let default = relays(kinds);
        let skip = Arc::new(move |rcpt: &str| {
            let domain = rcpt.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            let relayed = routes
                .iter()
                .find(|(d, _)| d.accepts(domain))
                .map(|(_, r)| *r)
                .unwrap_or(default);
            !relayed
        });
        let c = settings
            .delivery
            .relay
            .as_ref()
            .expect("a relay target has settings");
        let deadline = c.connect_timeout + c.command_timeout * 4;
        checks.add(
            Arc::new(intake_smtp::relay::RecipientVerify::new(relay, skip)),
            deadline,
            intake_core::OnError::Defer,
        );
    }
    Ok(checks)
}

/// Every configured delivery target.
fn target_set(
    settings: &Settings,
    store: &Arc<dyn MailStore>,
    arrivals: Option<intake_core::Arrivals>,
) -> anyhow::Result<TargetSet> {
    let mut set = TargetSet {
        routes: Vec::new(),
        relay_target: None,
        store: Arc::new(intake_core::StoreTarget(store.clone())),
        arrivals,
        relay: None,
        webhook: None,
        program: None,
    };
    let d = &settings.delivery;
    if let Some(cfg) = d.relay.clone() {
        let server = cfg.server.clone();
        let relay = Arc::new(
            intake_smtp::relay::RelayTarget::new(cfg)
                .with_context(|| format!("setting up the relay to {server} (relay.tls_ca)"))?,
        );
        set.relay_target = Some(relay.clone());
        set.relay = Some(relay);
    }
    if let Some(cfg) = d.webhook.clone() {
        set.webhook = Some(Arc::new(
            intake_smtp::webhook::WebhookTarget::new(cfg)
                .context("setting up the webhook (webhook.url, webhook.tls_ca)")?,
        ));
    }
    if let Some(cfg) = d.program.clone() {
        set.program = Some(Arc::new(intake_smtp::program::ProgramTarget::new(cfg)));
    }
    for r in &settings.routes {
        let domains = r.domains.clone();
        set.routes.push(intake_core::Route {
            matches: Arc::new(move |d: &str| domains.accepts(d)),
            targets: set.list(&r.targets)?,
        });
    }
    Ok(set)
}

/// The default listener's session settings.
fn default_session(
    settings: &Settings,
    checks: Arc<intake_core::Pipeline>,
    auth: &Arc<dyn intake_core::Authenticator>,
) -> Arc<intake_smtp::SessionConfig> {
    Arc::new(intake_smtp::SessionConfig {
        checks,
        auth: auth_settings(settings, auth),
        ..settings.smtp.clone()
    })
}

/// A `[[listener]]`'s service, from the default one.
fn extra_service(
    settings: &Settings,
    l: &crate::config::ListenerSettings,
    default: &intake_smtp::Service,
    targets: &TargetSet,
    auth: &Arc<dyn intake_core::Authenticator>,
    profiles: &intake_policy::Profiles,
) -> anyhow::Result<intake_smtp::Service> {
    let mut svc = listener_service(l, default, targets, auth)?;
    let profile = match &l.policy {
        crate::config::PolicyProfile::Default => Some("default"),
        crate::config::PolicyProfile::Named(name) => Some(name.as_str()),
        crate::config::PolicyProfile::None => None,
    };
    if let Some(profile) = profile {
        let mut cfg = (*svc.cfg).clone();
        cfg.checks = Arc::new(checks_for(
            settings, profiles, profile, targets, &l.targets,
        )?);
        svc.cfg = Arc::new(cfg);
    }
    Ok(svc)
}

/// What SIGHUP replaces: the session settings of every SMTP listener (domains, limits,
/// sizes, timeouts, recipients, checks, AUTH rules), for new connections; sessions already
/// open keep theirs. Addresses, connection caps, the store, targets and HTTP settings need a
/// restart: a reload that changes them says so in the log.
pub struct Reloader {
    store: Arc<intake_store::Store>,
    cluster: Option<Arc<intake_cluster::Cluster>>,
    targets: Arc<TargetSet>,
    auth: Arc<dyn intake_core::Authenticator>,
    default: intake_smtp::Service,
    extra: Vec<(String, Arc<intake_smtp::LiveConfig>)>,
    started: Settings,
}

impl Reloader {
    /// Applies `new` (already validated) to every listener.
    pub fn apply(&self, new: &Settings) -> anyhow::Result<()> {
        // The checks are built again from the new settings (a resolver that cannot be made
        // refuses the reload; the old checks stay).
        let profiles = policy_profiles(new, &self.store, self.cluster.as_ref())?;
        let checks = checks_for(
            new,
            &profiles,
            "default",
            &self.targets,
            &new.delivery.targets,
        )?;
        let default = intake_smtp::Service {
            cfg: default_session(new, Arc::new(checks), &self.auth),
            ..self.default.clone()
        };
        let mut updates = vec![(
            default.live.clone().expect("the default listener is live"),
            default.cfg.clone(),
        )];
        for (name, live) in &self.extra {
            match new.listeners.iter().find(|l| &l.name == name) {
                Some(l) => {
                    let svc =
                        extra_service(new, l, &default, &self.targets, &self.auth, &profiles)?;
                    updates.push((live.clone(), svc.cfg));
                }
                None => tracing::warn!(listener = %name,
                    "SIGHUP: listener removed from the configuration; it runs until a restart"),
            }
        }
        for (live, cfg) in updates {
            live.set(cfg);
        }
        // The new limits are the ones the cluster counts now.
        if let (Some(c), Some(l)) = (&self.cluster, &new.smtp.limits) {
            c.share_limits(l.clone());
        }
        for key in restart_needed(&self.started, new) {
            tracing::warn!(
                key,
                "SIGHUP: this setting changed and takes effect after a restart"
            );
        }
        Ok(())
    }
}

/// Settings a reload does not apply.
fn restart_needed(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut differs = |key, a: String, b: String| {
        if a != b {
            keys.push(key);
        }
    };
    differs(
        "smtp.listen",
        format!("{:?}", old.smtp_listen),
        format!("{:?}", new.smtp_listen),
    );
    differs(
        "smtp.tls_listen",
        format!("{:?}", old.smtps_listen),
        format!("{:?}", new.smtps_listen),
    );
    differs(
        "smtp.max_connections",
        old.smtp.max_connections.to_string(),
        new.smtp.max_connections.to_string(),
    );
    differs(
        "store",
        format!("{:?}", old.store),
        format!("{:?}", new.store),
    );
    differs("http", format!("{:?}", old.http), format!("{:?}", new.http));
    differs(
        "delivery",
        format!("{:?}", old.delivery),
        format!("{:?}", new.delivery),
    );
    differs(
        "listener",
        format!(
            "{:?}",
            old.listeners
                .iter()
                .map(|l| (&l.name, l.address))
                .collect::<Vec<_>>()
        ),
        format!(
            "{:?}",
            new.listeners
                .iter()
                .map(|l| (&l.name, l.address))
                .collect::<Vec<_>>()
        ),
    );
    differs(
        "tls",
        format!("{:?}", old.tls_files),
        format!("{:?}", new.tls_files),
    );
    differs("run", format!("{:?}", old.run), format!("{:?}", new.run));
    differs(
        "cluster",
        format!("{:?}", old.cluster),
        format!("{:?}", new.cluster),
    );
    keys
}

/// Runs `fut` once `go` is cancelled (the start gate).
async fn gated<F: std::future::Future>(go: CancellationToken, fut: F) -> F::Output {
    go.cancelled().await;
    fut.await
}

/// Opens the store, binds SMTP and HTTP and starts serving in the background.
pub async fn start(settings: &Settings) -> anyhow::Result<Running> {
    check_descriptors(settings)?;
    let intake_store::Opened {
        store: opened,
        arrivals,
    } = intake_store::open(&settings.store, intake_store::Mode::ReadWrite)
        .await
        .with_context(|| format!("opening the store ({})", settings.store.describe()))?;
    let shutdown = CancellationToken::new();
    let opened = with_event_feed(settings, opened, &shutdown)?;
    let events = opened.events().clone();
    // The alias secret, read (or made) once for the HTTP listeners that need it; before any
    // listener is bound, so that a client finding SMTP up finds HTTP up too.
    let secret = if settings.http.listen.is_some() || settings.http.mailpit_listen.is_some() {
        alias_secret(settings, &opened).await?
    } else {
        Vec::new()
    };
    let store: Arc<dyn MailStore> = opened.clone();
    let listener = bind(settings.smtp_listen)
        .with_context(|| format!("binding SMTP to {} (smtp.listen)", settings.smtp_listen))?;
    let smtp_addr = listener.local_addr()?;
    // Opened once every listener is bound and privileges are dropped: no accept before.
    let go = CancellationToken::new();
    let tls = match &settings.tls_files {
        Some((cert, key)) => Some(Arc::new(
            intake_smtp::tls::TlsCerts::load(cert, key)
                .context("loading the TLS certificate (tls.certificate, tls.key)")?,
        )),
        None => None,
    };
    let (http, http_addr) = match settings.http.listen {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding HTTP to {addr} (http.listen)"))?;
            let bound = l.local_addr()?;
            let mut state = intake_http::AppState::new(
                opened.clone(),
                events.clone(),
                secret.clone(),
                settings.http.config.clone(),
            )
            .with_draining(shutdown.clone());
            if let Some(render) = crate::metrics::render() {
                state = state.with_metrics(render);
            }
            let state = state.with_admin_tokens(settings.admin_tokens.clone());
            let app = intake_http::router(state);
            let cfg = settings.http.config.clone();
            let token = shutdown.clone();
            let https = match (&settings.http.tls, &tls) {
                (true, Some(certs)) => {
                    let certs = certs.clone();
                    Some(Arc::new(move || certs.acceptor()) as intake_http::TlsSource)
                }
                _ => None,
            };
            (
                Some(tokio::spawn(gated(go.clone(), async move {
                    intake_http::serve(l, app, &cfg, https, token).await
                }))),
                Some(bound),
            )
        }
        None => (None, None),
    };
    // The policy checks, wired here so that the session never depends on their backends.
    // Each listener runs the checks of its profile; the default listener's is `default`.
    let cluster = cluster(settings)?;
    let profiles = policy_profiles(settings, &opened, cluster.as_ref())?;
    let targets = Arc::new(target_set(settings, &store, arrivals)?);
    let checks = checks_for(
        settings,
        &profiles,
        "default",
        &targets,
        &settings.delivery.targets,
    )?;
    let auth = authenticator(settings, opened.clone());
    let (mailpit, mailpit_addr) = match settings.http.mailpit_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the Mailpit API to {addr} (mailpit.listen)"))?;
            let bound = l.local_addr()?;
            let state = intake_http::AppState::new(
                opened.clone(),
                events.clone(),
                secret.clone(),
                settings.http.config.clone(),
            );
            let app = intake_http::mailpit_router(state);
            let cfg = settings.http.config.clone();
            let token = shutdown.clone();
            (
                Some(tokio::spawn(gated(go.clone(), async move {
                    intake_http::serve(l, app, &cfg, None, token).await
                }))),
                Some(bound),
            )
        }
        None => (None, None),
    };
    let svc = intake_smtp::Service {
        cfg: default_session(settings, Arc::new(checks), &auth),
        targets: targets.pick(&settings.delivery.targets)?,
        tls: tls.clone(),
        implicit_tls: false,
        proxy: settings.proxy.clone(),
        live: Some(Arc::new(intake_smtp::LiveConfig::default())),
    };
    let (smtps, smtps_addr) = match settings.smtps_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr).await.with_context(|| {
                format!("binding implicit-TLS SMTP to {addr} (smtp.tls_listen)")
            })?;
            let bound = l.local_addr()?;
            let svc = intake_smtp::Service {
                implicit_tls: true,
                ..svc.clone()
            };
            (
                Some(tokio::spawn(gated(
                    go.clone(),
                    intake_smtp::serve_with(l, svc, shutdown.clone()),
                ))),
                Some(bound),
            )
        }
        None => (None, None),
    };
    let mut extra = Vec::new();
    let mut extra_live = Vec::new();
    for l in &settings.listeners {
        let bound = TcpListener::bind(l.address)
            .await
            .with_context(|| format!("binding listener {:?} to {}", l.name, l.address))?;
        let addr = bound.local_addr()?;
        let mut svc = extra_service(settings, l, &svc, &targets, &auth, &profiles)?;
        let live = Arc::new(intake_smtp::LiveConfig::default());
        svc.live = Some(live.clone());
        extra_live.push((l.name.clone(), live));
        tracing::info!(listener = %l.name, address = %addr, tls = ?l.tls, auth = ?l.auth,
            targets = ?l.targets, "extra SMTP listener");
        extra.push((
            l.name.clone(),
            addr,
            tokio::spawn(gated(
                go.clone(),
                intake_smtp::serve_with(bound, svc, shutdown.clone()),
            )),
        ));
    }
    let reloader = Arc::new(Reloader {
        store: opened.clone(),
        cluster: cluster.clone(),
        targets: targets.clone(),
        auth: auth.clone(),
        default: svc.clone(),
        extra: extra_live,
        started: settings.clone(),
    });
    let smtp = tokio::spawn(gated(
        go.clone(),
        intake_smtp::serve_with(listener, svc, shutdown.clone()),
    ));
    // Every listener is bound: become the configured user before anything is accepted.
    if let Err(e) = crate::privileges::drop_privileges(&settings.run) {
        // The gated tasks start, see the shutdown, and end without accepting.
        shutdown.cancel();
        go.cancel();
        return Err(e);
    }
    go.cancel();
    let cluster = cluster.map(|c| c.spawn(shutdown.clone()));
    intake_store::spawn_retention(
        store.clone(),
        settings.retention.policy,
        settings.retention.interval,
        shutdown.clone(),
    );
    tracing::info!(
        smtp = %smtp_addr,
        smtps = %smtps_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        tls = ?settings.smtp.tls,
        http = %http_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        http_access = ?settings.http.config.access.mode,
        mailpit = %mailpit_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        https = settings.http.tls,
        hostname = %settings.smtp.hostname,
        "Intake is listening"
    );
    Ok(Running {
        reloader,
        listener_addrs: extra.iter().map(|(n, a, _)| (n.clone(), *a)).collect(),
        listener_names: extra.iter().map(|(n, _, _)| n.clone()).collect(),
        listeners: extra.into_iter().map(|(_, _, h)| h).collect(),
        smtp_addr,
        smtps_addr,
        http_addr,
        mailpit_addr,
        tls,
        store,
        events,
        shutdown,
        smtp,
        smtps,
        http,
        mailpit,
        cluster,
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

    use super::*;
    use crate::config::Sources;

    /// A raw SMTP client: lines out, the last line of each reply in.
    struct Client {
        read: BufReader<OwnedReadHalf>,
        write: OwnedWriteHalf,
    }

    impl Client {
        async fn greeted(addr: SocketAddr) -> Client {
            let (read, write) = TcpStream::connect(addr).await.unwrap().into_split();
            let mut c = Client {
                read: BufReader::new(read),
                write,
            };
            assert!(c.reply().await.starts_with("220 "));
            c
        }

        async fn send(&mut self, bytes: &str) {
            self.write.write_all(bytes.as_bytes()).await.unwrap();
        }

        async fn reply(&mut self) -> String {
            loop {
                let mut line = String::new();
                self.read.read_line(&mut line).await.unwrap();
                if line.as_bytes().get(3) != Some(&b'-') {
                    return line;
                }
            }
        }

        async fn cmd(&mut self, line: &str) -> String {
            self.send(&format!("{line}\r\n")).await;
            self.reply().await
        }

        async fn start_message(&mut self, helo: &str, rcpt: &str) {
            assert!(self.cmd(&format!("EHLO {helo}")).await.starts_with("250 "));
            assert!(self.cmd("MAIL FROM:<a@b.test>").await.starts_with("250 "));
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            assert!(r.starts_with("250 "), "{r}");
            assert!(self.cmd("DATA").await.starts_with("354 "));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listener_that_ends_stops_the_server_and_the_store_is_closed_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let toml = format!(
            "[smtp]\nlisten = \"127.0.0.1:0\"\nhostname = \"mx.test\"\n\
             [store]\npath = {:?}\n\
             [[listener]]\nname = \"second\"\naddress = \"127.0.0.1:0\"\n",
            data.display().to_string()
        );
        let table: toml::Table = toml.parse().unwrap();
        let settings = Settings::from_table(&table, &Sources::default()).unwrap();
        let running = start(&settings).await.unwrap();
        let addr = running.smtp_addr;

        // One message acknowledged, one in flight.
        let mut done = Client::greeted(addr).await;
        done.start_message("done.test", "done@q.test").await;
        let r = done.cmd("Subject: acknowledged\r\n\r\nhi\r\n.").await;
        assert!(r.starts_with("250 2.0.0"), "{r}");
        let mut busy = Client::greeted(addr).await;
        busy.start_message("busy.test", "busy@q.test").await;
        busy.send("Subject: in flight\r\n\r\nfirst half\r\n").await;

        // The second listener's task ends, as a panic in its accept loop would end it.
        running.listeners[0].abort();
        let waiting = tokio::spawn(running.wait());

        // The server stops: the transaction in flight finishes and is acknowledged, the
        // session is closed, and `wait` says which listener ended (`intake serve` exits
        // non-zero with it).
        let stopping = async {
            let r = busy.cmd("second half\r\n.").await;
            assert!(r.starts_with("250 2.0.0"), "{r}");
            assert!(busy.reply().await.starts_with("421 4.3.2"));
            waiting.await.unwrap()
        };
        let err = tokio::time::timeout(std::time::Duration::from_secs(60), stopping)
            .await
            .expect("the server stops once a listener has ended")
            .expect_err("a listener that ends is an error");
        let text = format!("{err:#}");
        assert!(text.contains("listener \"second\""), "{text}");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer accepting"
        );

        // The store was closed: the WAL is folded into the database, both messages are in it
        // and indexed for search.
        let wal = data.join("intake.db-wal");
        assert!(
            !wal.exists() || wal.metadata().unwrap().len() == 0,
            "WAL left behind: {} bytes",
            wal.metadata().unwrap().len()
        );
        let db = rusqlite::Connection::open(data.join("intake.db")).unwrap();
        let stored: i64 = db
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 2);
        let indexed: i64 = db
            .query_row(
                "SELECT count(*) FROM search_index WHERE search_index MATCH 'acknowledged OR flight'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexed, 2, "every message indexed before the store closed");
    }
}
