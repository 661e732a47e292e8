//! A backend in memory, for tests (the SMTP driver's, the HTTP API's, the policy checks').
//!
//! It passes the conformance suite like any backend, so tests that use it see the store's
//! real behaviour (filing, listings, search, deletes, retention, policy state). Nothing is
//! durable: `deliver` returns at once. For driver tests it can hold deliveries back
//! ([`MemoryBackend::stall`]), as a store that never answers in time.
//!
//! ```
//! # async fn demo() {
//! use intake_core::MailStore;
//! let store = intake_store::memory::store();          // an Arc<Store> over memory
//! assert_eq!(store.list_all(Default::default()).await.unwrap().total, 0);
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use intake_core::{
    DirectoryBackend, Eviction, GreyRecord, Incoming, Listing, MailBackend, MessageId, Page,
    PolicyBackend, Query, Removal, Retention, StoreError, StoredMessage, Summary, TagBackend, User,
    mime,
};
use tokio::sync::watch;

use crate::Store;

/// A [`Store`] over a fresh [`MemoryBackend`].
pub fn store() -> Arc<Store> {
    Arc::new(Store::new(Arc::new(MemoryBackend::default())))
}

/// Everything in memory. See the module docs.
pub struct MemoryBackend {
    state: Mutex<State>,
    /// True while deliveries are held back.
    stalled: watch::Sender<bool>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend {
            state: Mutex::default(),
            stalled: watch::channel(false).0,
        }
    }
}

#[derive(Default)]
struct State {
    closed: bool,
    next_seq: u64,
    /// By arrival order (`seq`), so that newest first is a reverse scan.
    messages: BTreeMap<u64, Kept>,
    seq_of: HashMap<MessageId, u64>,
    aliases: HashMap<String, String>,
    meta: HashMap<String, String>,
    recipients: BTreeSet<String>,
    greylist: HashMap<String, GreyRecord>,
    users: BTreeMap<String, User>,
}

struct Kept {
    message: StoredMessage,
    /// Body text for search, extracted once.
    text: String,
    /// Its tags.
    tags: BTreeSet<String>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        MemoryBackend::default()
    }

    /// Holds every delivery (new and waiting) until called again with `false`.
    pub fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory store")
    }

    /// The state, for a write: `Closed` once closed.
    fn writable(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        let s = self.state();
        if s.closed {
            return Err(StoreError::Closed);
        }
        Ok(s)
    }
}

/// Newest first, one page, with the totals.
fn listing<'a>(matching: impl DoubleEndedIterator<Item = &'a Kept>, page: Page) -> Listing {
    let mut out = Listing::default();
    for (i, k) in matching.rev().enumerate() {
        out.total += 1;
        if !k.message.seen {
            out.unread += 1;
        }
        if (i as u64) >= page.offset && (out.messages.len() as u64) < page.limit {
            out.messages.push(Summary::from(&k.message));
        }
    }
    out
}

impl State {
    /// Deletes a message entirely; its former mailboxes.
    fn remove(&mut self, seq: u64) -> Option<Removal> {
        let kept = self.messages.remove(&seq)?;
        self.seq_of.remove(&kept.message.id);
        Some(Removal {
            id: kept.message.id,
            mailboxes: kept.message.mailboxes,
        })
    }

    /// Unfiles a message from one mailbox, deleting it when no mailbox holds it any more.
    /// `Some(deleted)` if the mailbox held it.
    fn unfile(&mut self, seq: u64, mailbox: &str) -> Option<bool> {
        let kept = self.messages.get_mut(&seq)?;
        let boxes = &mut kept.message.mailboxes;
        let before = boxes.len();
        boxes.retain(|b| b != mailbox);
        if boxes.len() == before {
            return None;
        }
        if boxes.is_empty() {
            self.remove(seq);
            return Some(true);
        }
        Some(false)
    }
}

#[async_trait]
impl MailBackend for MemoryBackend {
    async fn deliver(&self, msg: Incoming, mailboxes: Vec<String>) -> Result<(), StoreError> {
        let mut stalled = self.stalled.subscribe();
        let _ = stalled.wait_for(|s| !*s).await;
        let mut s = self.writable()?;
        if s.seq_of.contains_key(&msg.id) {
            return Err(StoreError::Unavailable(format!(
                "message {} exists",
                msg.id
            )));
        }
        let text = mime::index_text(&msg.raw).0.into_owned();
        let findings = (!msg.findings.is_empty()).then_some(msg.findings);
        let message = StoredMessage {
            id: msg.id,
            received_at: msg.received_at,
            envelope: msg.envelope,
            helo: msg.session.helo,
            client: msg.session.client,
            tls: msg.session.tls,
            size: msg.size,
            sha256: msg.sha256,
            meta: msg.meta,
            raw: msg.raw,
            seen: false,
            mailboxes,
            findings,
        };
        s.next_seq += 1;
        let seq = s.next_seq;
        s.seq_of.insert(message.id, seq);
        s.messages.insert(
            seq,
            Kept {
                message,
                text,
                tags: BTreeSet::new(),
            },
        );
        Ok(())
    }

    async fn list_mailbox(&self, mailbox: &str, page: Page) -> Result<Listing, StoreError> {
        let s = self.state();
        let matching = s
            .messages
            .values()
            .filter(|k| k.message.mailboxes.iter().any(|b| b == mailbox));
        Ok(listing(matching, page))
    }

    async fn list_all(&self, page: Page) -> Result<Listing, StoreError> {
        Ok(listing(self.state().messages.values(), page))
    }

    async fn search(&self, query: &Query, page: Page) -> Result<Listing, StoreError> {
        let s = self.state();
        let matching = s
            .messages
            .values()
            .filter(|k| query.matches(&k.message, &k.message.mailboxes, &k.text));
        Ok(listing(matching, page))
    }

    async fn fetch(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        let s = self.state();
        Ok(s.seq_of
            .get(&id)
            .and_then(|seq| s.messages.get(seq))
            .map(|k| k.message.clone()))
    }

    async fn delete(&self, id: MessageId) -> Result<Option<Removal>, StoreError> {
        let mut s = self.writable()?;
        let Some(&seq) = s.seq_of.get(&id) else {
            return Ok(None);
        };
        Ok(s.remove(seq))
    }

    async fn delete_mailbox(&self, mailbox: &str) -> Result<Vec<Removal>, StoreError> {
        let mut s = self.writable()?;
        let seqs: Vec<(u64, MessageId)> = s
            .messages
            .iter()
            .filter(|(_, k)| k.message.mailboxes.iter().any(|b| b == mailbox))
            .map(|(seq, k)| (*seq, k.message.id))
            .collect();
        let mut removed = Vec::new();
        for (seq, id) in seqs {
            s.unfile(seq, mailbox);
            removed.push(Removal {
                id,
                mailboxes: vec![mailbox.to_string()],
            });
        }
        Ok(removed)
    }

    async fn set_seen(&self, id: MessageId, seen: bool) -> Result<bool, StoreError> {
        let mut s = self.writable()?;
        let Some(&seq) = s.seq_of.get(&id) else {
            return Ok(false);
        };
        match s.messages.get_mut(&seq) {
            Some(k) => {
                k.message.seen = seen;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn evict(&self, policy: &Retention, now_ms: i64) -> Result<Eviction, StoreError> {
        let mut s = self.writable()?;
        let mut out = Eviction::default();
        if let Some(keep) = policy.per_mailbox {
            // Every mailbox's links, newest first.
            let mut links: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            for (seq, k) in s.messages.iter().rev() {
                for b in &k.message.mailboxes {
                    links.entry(b.clone()).or_default().push(*seq);
                }
            }
            for (mailbox, seqs) in links {
                for seq in seqs.into_iter().skip(keep as usize) {
                    let Some(id) = s.messages.get(&seq).map(|k| k.message.id) else {
                        continue;
                    };
                    if let Some(deleted) = s.unfile(seq, &mailbox) {
                        out.evicted.by_mailbox_cap += u64::from(deleted);
                        out.removed.push(Removal {
                            id,
                            mailboxes: vec![mailbox.clone()],
                        });
                    }
                }
            }
        }
        if let Some(age) = policy.max_age {
            let before = now_ms - age.as_millis() as i64;
            let old: Vec<u64> = s
                .messages
                .iter()
                .filter(|(_, k)| k.message.received_at < before)
                .map(|(seq, _)| *seq)
                .collect();
            for seq in old {
                out.removed.extend(s.remove(seq));
                out.evicted.by_age += 1;
            }
        }
        if let Some(max) = policy.max_bytes {
            let total: u64 = s.messages.values().map(|k| k.message.size).sum();
            let mut excess = total.saturating_sub(max);
            while excess > 0 {
                let Some((&seq, k)) = s.messages.iter().next() else {
                    break;
                };
                excess = excess.saturating_sub(k.message.size);
                out.removed.extend(s.remove(seq));
                out.evicted.by_size += 1;
            }
        }
        let e = &mut out.evicted;
        e.messages = e.by_mailbox_cap + e.by_age + e.by_size;
        Ok(out)
    }

    async fn alias_put(&self, alias: &str, mailbox: &str) -> Result<(), StoreError> {
        self.writable()?
            .aliases
            .insert(alias.to_string(), mailbox.to_string());
        Ok(())
    }

    async fn alias_get(&self, alias: &str) -> Result<Option<String>, StoreError> {
        Ok(self.state().aliases.get(alias).cloned())
    }

    async fn meta_get_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        Ok(self
            .writable()?
            .meta
            .entry(key.to_string())
            .or_insert_with(|| value.to_string())
            .clone())
    }

    async fn close(&self) {
        self.state().closed = true;
    }
}

#[async_trait]
impl DirectoryBackend for MemoryBackend {
    async fn recipient_add(&self, address: &str) -> Result<bool, StoreError> {
        Ok(self.writable()?.recipients.insert(address.to_string()))
    }

    async fn recipient_remove(&self, address: &str) -> Result<bool, StoreError> {
        Ok(self.writable()?.recipients.remove(address))
    }

    async fn recipient_list(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.state().recipients.iter().cloned().collect())
    }

    async fn recipient_lookup(&self, address: &str) -> Result<Option<bool>, StoreError> {
        let s = self.state();
        if s.recipients.is_empty() {
            return Ok(None);
        }
        let domain = address.rsplit_once('@').map(|(_, d)| format!("@{d}"));
        Ok(Some(
            s.recipients.contains(address) || domain.is_some_and(|d| s.recipients.contains(&d)),
        ))
    }

    async fn user_get(&self, address: &str) -> Result<Option<User>, StoreError> {
        Ok(self.state().users.get(address).cloned())
    }

    async fn user_add(&self, user: User) -> Result<bool, StoreError> {
        let mut s = self.writable()?;
        if s.users.contains_key(&user.address) {
            return Ok(false);
        }
        s.users.insert(user.address.clone(), user);
        Ok(true)
    }

    async fn user_set_password(&self, address: &str, hash: &str) -> Result<bool, StoreError> {
        Ok(match self.writable()?.users.get_mut(address) {
            Some(u) => {
                u.password_hash = hash.to_string();
                true
            }
            None => false,
        })
    }

    async fn user_set_enabled(&self, address: &str, enabled: bool) -> Result<bool, StoreError> {
        Ok(match self.writable()?.users.get_mut(address) {
            Some(u) => {
                u.enabled = enabled;
                true
            }
            None => false,
        })
    }

    async fn user_list(&self) -> Result<Vec<User>, StoreError> {
        Ok(self.state().users.values().cloned().collect())
    }
}

#[async_trait]
impl PolicyBackend for MemoryBackend {
    async fn greylist_get(&self, key: &str) -> Result<Option<GreyRecord>, StoreError> {
        Ok(self.state().greylist.get(key).copied())
    }

    async fn greylist_put(&self, key: &str, record: GreyRecord) -> Result<(), StoreError> {
        self.writable()?.greylist.insert(key.to_string(), record);
        Ok(())
    }

    async fn greylist_expire(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut s = self.writable()?;
        let n = s.greylist.len();
        s.greylist.retain(|_, r| r.last_seen >= before_ms);
        Ok((n - s.greylist.len()) as u64)
    }
}

#[async_trait]
impl TagBackend for MemoryBackend {
    async fn tags_get(&self, id: MessageId) -> Result<Option<Vec<String>>, StoreError> {
        let s = self.state();
        Ok(s.seq_of
            .get(&id)
            .and_then(|seq| s.messages.get(seq))
            .map(|k| k.tags.iter().cloned().collect()))
    }

    async fn tags_put(&self, id: MessageId, tags: &[String]) -> Result<bool, StoreError> {
        let mut s = self.writable()?;
        let Some(seq) = s.seq_of.get(&id).copied() else {
            return Ok(false);
        };
        let Some(kept) = s.messages.get_mut(&seq) else {
            return Ok(false);
        };
        kept.tags = tags.iter().cloned().collect();
        Ok(true)
    }

    async fn tags_all(&self) -> Result<Vec<String>, StoreError> {
        let s = self.state();
        let all: BTreeSet<&String> = s.messages.values().flat_map(|k| &k.tags).collect();
        Ok(all.into_iter().cloned().collect())
    }

    async fn tags_rename(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        let mut s = self.writable()?;
        let mut n = 0;
        for k in s.messages.values_mut() {
            if k.tags.remove(from) {
                k.tags.insert(to.to_string());
                n += 1;
            }
        }
        Ok(n)
    }

    async fn tags_remove(&self, tag: &str) -> Result<u64, StoreError> {
        let mut s = self.writable()?;
        let mut n = 0;
        for k in s.messages.values_mut() {
            n += u64::from(k.tags.remove(tag));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryBackend;
    use crate::conformance::TestBackend;

    async fn make() -> TestBackend {
        TestBackend::new(MemoryBackend::new())
    }

    mod conformance {
        crate::conformance_suite!(super::make);
    }
}
