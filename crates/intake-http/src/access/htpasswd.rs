//! Basic-auth users from an htpasswd file, re-read (at most once a second) when it changes.
//! Verified credentials are remembered in a bounded cache, so a client that sends its
//! password with every request costs one slow hash check, not one per request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use moka::sync::Cache;
use sha2::{Digest, Sha256};

/// Credentials remembered as verified (SHA-256 of `user NUL password`), until the file
/// changes; the least recently used leave first when the cache is full.
const VERIFIED_CAPACITY: u64 = 10_000;

/// A bcrypt hash of a random password: checked when the user does not exist, so that an
/// unknown user costs the same time as a wrong password.
pub(super) static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let random = uuid_like_random();
    bcrypt::hash(random, bcrypt::DEFAULT_COST).unwrap_or_default()
});

fn uuid_like_random() -> String {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let h = Sha256::digest(format!("{t:?}{:p}", &t));
    base64::engine::general_purpose::STANDARD.encode(h)
}

/// Checks a password against one stored hash (the same schemes as SMTP AUTH users).
/// Slow on purpose for bcrypt and argon2: call it off the async threads.
pub fn verify_password(password: &str, stored: &str) -> bool {
    intake_core::password::verify(stored, password)
}

struct Loaded {
    /// Modification time and length of the file as last read.
    stamp: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
    users: HashMap<String, String>,
}

/// The htpasswd file and the credentials verified since it was last read.
pub(super) struct Htpasswd {
    path: PathBuf,
    loaded: Mutex<Loaded>,
    verified: Cache<[u8; 32], ()>,
}

impl Htpasswd {
    pub(super) fn new(path: PathBuf) -> Self {
        Htpasswd {
            path,
            loaded: Mutex::new(Loaded {
                stamp: None,
                checked: None,
                users: HashMap::new(),
            }),
            verified: Cache::new(VERIFIED_CAPACITY),
        }
    }

    fn refresh(&self, l: &mut Loaded) {
        let now = Instant::now();
        if l.checked
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        l.checked = Some(now);
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp == l.stamp && l.stamp.is_some() {
            return;
        }
        l.stamp = stamp;
        self.verified.invalidate_all();
        l.users.clear();
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                for line in text.lines().map(str::trim) {
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let Some((user, hash)) = line.split_once(':') else {
                        continue;
                    };
                    if !intake_core::password::is_supported(hash) {
                        tracing::warn!(file = %self.path.display(), user,
                            "htpasswd: unsupported hash scheme (use bcrypt, argon2 or SHA-512-crypt); user ignored");
                        continue;
                    }
                    l.users.insert(user.to_string(), hash.to_string());
                }
                tracing::info!(file = %self.path.display(), users = l.users.len(), "htpasswd loaded");
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "htpasswd unreadable: no basic-auth user can log in")
            }
        }
    }

    /// True when `user` is in the file (whatever the password).
    pub(super) fn knows(&self, user: &str) -> bool {
        let mut l = self.loaded.lock().expect("htpasswd lock");
        self.refresh(&mut l);
        l.users.contains_key(user)
    }

    /// True when `user` is in the file with this password.
    pub(super) async fn verify(&self, user: &str, password: &str) -> bool {
        let key: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(user.as_bytes());
            h.update([0]);
            h.update(password.as_bytes());
            h.finalize().into()
        };
        let hash = {
            let mut l = self.loaded.lock().expect("htpasswd lock");
            self.refresh(&mut l);
            if self.verified.contains_key(&key) {
                return true;
            }
            l.users.get(user).cloned()
        };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.clone());
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &hash))
            .await
            .unwrap_or(false);
        if ok && known {
            self.verified.insert(key, ());
        }
        ok && known
    }
}
