//! Password hashes of SMTP AUTH users: argon2id for new hashes; bcrypt, SHA-512-crypt and
//! SHA-256-crypt verified for hashes imported from another system, bare or in Dovecot's
//! `{SCHEME}hash` form (`{ARGON2ID}`, `{ARGON2I}`, `{BLF-CRYPT}`, `{SHA512-CRYPT}`,
//! `{SHA256-CRYPT}`, `{CRYPT}`), and Dovecot's (and OpenLDAP's) salted digests `{SSHA}`,
//! `{SSHA256}`, `{SSHA512}` and plain digests `{SHA}`, `{SHA256}`, `{SHA512}` (base64).
//! Plain-text schemes (`{PLAIN}`, `{CLEARTEXT}`) verify only through [`verify_with`] and
//! [`Plaintext::Accept`] (a directory that stores them, as Dovecot would read it); unknown
//! schemes never verify.
//!
//! Verifying is deliberately slow (argon2id ~tens of ms): call it off the async runtime
//! (`spawn_blocking`).

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use base64::Engine;
use sha_crypt::ShaCrypt;
use subtle::ConstantTimeEq;

/// A new argon2id hash (PHC string, `$argon2id$v=19$...`) with a random salt.
pub fn hash(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 with default parameters and a random salt")
        .to_string()
}

/// Whether `password` matches `stored`. Malformed, plain-text and unknown hashes never
/// match.
pub fn verify(stored: &str, password: &str) -> bool {
    verify_with(stored, password, Plaintext::Refuse)
}

/// Whether a stored `{PLAIN}` / `{CLEARTEXT}` password may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plaintext {
    /// Never (Intake's own users: a plain-text password is refused at load).
    Refuse,
    /// Compare it (in constant time): a directory that stores such passwords, as Dovecot
    /// accepts them.
    Accept,
}

/// Whether `password` matches `stored`, with plain-text schemes as `plaintext` says.
/// Malformed and unknown hashes never match.
pub fn verify_with(stored: &str, password: &str, plaintext: Plaintext) -> bool {
    let pw = password.as_bytes();
    match scheme_of(stored) {
        Some((Kind::Argon2, hash)) => PasswordHash::new(hash)
            .map(|h| Argon2::default().verify_password(pw, &h).is_ok())
            .unwrap_or(false),
        Some((Kind::Bcrypt, hash)) => bcrypt::verify(pw, hash).unwrap_or(false),
        Some((Kind::ShaCrypt, hash)) => ShaCrypt::default().verify_password(pw, hash).is_ok(),
        Some((Kind::Digest(d), encoded)) => verify_digest(d, encoded, pw),
        Some((Kind::Plain, text)) => {
            plaintext == Plaintext::Accept && bool::from(text.as_bytes().ct_eq(pw))
        }
        None => false,
    }
}

/// Whether `stored` is in a form [`verify`] can check (it may still be malformed): for
/// refusing a file of hashes at load rather than failing every login.
pub fn is_supported(stored: &str) -> bool {
    scheme_of(stored).is_some_and(|(kind, _)| !matches!(kind, Kind::Plain))
}

/// The verifiers we have.
enum Kind {
    Argon2,
    Bcrypt,
    ShaCrypt,
    /// `{SHA}`, `{SSHA512}`...: base64 of the digest of password (+ salt) (+ salt).
    Digest(Digest),
    /// `{PLAIN}`, `{CLEARTEXT}`.
    Plain,
}

/// A `{SHA*}` / `{SSHA*}` scheme: which digest, and whether a salt follows it.
#[derive(Clone, Copy)]
struct Digest {
    algorithm: Algorithm,
    salted: bool,
}

#[derive(Clone, Copy)]
enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    fn len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }

    fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            Algorithm::Sha1 => {
                use sha1::Digest as _;
                let mut d = sha1::Sha1::new();
                for p in parts {
                    d.update(p);
                }
                d.finalize().to_vec()
            }
            Algorithm::Sha256 => run::<sha2::Sha256>(parts),
            Algorithm::Sha512 => run::<sha2::Sha512>(parts),
        }
    }
}

/// Checks a base64 `{SHA*}` / `{SSHA*}` value: digest, then (salted) the salt.
fn verify_digest(d: Digest, encoded: &str, pw: &[u8]) -> bool {
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let len = d.algorithm.len();
    let (expected, salt) = match (d.salted, raw.len()) {
        (false, n) if n == len => (&raw[..], &[][..]),
        // A salt of at least one byte (OpenLDAP writes 4, Dovecot 8).
        (true, n) if n > len => raw.split_at(len),
        _ => return false,
    };
    bool::from(d.algorithm.digest(&[pw, salt]).ct_eq(expected))
}

/// The verifier for `stored` (bare, or with a Dovecot `{SCHEME}` prefix) and the hash it
/// checks; `None` for plain-text and unknown schemes.
fn scheme_of(stored: &str) -> Option<(Kind, &str)> {
    let stored = stored.trim();
    let hash = match stored.strip_prefix('{').and_then(|s| s.split_once('}')) {
        Some((scheme, hash)) => {
            let digest =
                |algorithm, salted| Some((Kind::Digest(Digest { algorithm, salted }), hash));
            match scheme.to_ascii_uppercase().as_str() {
                "ARGON2ID" | "ARGON2I" | "BLF-CRYPT" | "SHA512-CRYPT" | "SHA256-CRYPT"
                | "CRYPT" => hash,
                "SHA" | "SHA1" => return digest(Algorithm::Sha1, false),
                "SSHA" => return digest(Algorithm::Sha1, true),
                "SHA256" => return digest(Algorithm::Sha256, false),
                "SSHA256" => return digest(Algorithm::Sha256, true),
                "SHA512" => return digest(Algorithm::Sha512, false),
                "SSHA512" => return digest(Algorithm::Sha512, true),
                "PLAIN" | "CLEARTEXT" => return Some((Kind::Plain, hash)),
                _ => return None,
            }
        }
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
    fn salted_and_plain_digests_as_openldap_and_dovecot_write_them() {
        // `slappasswd -h {SSHA} -s secret` style: sha1(pw + salt) + salt, base64.
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let salt = b"s4lt";
        for (scheme, alg) in [
            ("SSHA", Algorithm::Sha1),
            ("SSHA256", Algorithm::Sha256),
            ("SSHA512", Algorithm::Sha512),
        ] {
            let mut raw = alg.digest(&[b"secret", salt]);
            raw.extend_from_slice(salt);
            let stored = format!("{{{scheme}}}{}", b64(&raw));
            assert!(verify(&stored, "secret"), "{stored}");
            assert!(!verify(&stored, "secreT"), "{stored}");
            assert!(is_supported(&stored));
        }
        // {SHA}: sha1("secret"), as `slappasswd -h {SHA} -s secret` prints it.
        assert!(verify("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret"));
        assert!(!verify("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret2"));
        assert!(verify(
            &format!("{{SHA512}}{}", b64(&Algorithm::Sha512.digest(&[b"pw"]))),
            "pw"
        ));
        // A salted scheme with no salt, or the wrong length: never.
        assert!(!verify(
            &format!("{{SSHA}}{}", b64(&Algorithm::Sha1.digest(&[b"pw"]))),
            "pw"
        ));
        assert!(!verify("{SSHA}not base64!", "pw"));
    }

    #[test]
    fn plain_text_only_when_accepted() {
        for stored in ["{PLAIN}s3cret", "{cleartext}s3cret"] {
            assert!(!verify(stored, "s3cret"));
            assert!(verify_with(stored, "s3cret", Plaintext::Accept));
            assert!(!verify_with(stored, "s3cre", Plaintext::Accept));
            assert!(!verify_with(stored, "s3cret2", Plaintext::Accept));
        }
        // A bare string is not a plain-text password, even when accepted.
        assert!(!verify_with("s3cret", "s3cret", Plaintext::Accept));
        // And hashes still verify as hashes.
        let h = hash("x");
        assert!(verify_with(&h, "x", Plaintext::Accept));
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
