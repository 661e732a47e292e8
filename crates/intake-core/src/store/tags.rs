//! Tags on messages (Mailpit's tags): free-form labels a user or a test suite puts on
//! messages, set through the Mailpit API, an `X-Tags` header or plus-addressing.

use async_trait::async_trait;

use super::StoreError;
use crate::message::MessageId;

/// Tags, as the rest of Intake sees them (`Arc<dyn MailTags>`: the Mailpit API).
/// Implemented by `intake_store::Store` on top of a [`TagBackend`]; tags reach the engine
/// cleaned by [`clean_tags`].
#[async_trait]
pub trait MailTags: Send + Sync + 'static {
    /// A message's tags, sorted; `None` if there is no such message.
    async fn tags_of(&self, id: MessageId) -> Result<Option<Vec<String>>, StoreError>;

    /// Replaces a message's tags (cleaned first). False if there is no such message.
    async fn set_tags(&self, id: MessageId, tags: &[String]) -> Result<bool, StoreError>;

    /// Adds tags to a message, keeping the ones it has. False if there is no such message.
    async fn add_tags(&self, id: MessageId, tags: &[String]) -> Result<bool, StoreError>;

    /// Removes tags from a message. False if there is no such message.
    async fn remove_tags(&self, id: MessageId, tags: &[String]) -> Result<bool, StoreError>;

    /// Every tag some message has, sorted.
    async fn all_tags(&self) -> Result<Vec<String>, StoreError>;

    /// Renames a tag on every message (merging into `to` where a message has both).
    /// Returns how many messages had `from`.
    async fn rename_tag(&self, from: &str, to: &str) -> Result<u64, StoreError>;

    /// Removes a tag from every message (the messages stay). Returns how many had it.
    async fn delete_tag(&self, tag: &str) -> Result<u64, StoreError>;
}

/// Tags as a storage engine keeps them: one set of strings per message, compared exactly.
/// A deleted message's tags go with it. Every implementation must pass the tag cases of
/// the conformance suite (`intake_store::conformance`).
#[async_trait]
pub trait TagBackend: Send + Sync + 'static {
    /// A message's tags, sorted; `None` if there is no such message.
    async fn tags_get(&self, id: MessageId) -> Result<Option<Vec<String>>, StoreError>;

    /// Replaces a message's tags with `tags` (distinct, cleaned). False if there is no
    /// such message.
    async fn tags_put(&self, id: MessageId, tags: &[String]) -> Result<bool, StoreError>;

    /// Every tag some message has, sorted, each once.
    async fn tags_all(&self) -> Result<Vec<String>, StoreError>;

    /// Renames `from` to `to` on every message that has `from`; a message that has both
    /// keeps one `to`. Returns how many messages had `from`.
    async fn tags_rename(&self, from: &str, to: &str) -> Result<u64, StoreError>;

    /// Removes `tag` from every message. Returns how many had it.
    async fn tags_remove(&self, tag: &str) -> Result<u64, StoreError>;
}

/// Longest tag kept, in characters.
pub const MAX_TAG_LEN: usize = 100;

/// A tag as Mailpit keeps it: only letters, digits, `-`, `_`, `.` and spaces (others are
/// dropped), runs of spaces made one, trimmed, at most [`MAX_TAG_LEN`] characters. `None`
/// when nothing is left.
pub fn clean_tag(tag: &str) -> Option<String> {
    let kept: String = tag
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
        .collect();
    let joined = kept.split_whitespace().collect::<Vec<_>>().join(" ");
    let t: String = joined.chars().take(MAX_TAG_LEN).collect();
    let t = t.trim().to_string();
    (!t.is_empty()).then_some(t)
}

/// Cleans tags ([`clean_tag`]) and drops repeats (compared without case; the first
/// spelling wins), sorted.
pub fn clean_tags<S: AsRef<str>>(tags: &[S]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in tags.iter().filter_map(|t| clean_tag(t.as_ref())) {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&t)) {
            out.push(t);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_cleaned_like_mailpit_does() {
        assert_eq!(clean_tag("  urgent!!  mail "), Some("urgent mail".into()));
        assert_eq!(clean_tag("a/b:c"), Some("abc".into()));
        assert_eq!(clean_tag("v1.2_x-y"), Some("v1.2_x-y".into()));
        assert_eq!(clean_tag("!!!"), None);
        assert_eq!(clean_tags(&["b", "A", "a", "", "B "]), vec!["A", "b"]);
        assert_eq!(clean_tag(&"x".repeat(300)).unwrap().len(), MAX_TAG_LEN);
    }
}
