//! Alternate inbox addresses (as Maildrop offers): every mailbox has a stable alias derived
//! with a keyed hash (HMAC-SHA-256) from a server secret. A user can give out the alias
//! without revealing the real mailbox name; mail to the alias is filed in the real mailbox.
//! Without the secret the alias cannot be computed from the name, nor reversed.
//!
//! Form: `d-` and 12 base32 characters (60 bits), at the mailbox's own domain:
//! `bob@example.com` -> `d-k5w3q7xam2pe@example.com`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::message::mailbox_key;

const PREFIX: &str = "d-";
const CODE_LEN: usize = 12;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The alias address of `mailbox` under `secret`.
pub fn derive(secret: &[u8], mailbox: &str) -> String {
    let mailbox = mailbox_key(mailbox);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(mailbox.as_bytes());
    let digest = mac.finalize().into_bytes();
    // 60 bits of the digest, 5 bits a character.
    let mut bits: u64 = 0;
    for b in &digest[..8] {
        bits = (bits << 8) | u64::from(*b);
    }
    let mut code = String::with_capacity(CODE_LEN);
    for i in 0..CODE_LEN {
        let idx = (bits >> (64 - 5 * (i + 1))) & 31;
        code.push(BASE32[idx as usize] as char);
    }
    match mailbox.rsplit_once('@') {
        Some((_, domain)) => format!("{PREFIX}{code}@{domain}"),
        None => format!("{PREFIX}{code}"),
    }
}

/// Whether an address has the form of an alias (it may still be unknown).
pub fn looks_like_alias(address: &str) -> bool {
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
    local.len() == PREFIX.len() + CODE_LEN
        && local[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
        && local[PREFIX.len()..]
            .bytes()
            .all(|b| BASE32.contains(&b.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_keyed_and_recognisable() {
        let a = derive(b"secret-one", "Bob@Example.com");
        assert_eq!(
            a,
            derive(b"secret-one", "bob@example.com"),
            "case-insensitive, stable"
        );
        assert_ne!(
            a,
            derive(b"secret-two", "bob@example.com"),
            "depends on the secret"
        );
        assert_ne!(a, derive(b"secret-one", "bobby@example.com"));
        assert!(a.ends_with("@example.com") && a.starts_with("d-"));
        assert!(looks_like_alias(&a));
        assert!(!looks_like_alias("bob@example.com"));
        assert!(!looks_like_alias("d-short@example.com"));
    }
}
