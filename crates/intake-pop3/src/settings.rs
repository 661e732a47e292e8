//! `[pop3]` read from the configuration.

use intake_config::Reader;

use crate::Pop3Settings;

impl Pop3Settings {
    /// Reads `[pop3]`, recording every problem in `r`.
    pub fn read(r: &mut Reader<'_>) -> Pop3Settings {
        let d = Pop3Settings::default();
        Pop3Settings {
            listen: r.optional_address("pop3.listen", "127.0.0.1:1110"),
            stls: r.get("pop3.stls", d.stls),
            plaintext_login: r.get("pop3.plaintext_login", d.plaintext_login),
            idle_timeout: r.timeout("pop3.idle_timeout", d.idle_timeout),
            login_failure_delay: r.duration("pop3.login_failure_delay", d.login_failure_delay),
            max_login_failures: r.at_least("pop3.max_login_failures", d.max_login_failures, 1),
            max_connections: r.at_least("pop3.max_connections", d.max_connections, 1),
            max_messages: r.at_least("pop3.max_messages", d.max_messages, 1),
            store_timeout: r.timeout("pop3.store_timeout", d.store_timeout),
            tls_handshake_timeout: r.timeout("pop3.tls_handshake_timeout", d.tls_handshake_timeout),
        }
    }
}
