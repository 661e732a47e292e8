//! Password hashes of SMTP AUTH users: argon2id for new hashes; bcrypt, SHA-512-crypt and
//! SHA-256-crypt verified for hashes imported from another system, bare or in Dovecot's
//! `{SCHEME}hash` form (`{ARGON2ID}`, `{BLF-CRYPT}`, `{SHA512-CRYPT}`, `{SHA256-CRYPT}`,
//! `{CRYPT}`). Plain-text schemes (`{PLAIN}`, `{CLEARTEXT}`) and unknown ones never verify.
//!
//! Verifying is deliberately slow (argon2id ~tens of ms): call it off the async runtime
//! (`spawn_blocking`).

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use sha_crypt::ShaCrypt;

/// A new argon2id hash (PHC string, `$argon2id$v=19$...`) with a random salt.
pub fn hash(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 with default parameters and a random salt")
        .to_string()
}

/// Whether `password` matches `stored`. Malformed or unknown hashes never match.
pub fn verify(stored: &str, password: &str) -> bool {
    let stored = stored.trim();
    let (scheme, hash) = match stored.strip_prefix('{').and_then(|s| s.split_once('}')) {
        Some((scheme, hash)) => (Some(scheme.to_ascii_uppercase()), hash),
        None => (None, stored),
    };
    match scheme.as_deref() {
        None
        | Some("ARGON2ID" | "ARGON2I" | "BLF-CRYPT" | "SHA512-CRYPT" | "SHA256-CRYPT" | "CRYPT") => {
            verify_modular(hash, password)
        }
        _ => false,
    }
}

/// A modular-crypt or PHC string, by its `$id$`.
fn verify_modular(hash: &str, password: &str) -> bool {
    let pw = password.as_bytes();
    if hash.starts_with("$argon2") {
        return PasswordHash::new(hash)
            .map(|h| Argon2::default().verify_password(pw, &h).is_ok())
            .unwrap_or(false);
    }
    if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        return bcrypt::verify(pw, hash).unwrap_or(false);
    }
    if hash.starts_with("$6$") || hash.starts_with("$5$") {
        return ShaCrypt::default().verify_password(pw, hash).is_ok();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_hashes_are_argon2id_and_salted() {
        let a = hash("correct horse");
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        assert_ne!(a, hash("correct horse"), "a fresh salt each time");
        assert!(verify(&a, "correct horse"));
        assert!(!verify(&a, "correct horse "));
        assert!(verify(&format!("{{ARGON2ID}}{a}"), "correct horse"));
    }

    #[test]
    fn sha512_crypt_from_the_specification() {
        // Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512", test vector 1 (glibc agrees).
        let h = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        assert!(verify(h, "Hello world!"));
        assert!(!verify(h, "Hello world"));
        assert!(verify(&format!("{{SHA512-CRYPT}}{h}"), "Hello world!"));
        assert!(verify(&format!("{{CRYPT}}{h}"), "Hello world!"));
        let h256 = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5";
        assert!(verify(h256, "Hello world!"));
    }

    #[test]
    fn bcrypt_as_imported() {
        let h = bcrypt::hash("s3cret", 4).unwrap();
        assert!(verify(&h, "s3cret"));
        assert!(!verify(&h, "S3cret"));
        assert!(verify(&format!("{{BLF-CRYPT}}{h}"), "s3cret"));
        // The $2y$ prefix written by PHP and Dovecot.
        assert!(verify(&h.replacen("$2b$", "$2y$", 1), "s3cret"));
    }

    #[test]
    fn plain_unknown_and_malformed_never_verify() {
        assert!(!verify("{PLAIN}s3cret", "s3cret"));
        assert!(!verify("{CLEARTEXT}s3cret", "s3cret"));
        assert!(!verify("{MD5}x", "x"));
        assert!(!verify("s3cret", "s3cret"));
        assert!(!verify("", ""));
        assert!(!verify("$6$", ""));
        assert!(!verify("$argon2id$garbage", "x"));
    }
}
