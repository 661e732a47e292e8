//! `[directory]` read from the configuration (each key by its path, every problem recorded).

use intake_config::Reader;

use crate::settings::{DirectoryKind, DirectorySettings};

impl DirectorySettings {
    /// Reads `[directory]`: `None` when `directory.type` is not set (no directory).
    pub fn read(r: &mut Reader<'_>) -> Option<DirectorySettings> {
        let kind_text: String = r.get("directory.type", String::new());
        let kind = if kind_text.is_empty() {
            None
        } else {
            use serde::Deserialize as _;
            let de = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(&kind_text);
            match DirectoryKind::deserialize(de) {
                Ok(k) => Some(k),
                Err(_) => {
                    r.error(
                        "directory.type",
                        format!(
                            "{kind_text:?}: expected \"ldap\" or \"sql\" (empty: no directory)"
                        ),
                    );
                    None
                }
            }
        };
        let url: String = r.get("directory.url", String::new());
        let text = |r: &mut Reader<'_>, key: &str| -> Option<String> {
            let v: String = r.get(key, String::new());
            (!v.is_empty()).then_some(v)
        };
        let starttls: bool = r.get("directory.starttls", false);
        let tls_ca = r.optional_path("directory.tls_ca");
        let bind_dn = text(r, "directory.bind_dn");
        let bind_password = text(r, "directory.bind_password");
        let base = text(r, "directory.base");
        let recipient_filter = text(r, "directory.recipient_filter");
        let login_filter = text(r, "directory.login_filter");
        let password_query = text(r, "directory.password_query");
        let recipient_query = text(r, "directory.recipient_query");
        let senders_query = text(r, "directory.senders_query");
        // An empty list (as in the example file) is the default.
        let sender_attributes: Vec<String> = r.get("directory.sender_attributes", Vec::new());
        let sender_attributes = (!sender_attributes.is_empty()).then_some(sender_attributes);
        let d = DirectorySettings::new(kind.unwrap_or(DirectoryKind::Ldap), url);
        // 0: not cached (every question goes to the directory).
        let cache_ttl = r.duration("directory.cache_ttl", d.cache_ttl);
        let negative_cache_ttl = r.duration("directory.negative_cache_ttl", d.negative_cache_ttl);
        let timeout = r.timeout("directory.timeout", d.timeout);
        let breaker_cooldown = r.timeout("directory.breaker_cooldown", d.breaker_cooldown);
        let max_connections = r.at_least("directory.max_connections", d.max_connections, 1);
        kind?;
        let mut s = d;
        s.starttls = starttls;
        s.tls_ca = tls_ca;
        s.bind_dn = bind_dn;
        s.bind_password = bind_password;
        s.base = base;
        s.recipient_filter = recipient_filter;
        s.login_filter = login_filter;
        s.password_query = password_query;
        s.recipient_query = recipient_query;
        s.senders_query = senders_query;
        s.sender_attributes = sender_attributes;
        s.cache_ttl = cache_ttl;
        s.negative_cache_ttl = negative_cache_ttl;
        s.timeout = timeout;
        s.breaker_cooldown = breaker_cooldown;
        s.max_connections = max_connections;
        if let Err(e) = s.validate() {
            r.error("directory", e.to_string());
        }
        Some(s)
    }
}
