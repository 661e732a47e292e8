//! The seams: who may log in and read what ([`Authenticator`], [`Grant`]), and where the
//! mail comes from ([`Maildrop`]), with the maildrop over Intake's store ([`StoreMaildrop`]).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use intake_core::{MailStore, MessageId, Page, StoreError, Summary};

/// Which mail a logged-in user reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Every stored message.
    All,
    /// The messages filed under these mailboxes (addresses, as the store keys them).
    Mailboxes(Vec<String>),
}

/// What a successful login allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The mail the session lists.
    pub reach: Reach,
    /// DELE is allowed (applied at QUIT). Without it DELE is answered `-ERR`.
    pub may_delete: bool,
}

/// The authenticator could not decide (a backend down): the client gets a temporary error
/// (`-ERR [SYS/TEMP]`), not a refusal.
#[derive(Debug, thiserror::Error)]
#[error("authentication unavailable: {0}")]
pub struct AuthError(pub String);

/// Checks a USER/PASS login.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok(Some)`: logged in with that grant; `Ok(None)`: wrong login or password.
    /// Slow password hashes should run off the async threads (`spawn_blocking`).
    async fn login(
        &self,
        user: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<Option<Grant>, AuthError>;
}

/// One message of a session's snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The unique id (UIDL): Intake's message id.
    pub uid: String,
    /// Octets in a RETR reply, dot-stuffing not counted (RFC 1939 §11).
    pub size: u64,
}

/// The maildrop failed; the client gets `-ERR [SYS/TEMP]`, never this text.
#[derive(Debug, thiserror::Error)]
pub enum MaildropError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the mail comes from.
#[async_trait]
pub trait Maildrop: Send + Sync + 'static {
    /// The messages `reach` covers, oldest first: the session's snapshot, numbered from 1.
    async fn list(&self, reach: &Reach) -> Result<Vec<Entry>, MaildropError>;
    /// A message's octets as RETR sends them (before dot-stuffing); `None` when gone.
    async fn fetch(&self, uid: &str) -> Result<Option<Bytes>, MaildropError>;
    /// Removes a message; `false` when it was already gone.
    async fn delete(&self, uid: &str) -> Result<bool, MaildropError>;
}

/// The maildrop over Intake's [`MailStore`].
///
/// A message is served as it was received, without the `Received:` line Intake adds when it
/// stores it: that way the sizes LIST and STAT report come from the listing, exact, without
/// reading every message at login. UIDL is the message id.
pub struct StoreMaildrop {
    store: Arc<dyn MailStore>,
    /// Most messages listed in one session (the newest); a client sees no more.
    max_messages: usize,
}

/// Page size when listing the store.
const PAGE: u64 = 500;

impl StoreMaildrop {
    /// Over `store`, listing at most `max_messages` (the newest) per session.
    pub fn new(store: Arc<dyn MailStore>, max_messages: usize) -> Self {
        StoreMaildrop {
            store,
            max_messages,
        }
    }

    async fn list_pages(&self, mailbox: Option<&str>) -> Result<Vec<Summary>, StoreError> {
        let mut out = Vec::new();
        let mut offset = 0u64;
        loop {
            let page = Page {
                offset,
                limit: PAGE,
            };
            let listing = match mailbox {
                Some(m) => self.store.list_mailbox(m, page).await?,
                None => self.store.list_all(page).await?,
            };
            let n = listing.messages.len() as u64;
            out.extend(listing.messages);
            offset += n;
            if n == 0 || offset >= listing.total || out.len() >= self.max_messages {
                break;
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Maildrop for StoreMaildrop {
    async fn list(&self, reach: &Reach) -> Result<Vec<Entry>, MaildropError> {
        let mut all = match reach {
            Reach::All => self.list_pages(None).await?,
            Reach::Mailboxes(boxes) => {
                let mut seen = HashSet::new();
                let mut v = Vec::new();
                for b in boxes {
                    for s in self.list_pages(Some(b)).await? {
                        if seen.insert(s.id) {
                            v.push(s);
                        }
                    }
                }
                v
            }
        };
        // Newest first, cut to the cap; then oldest first, as clients number them.
        all.sort_by_key(|s| std::cmp::Reverse((s.received_at, s.id)));
        all.truncate(self.max_messages);
        all.reverse();
        Ok(all
            .into_iter()
            .map(|s| Entry {
                uid: s.id.to_string(),
                size: s.size,
            })
            .collect())
    }

    async fn fetch(&self, uid: &str) -> Result<Option<Bytes>, MaildropError> {
        let Ok(id) = uid.parse::<MessageId>() else {
            return Ok(None);
        };
        let Some(m) = self.store.fetch(id).await? else {
            return Ok(None);
        };
        // The content as received: the stored bytes after Intake's own header.
        let size = usize::try_from(m.size).unwrap_or(usize::MAX);
        let start = m.raw.len().saturating_sub(size);
        Ok(Some(m.raw.slice(start..)))
    }

    async fn delete(&self, uid: &str) -> Result<bool, MaildropError> {
        let Ok(id) = uid.parse::<MessageId>() else {
            return Ok(false);
        };
        Ok(self.store.delete(id).await?)
    }
}

#[cfg(test)]
mod tests {
    use intake_store::conformance::incoming_with;

    use super::*;

    #[tokio::test]
    async fn a_mailbox_grant_lists_its_mail_oldest_first_and_serves_it_as_received() {
        let store: Arc<dyn MailStore> = intake_store::memory::store();
        for (to, subject) in [
            (vec!["a@x.test"], "first"),
            (vec!["b@x.test"], "other"),
            (vec!["a@x.test", "c@x.test"], "second"),
        ] {
            let content = format!("Subject: {subject}\r\n\r\nbody\r\n");
            store.deliver(incoming_with(&to, &content)).await.unwrap();
        }
        let drop = StoreMaildrop::new(store.clone(), 100);
        let boxes = Reach::Mailboxes(vec!["a@x.test".into(), "c@x.test".into()]);
        let listed = drop.list(&boxes).await.unwrap();
        assert_eq!(
            listed.len(),
            2,
            "a message in two granted mailboxes is listed once"
        );
        let mut subjects = Vec::new();
        for e in &listed {
            let raw = drop.fetch(&e.uid).await.unwrap().unwrap();
            assert_eq!(raw.len() as u64, e.size, "LIST size is what RETR sends");
            assert!(raw.starts_with(b"Subject: "), "no Received: line first");
            subjects.push(String::from_utf8(raw.to_vec()).unwrap());
        }
        assert!(subjects[0].contains("first") && subjects[1].contains("second"));
        assert_eq!(drop.list(&Reach::All).await.unwrap().len(), 3);
        let capped = StoreMaildrop::new(store.clone(), 2).list(&Reach::All).await;
        let capped: Vec<String> = capped.unwrap().into_iter().map(|e| e.uid).collect();
        assert_eq!(capped.len(), 2, "the newest two");
        assert_eq!(capped[1], listed[1].uid, "the newest is last");

        assert!(drop.delete(&listed[0].uid).await.unwrap());
        assert!(!drop.delete(&listed[0].uid).await.unwrap(), "already gone");
        assert_eq!(drop.fetch(&listed[0].uid).await.unwrap(), None);
        assert_eq!(drop.fetch("not-an-id").await.unwrap(), None);
        assert_eq!(drop.list(&boxes).await.unwrap().len(), 1);
    }
}
