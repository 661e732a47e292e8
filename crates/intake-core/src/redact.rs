//! Secrets in `Debug` output (settings dumps, logs, and the reload's comparison of two
//! configurations, which compares settings by their `Debug` text).
//!
//! A secret is shown as a tag, `<redacted 1a2b3c4d>`: a keyed hash whose key is random for
//! each process (std's `RandomState`, SipHash). Within one process the same secret always
//! gives the same tag and a changed secret a different one, so a reload sees that a password
//! or token changed; outside the process the tag says nothing about the secret.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::OnceLock;

/// A secret that `Debug` shows as its tag (an empty secret as `""`).
pub struct Redacted<'a>(pub &'a [u8]);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            write!(f, "<redacted {}>", tag(self.0))
        }
    }
}

/// Eight hex digits that stand for `secret` in this process.
pub fn tag(secret: &[u8]) -> String {
    static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let h = KEY.get_or_init(Default::default).hash_one(secret);
    format!("{:08x}", h >> 32)
}

/// `url` with the password of its user info (`user:password@`) replaced by its tag.
pub fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, password)) => format!(
                "{scheme}://{user}:<redacted {}>@{host}{}",
                tag(password.as_bytes()),
                &rest[authority_end..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_shown_as_a_tag_that_changes_with_it() {
        let one = format!("{:?}", Redacted(b"hunter2"));
        assert!(!one.contains("hunter2"), "{one}");
        assert!(one.starts_with("<redacted "), "{one}");
        assert_eq!(one, format!("{:?}", Redacted(b"hunter2")));
        assert_ne!(one, format!("{:?}", Redacted(b"hunter3")));
        assert_eq!(format!("{:?}", Redacted(b"")), "\"\"");
    }

    #[test]
    fn a_urls_password_is_replaced_by_its_tag() {
        let shown = url("redis://u:secret@h:6379/0");
        assert!(shown.starts_with("redis://u:<redacted "), "{shown}");
        assert!(shown.ends_with(">@h:6379/0"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
        assert_ne!(shown, url("redis://u:other@h:6379/0"));
        assert_eq!(url("redis://h:6379"), "redis://h:6379");
        assert_eq!(url("redis://u@h:6379"), "redis://u@h:6379");
        // An `@` after the authority is not user info.
        assert_eq!(url("ldap://h/cn=a@b"), "ldap://h/cn=a@b");
        // A password may hold `:` and `@`.
        assert!(!url("postgres://u:p:w@x@h/db").contains("p:w@x"));
    }
}
