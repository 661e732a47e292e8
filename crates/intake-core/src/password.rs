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
    let pw = password.as_bytes();
    match scheme_of(stored) {
        Some((Kind::Argon2, hash)) => PasswordHash::new(hash)
            .map(|h| Argon2::default().verify_password(pw, &h).is_ok())
            .unwrap_or(false),
        Some((Kind::Bcrypt, hash)) => bcrypt::verify(pw, hash).unwrap_or(false),
        Some((Kind::ShaCrypt, hash)) => ShaCrypt::default().verify_password(pw, hash).is_ok(),
        None => false,
    }
}

/// Whether `stored` is in a form [`verify`] can check (it may still be malformed): for
/// refusing a file of hashes at load rather than failing every login.
pub fn is_supported(stored: &str) -> bool {
    scheme_of(stored).is_some()
}

/// The verifiers we have.
enum Kind {
    Argon2,
    Bcrypt,
    ShaCrypt,
}

/// The verifier for `stored` (bare, or with a Dovecot `{SCHEME}` prefix) and the hash it
/// checks; `None` for plain-text and unknown schemes.
fn scheme_of(stored: &str) -> Option<(Kind, &str)> {
    let stored = stored.trim();
    let hash = match stored.strip_prefix('{').and_then(|s| s.split_once('}')) {
        Some((scheme, hash)) => match scheme.to_ascii_uppercase().as_str() {
            "ARGON2ID" | "ARGON2I" | "BLF-CRYPT" | "SHA512-CRYPT" | "SHA256-CRYPT" | "CRYPT" => {
                hash
            }
            _ => return None,
        },
        None => stored,
    };
    // A modular-crypt or PHC string, by its `$id$`.
    let kind = if hash.starts_with("$argon2") {
        Kind::Argon2
    } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
        Kind::Bcrypt
    } else if hash.starts_with("$6$") || hash.starts_with("$5$") {
        Kind::ShaCrypt
    } else {
        return None;
    };
    Some((kind, hash))
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
        for h in ["{PLAIN}s3cret", "{MD5}x", "s3cret", "", "plain:hunter2"] {
            assert!(!is_supported(h), "{h}");
        }
        for h in [
            "$2y$04$x",
            "$argon2id$v=19$x",
            "$6$s$x",
            "{SHA512-CRYPT}$6$s$x",
            "$5$s$x",
        ] {
            assert!(is_supported(h), "{h}");
        }
    }
}
