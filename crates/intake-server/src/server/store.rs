//! The store and what lives beside it: the event feed between nodes, the cluster's Redis,
//! the alias secret.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;

/// The alias secret: `aliases.secret`, the contents of `aliases.secret_file`, or else one
/// generated once and kept in the store (shared by every node on the same data; an
/// `alias.key` an older version left in `store.path` is imported).
pub(super) async fn alias_secret(
    settings: &Settings,
    store: &intake_store::Store,
) -> anyhow::Result<Vec<u8>> {
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

/// The link to the cluster's Redis when `cluster.redis_url` is set; the client limits in
/// `settings` count the other nodes from the first sync on.
pub(super) fn cluster(
    settings: &Settings,
    limits: &Arc<intake_smtp::limits::ClientLimits>,
) -> anyhow::Result<Option<Arc<intake_cluster::Cluster>>> {
    if settings.cluster.redis_url.is_empty() {
        return Ok(None);
    }
    let c = intake_cluster::Cluster::new(settings.cluster.clone())
        .map_err(anyhow::Error::msg)
        .context("setting up the cluster's Redis (cluster.redis_url)")?;
    c.share_limits(limits.clone());
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
/// theirs on the bus); and that tags deliveries as `[mailpit]` says.
pub(super) fn with_event_feed(
    settings: &Settings,
    opened: Arc<intake_store::Store>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<intake_store::Store>> {
    let tags = settings.mailpit_tags;
    let cfg = event_feed(settings);
    if cfg.is_none() && tags == intake_store::DeliveryTags::default() {
        return Ok(opened);
    }
    let bus = opened.events().clone();
    let mut store = intake_store::Store::new(opened.backends().clone())
        .with_events(bus.clone())
        .with_delivery_tags(tags);
    if let Some(cfg) = cfg {
        let feed = intake_cluster::RedisFeed::start(cfg, bus, shutdown.clone())
            .map_err(anyhow::Error::msg)
            .context("starting the event feed between nodes")?;
        store = store.with_feed(feed);
    }
    Ok(Arc::new(store))
}
