//! The layer above every engine: what makes an engine's [`MailBackend`],
//! [`DirectoryBackend`] and [`PolicyBackend`] the [`MailStore`], [`UserDirectory`],
//! [`RecipientTable`] and [`PolicyState`] the rest of Intake uses.
//!
//! - Aliases: a recipient shaped like an alias (`d-…@domain`) is looked up (through a small
//!   cache) and the message filed in its mailbox; the backend only ever sees final mailboxes.
//! - Events: after a backend's write has returned (committed), the layer publishes what it
//!   changed: `Event::New` for a delivery, one `Event::Deleted` per [`Removal`]. On the
//!   local [`EventBus`], and on an [`EventFeed`] when one is set (between nodes).
//! - Retention: [`spawn_retention`] runs the policy on a timer, with the layer's clock.
//! - Keys are normalized here (lower-cased mailboxes, trimmed recipients and users), so that
//!   every backend stores them alike.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use intake_core::{
    DirectoryBackend, Event, EventBus, EventFeed, Evicted, GreyRecord, Incoming, Listing,
    MailBackend, MailStore, MessageId, Page, PolicyBackend, PolicyState, Query, RecipientTable,
    Removal, Retention, SearchMode, StoreError, StoredMessage, Summary, User, UserDirectory, alias,
    mailbox_key,
};
use intake_core::{MailTags, TagBackend, clean_tags};

use crate::tagging::DeliveryTags;
use tokio_util::sync::CancellationToken;

/// Aliases kept in the cache at most (then it starts over).
const ALIAS_CACHE: u64 = 100_000;

/// Where the generated alias secret is kept in the backend (see [`Store::alias_secret`]).
const ALIAS_SECRET_KEY: &str = "alias_secret";

/// An engine's capabilities, each as its own trait object. An engine that keeps all three
/// (every engine today) becomes one with `Backends::from(Arc::new(engine))`.
#[derive(Clone)]
pub struct Backends {
    /// Mail.
    pub mail: Arc<dyn MailBackend>,
    /// Users and recipients.
    pub directory: Arc<dyn DirectoryBackend>,
    /// Policy state.
    pub policy: Arc<dyn PolicyBackend>,
    /// Tags on messages.
    pub tags: Arc<dyn TagBackend>,
}

impl<E: MailBackend + DirectoryBackend + PolicyBackend + TagBackend> From<Arc<E>> for Backends {
    fn from(engine: Arc<E>) -> Backends {
        Backends {
            mail: engine.clone(),
            directory: engine.clone(),
            policy: engine.clone(),
            tags: engine,
        }
    }
}

/// An engine with aliases, events and normalized keys: the [`MailStore`],
/// [`UserDirectory`], [`RecipientTable`] and [`PolicyState`] Intake uses. Hand each caller
/// only the capability it needs (`Arc<Store>` coerces to each trait object).
pub struct Store {
    backends: Backends,
    events: EventBus,
    feed: Option<Arc<dyn EventFeed>>,
    /// Alias → mailbox, for aliases found registered (an alias never changes mailbox in
    /// practice: it is derived from it). Misses are not cached: another node may register
    /// the alias at any time.
    aliases: moka::sync::Cache<String, String>,
    /// Tags a delivery gets from its `X-Tags` header or plus-addressing (none by default).
    delivery_tags: DeliveryTags,
    /// `store.search`: whether words can be searched at all.
    search: SearchMode,
}

impl Store {
    /// The layer over an engine (`Arc<Engine>` or [`Backends`]), publishing on a bus of
    /// its own.
    pub fn new(backends: impl Into<Backends>) -> Store {
        Store {
            backends: backends.into(),
            events: EventBus::default(),
            feed: None,
            aliases: moka::sync::Cache::new(ALIAS_CACHE),
            delivery_tags: DeliveryTags::default(),
            search: SearchMode::Full,
        }
    }

    /// Tags each delivery as `rules` say (`X-Tags`, plus-addressing).
    pub fn with_delivery_tags(mut self, rules: DeliveryTags) -> Store {
        self.delivery_tags = rules;
        self
    }

    /// Publishes on `events` instead.
    pub fn with_events(mut self, events: EventBus) -> Store {
        self.events = events;
        self
    }

    /// Searches as `store.search` says: with [`SearchMode::Off`] a query with words is
    /// refused ([`StoreError::BadQuery`], saying why) instead of finding nothing.
    pub fn with_search(mut self, search: SearchMode) -> Store {
        self.search = search;
        self
    }

    /// Also publishes every committed change on `feed` (for other nodes).
    pub fn with_feed(mut self, feed: Arc<dyn EventFeed>) -> Store {
        self.feed = Some(feed);
        self
    }

    /// Where committed changes are announced.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The engine underneath (to lay another `Store` over it, with a feed, say).
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The generated alias secret, shared by every node on the same data: created once
    /// (first writer wins) and kept in the backend. An older version kept it in
    /// `legacy_file` (`<store.path>/alias.key`); if that file exists when the backend has
    /// none yet, its key is imported, so existing aliases keep working.
    pub async fn alias_secret(&self, legacy_file: Option<&Path>) -> Result<Vec<u8>, StoreError> {
        let legacy = legacy_file
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|k| k.trim().to_string())
            .filter(|k| k.len() >= 32);
        let candidate = legacy.unwrap_or_else(|| {
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
        });
        let key = self
            .backends
            .mail
            .meta_get_or_insert(ALIAS_SECRET_KEY, &candidate)
            .await?;
        Ok(key.into_bytes())
    }

    fn publish(&self, event: Event) {
        if let Some(feed) = &self.feed {
            feed.publish(&event);
        }
        self.events.publish(event);
    }

    fn publish_removed(&self, removed: Vec<Removal>) {
        for Removal { id, mailboxes } in removed {
            self.publish(Event::Deleted { mailboxes, id });
        }
    }

    /// The mailbox mail to `address` (lower-cased) is filed in.
    async fn file_under(&self, address: String) -> Result<String, StoreError> {
        if !alias::looks_like_alias(&address) {
            return Ok(address);
        }
        if let Some(mailbox) = self.aliases.get(&address) {
            return Ok(mailbox);
        }
        match self.backends.mail.alias_get(&address).await? {
            Some(mailbox) => {
                self.remember_alias(address, mailbox.clone());
                Ok(mailbox)
            }
            None => Ok(address),
        }
    }

    fn remember_alias(&self, alias: String, mailbox: String) {
        self.aliases.insert(alias, mailbox);
    }
}

/// Messages read per engine call when the layer filters a search itself.
const SCAN_CHUNK: u64 = 500;

impl Store {
    /// A search with terms engines do not index (Mailpit's filters, negations): the
    /// engine finds the core part's matches, and each is fetched and checked here. Costs
    /// one fetch per core match, so a narrow core (a word, a sender) keeps it quick.
    async fn search_scanning(&self, query: &Query, page: Page) -> Result<Listing, StoreError> {
        let core = query.core();
        let mut out = Listing::default();
        let mut offset = 0;
        loop {
            let chunk = Page {
                offset,
                limit: SCAN_CHUNK,
            };
            let got = self.backends.mail.search(&core, chunk).await?;
            let n = got.messages.len() as u64;
            for s in got.messages {
                let Some(m) = self.backends.mail.fetch(s.id).await? else {
                    continue;
                };
                let tags = if query.needs_tags() {
                    self.backends.tags.tags_get(s.id).await?.unwrap_or_default()
                } else {
                    Vec::new()
                };
                let body = if query.needs_body() {
                    intake_core::mime::index_text(&m.raw).0
                } else {
                    Default::default()
                };
                if !query.matches_rest(&m, &m.mailboxes, &body, &tags) {
                    continue;
                }
                out.total += 1;
                out.unread += u64::from(!s.seen);
                if out.total > page.offset && (out.messages.len() as u64) < page.limit {
                    out.messages.push(s);
                }
            }
            if n < SCAN_CHUNK {
                return Ok(out);
            }
            offset += n;
        }
    }
}

/// How a recipient entry is kept: trimmed, without a final dot, lower-cased.
fn recipient_key(address: &str) -> String {
    address.trim().trim_end_matches('.').to_lowercase()
}

/// How a user's address (or sender) is kept: trimmed and lower-cased.
fn user_key(address: &str) -> String {
    address.trim().to_lowercase()
}

#[async_trait]
impl MailStore for Store {
    async fn deliver(&self, msg: Incoming) -> Result<(), StoreError> {
        let mut mailboxes: Vec<String> = Vec::new();
        for address in msg.mailboxes() {
            let mailbox = self.file_under(address).await?;
            if !mailboxes.contains(&mailbox) {
                mailboxes.push(mailbox);
            }
        }
        // Made before the message moves into the backend (a few small clones).
        let message = Summary::from(&msg);
        let (id, tags) = (msg.id, self.delivery_tags.tags_for(&msg));
        self.backends.mail.deliver(msg, mailboxes.clone()).await?;
        if !tags.is_empty() {
            // After the commit: a tag that fails to stick costs the tag, never the message.
            if let Err(e) = self.backends.tags.tags_put(id, &tags).await {
                tracing::warn!(%id, error = %e, "could not tag a delivered message");
            }
        }
        self.publish(Event::New {
            mailboxes,
            message: Box::new(message),
        });
        Ok(())
    }

    async fn list_mailbox(&self, mailbox: &str, page: Page) -> Result<Listing, StoreError> {
        self.backends
            .mail
            .list_mailbox(&mailbox_key(mailbox), page)
            .await
    }

    async fn list_all(&self, page: Page) -> Result<Listing, StoreError> {
        self.backends.mail.list_all(page).await
    }

    async fn search(&self, query: &Query, page: Page) -> Result<Listing, StoreError> {
        if let Some(why) = self.search.refusal(query) {
            return Err(StoreError::BadQuery(why));
        }
        if !query.needs_scan() {
            return self.backends.mail.search(query, page).await;
        }
        self.search_scanning(query, page).await
    }

    async fn fetch(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.backends.mail.fetch(id).await
    }

    async fn delete(&self, id: MessageId) -> Result<bool, StoreError> {
        let removed = self.backends.mail.delete(id).await?;
        let found = removed.is_some();
        self.publish_removed(removed.into_iter().collect());
        Ok(found)
    }

    async fn delete_mailbox(&self, mailbox: &str) -> Result<u64, StoreError> {
        let removed = self
            .backends
            .mail
            .delete_mailbox(&mailbox_key(mailbox))
            .await?;
        let n = removed.len() as u64;
        self.publish_removed(removed);
        Ok(n)
    }

    async fn set_seen(&self, id: MessageId, seen: bool) -> Result<bool, StoreError> {
        self.backends.mail.set_seen(id, seen).await
    }

    async fn register_alias(&self, alias: &str, mailbox: &str) -> Result<(), StoreError> {
        let (alias, mailbox) = (mailbox_key(alias), mailbox_key(mailbox));
        self.backends.mail.alias_put(&alias, &mailbox).await?;
        self.remember_alias(alias, mailbox);
        Ok(())
    }

    async fn evict(&self, policy: &Retention) -> Result<Evicted, StoreError> {
        let now = jiff::Timestamp::now().as_millisecond();
        let done = self.backends.mail.evict(policy, now).await?;
        self.publish_removed(done.removed);
        Ok(done.evicted)
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.backends.mail.size_on_disk()
    }

    fn durability_warning(&self) -> Option<String> {
        self.backends.mail.durability_warning()
    }

    async fn close(&self) {
        self.backends.mail.close().await
    }
}

#[async_trait]
impl MailTags for Store {
    async fn tags_of(&self, id: MessageId) -> Result<Option<Vec<String>>, StoreError> {
        self.backends.tags.tags_get(id).await
    }

    async fn set_tags(&self, id: MessageId, tags: &[String]) -> Result<bool, StoreError> {
        self.backends.tags.tags_put(id, &clean_tags(tags)).await
    }

    async fn add_tags(&self, id: MessageId, tags: &[String]) -> Result<bool, StoreError> {
        let Some(mut have) = self.backends.tags.tags_get(id).await? else {
            return Ok(false);
        };
        have.extend(tags.iter().cloned());
        self.backends.tags.tags_put(id, &clean_tags(&have)).await
    }

    async fn remove_tags(&self, id: MessageId, tags: &[String]) -> Result<bool, StoreError> {
        let Some(have) = self.backends.tags.tags_get(id).await? else {
            return Ok(false);
        };
        let gone = clean_tags(tags);
        let keep: Vec<String> = have
            .into_iter()
            .filter(|t| !gone.iter().any(|g| g.eq_ignore_ascii_case(t)))
            .collect();
        self.backends.tags.tags_put(id, &keep).await
    }

    async fn all_tags(&self) -> Result<Vec<String>, StoreError> {
        self.backends.tags.tags_all().await
    }

    async fn rename_tag(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        let (Some(from), Some(to)) = (intake_core::clean_tag(from), intake_core::clean_tag(to))
        else {
            return Ok(0);
        };
        if from == to {
            return Ok(0);
        }
        self.backends.tags.tags_rename(&from, &to).await
    }

    async fn delete_tag(&self, tag: &str) -> Result<u64, StoreError> {
        match intake_core::clean_tag(tag) {
            Some(t) => self.backends.tags.tags_remove(&t).await,
            None => Ok(0),
        }
    }
}

#[async_trait]
impl RecipientTable for Store {
    async fn recipient_add(&self, address: &str) -> Result<bool, StoreError> {
        self.backends
            .directory
            .recipient_add(&recipient_key(address))
            .await
    }

    async fn recipient_remove(&self, address: &str) -> Result<bool, StoreError> {
        self.backends
            .directory
            .recipient_remove(&recipient_key(address))
            .await
    }

    async fn recipient_list(&self) -> Result<Vec<String>, StoreError> {
        self.backends.directory.recipient_list().await
    }

    async fn recipient_lookup(&self, address: &str) -> Result<Option<bool>, StoreError> {
        self.backends
            .directory
            .recipient_lookup(&recipient_key(address))
            .await
    }
}

#[async_trait]
impl PolicyState for Store {
    async fn greylist_get(&self, key: &str) -> Result<Option<GreyRecord>, StoreError> {
        self.backends.policy.greylist_get(key).await
    }

    async fn greylist_put(&self, key: &str, record: GreyRecord) -> Result<(), StoreError> {
        self.backends.policy.greylist_put(key, record).await
    }

    async fn greylist_expire(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.backends.policy.greylist_expire(before_ms).await
    }
}

#[async_trait]
impl UserDirectory for Store {
    async fn user_get(&self, address: &str) -> Result<Option<User>, StoreError> {
        self.backends.directory.user_get(&user_key(address)).await
    }

    async fn user_add(&self, user: User) -> Result<bool, StoreError> {
        let user = User {
            address: user_key(&user.address),
            senders: user.senders.iter().map(|s| user_key(s)).collect(),
            ..user
        };
        self.backends.directory.user_add(user).await
    }

    async fn user_set_password(&self, address: &str, hash: &str) -> Result<bool, StoreError> {
        self.backends
            .directory
            .user_set_password(&user_key(address), hash)
            .await
    }

    async fn user_set_enabled(&self, address: &str, enabled: bool) -> Result<bool, StoreError> {
        self.backends
            .directory
            .user_set_enabled(&user_key(address), enabled)
            .await
    }

    async fn user_list(&self) -> Result<Vec<User>, StoreError> {
        self.backends.directory.user_list().await
    }
}

/// Applies `policy` every `interval` until `shutdown`, logging what it removed. Nothing to
/// do for an empty policy.
pub fn spawn_retention(
    store: Arc<dyn MailStore>,
    policy: Retention,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    if policy == Retention::default() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            match store.evict(&policy).await {
                Ok(e) if e.messages > 0 => tracing::info!(
                    deleted = e.messages,
                    by_mailbox_cap = e.by_mailbox_cap,
                    by_age = e.by_age,
                    by_size = e.by_size,
                    "retention: evicted old mail"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention pass failed; will retry"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::conformance::incoming;
    use crate::memory::MemoryBackend;

    /// A feed that records what it is given.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<Event>>);

    impl EventFeed for Recorded {
        fn publish(&self, event: &Event) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    #[tokio::test]
    async fn a_feed_sees_every_committed_change_even_without_local_listeners() {
        let feed = Arc::new(Recorded::default());
        let store = Store::new(Arc::new(MemoryBackend::new())).with_feed(feed.clone());
        let m = incoming(&["a@x.test"], "hi");
        let id = m.id;
        store.deliver(m).await.unwrap();
        assert!(store.delete(id).await.unwrap());
        let seen = feed.0.lock().unwrap();
        assert!(matches!(&seen[..], [Event::New { .. }, Event::Deleted { id: d, .. }] if *d == id));
    }

    #[tokio::test]
    async fn a_failed_delivery_announces_nothing() {
        let backend = Arc::new(MemoryBackend::new());
        let store = Store::new(backend.clone());
        let mut rx = store.events().subscribe();
        backend.close().await;
        assert!(store.deliver(incoming(&["a@x.test"], "hi")).await.is_err());
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn the_alias_secret_of_an_older_version_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("alias.key");
        let old = "0123456789abcdef0123456789abcdef0123";
        std::fs::write(&legacy, format!("{old}\n")).unwrap();
        let store = Store::new(Arc::new(MemoryBackend::new()));
        assert_eq!(
            store.alias_secret(Some(&legacy)).await.unwrap(),
            old.as_bytes()
        );
        // Kept in the store from now on, whatever becomes of the file.
        std::fs::write(&legacy, "another-key-another-key-another-key!").unwrap();
        assert_eq!(
            store.alias_secret(Some(&legacy)).await.unwrap(),
            old.as_bytes()
        );
        // A file too short to be a key is ignored; a missing one too.
        let fresh = Store::new(Arc::new(MemoryBackend::new()));
        std::fs::write(&legacy, "short").unwrap();
        let made = fresh.alias_secret(Some(&legacy)).await.unwrap();
        assert_eq!(made.len(), 64);
        assert_eq!(fresh.alias_secret(None).await.unwrap(), made);
    }
}
