//! What a reload does with each setting: applies it (to new connections, and the caps and
//! failed-login limits to the counts already there) or logs it as needing a restart. Every
//! field of [`Settings`] is classified here: the destructuring in [`changes`] lists them all
//! without `..`, so a new field does not compile until it is given a side, and a test
//! changes a key of every top-level section of the configuration and checks that the reload
//! names it.

use std::fmt::Debug;

use crate::config::{ListenerSettings, Settings};

/// The settings that differ between two configurations, by the name the log gives them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Changes {
    /// Applied by a reload.
    pub applied: Vec<String>,
    /// Taken into account only by a restart.
    pub restart: Vec<String>,
}

impl Changes {
    fn applied_if<T: Debug + ?Sized>(&mut self, name: &str, old: &T, new: &T) {
        if differ(old, new) {
            self.applied.push(name.to_string());
        }
    }

    fn restart_if<T: Debug + ?Sized>(&mut self, name: &str, old: &T, new: &T) {
        if differ(old, new) {
            self.restart.push(name.to_string());
        }
    }
}

/// Compared by their debug text: settings are plain data, and not every type is `PartialEq`.
/// Secrets show there as tags that change with them (`intake_core::redact`), so a new
/// password or token is seen although its text never is.
fn differ<T: Debug + ?Sized>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// What changed from `old` to `new`, each setting on the side a reload puts it.
pub(super) fn changes(old: &Settings, new: &Settings) -> Changes {
    let Settings {
        smtp_listen,
        smtp,
        limits,
        limits_exempt,
        smtps_listen,
        tls_files,
        proxy,
        store,
        http,
        retention,
        alias_secret,
        alias_secret_file,
        policy,
        delivery,
        auth,
        listeners,
        routes,
        admin_tokens,
        log_level,
        log_format,
        run,
        cluster,
        mailpit_tags,
        pop3,
        directory,
        warnings: _,
    } = old;
    let mut c = Changes::default();
    // [smtp]: the session settings are applied; the listeners' sockets, their connection cap,
    // their shutdown deadline and the PROXY protocol are fixed when they start.
    c.restart_if("smtp.listen", smtp_listen, &new.smtp_listen);
    c.restart_if("smtp.tls_listen", smtps_listen, &new.smtps_listen);
    c.restart_if(
        "smtp.max_connections",
        &smtp.max_connections,
        &new.smtp.max_connections,
    );
    c.restart_if(
        "smtp.shutdown_timeout",
        &smtp.shutdown_timeout,
        &new.smtp.shutdown_timeout,
    );
    let session = |s: &intake_smtp::SessionConfig| intake_smtp::SessionConfig {
        max_connections: 0,
        shutdown_timeout: std::time::Duration::ZERO,
        ..s.clone()
    };
    c.applied_if("smtp", &session(smtp), &session(&new.smtp));
    c.applied
        .extend(limits.changed(&new.limits).into_iter().map(str::to_string));
    c.applied_if("smtp.limits_exempt", limits_exempt, &new.limits_exempt);
    c.restart_if(
        "smtp.proxy_protocol",
        &proxy.is_some(),
        &new.proxy.is_some(),
    );
    let trusted = |s: &Settings| s.proxy.as_ref().map(|p| p.trusted.clone());
    c.restart_if("smtp.proxy_trusted", &trusted(old), &trusted(new));
    let timeout = |s: &Settings| s.proxy.as_ref().map(|p| p.timeout);
    c.restart_if("smtp.proxy_timeout", &timeout(old), &timeout(new));
    // The same certificate files are read again by every reload; other files need a restart.
    c.restart_if("tls", tls_files, &new.tls_files);
    c.restart_if("store", store, &new.store);
    // [http] and [mailpit]: only mailpit.chaos is applied. The admin tokens are HTTP tokens
    // too; they are named apart.
    let web = |s: &Settings| {
        let mut h = s.http.clone();
        let admin = s.admin_tokens.iter().filter(|t| !t.is_empty()).count();
        let own = h.config.access.tokens.len().saturating_sub(admin);
        h.config.access.tokens.truncate(own);
        h.mailpit_chaos = false;
        h
    };
    c.restart_if("[http] / [mailpit]", &web(old), &web(new));
    c.applied_if(
        "mailpit.chaos",
        &http.mailpit_chaos,
        &new.http.mailpit_chaos,
    );
    c.restart_if(
        "mailpit.tags_from_header / tags_from_plus_addresses",
        mailpit_tags,
        &new.mailpit_tags,
    );
    c.restart_if("admin.tokens", admin_tokens, &new.admin_tokens);
    c.restart_if("retention", retention, &new.retention);
    c.restart_if(
        "aliases",
        &(alias_secret, alias_secret_file),
        &(&new.alias_secret, &new.alias_secret_file),
    );
    // The checks are built again from the new settings (over the state they keep).
    c.applied_if("policy checks", policy, &new.policy);
    // The targets are built once: their sections, the default listener's targets and the
    // routes need a restart.
    c.restart_if("delivery", delivery, &new.delivery);
    c.restart_if("route", routes, &new.routes);
    // [auth], with the failed-login limits (over the failures already counted).
    c.applied_if("auth", auth, &new.auth);
    listener_changes(&mut c, listeners, &new.listeners);
    c.restart_if("log.level", log_level, &new.log_level);
    c.restart_if("log.format", log_format, &new.log_format);
    c.restart_if("run", run, &new.run);
    c.restart_if("cluster", cluster, &new.cluster);
    c.restart_if("pop3", pop3, &new.pop3);
    c.restart_if("directory", directory, &new.directory);
    c
}

/// A `[[listener]]` is found again by its name and address: its settings are applied but
/// its targets (picked once when it starts); one added, moved or removed needs a restart.
fn listener_changes(c: &mut Changes, old: &[ListenerSettings], new: &[ListenerSettings]) {
    let same =
        |a: &ListenerSettings, b: &ListenerSettings| a.name == b.name && a.address == b.address;
    let but_targets = |l: &ListenerSettings| ListenerSettings {
        targets: Vec::new(),
        ..l.clone()
    };
    for l in new {
        match old.iter().find(|o| same(o, l)) {
            Some(o) => {
                c.applied_if(
                    &format!("listener[{}]", l.name),
                    &but_targets(o),
                    &but_targets(l),
                );
                c.restart_if(
                    &format!("listener[{}].targets", l.name),
                    &o.targets,
                    &l.targets,
                );
            }
            None => c.restart.push(format!("listener[{}] (new)", l.name)),
        }
    }
    for o in old.iter().filter(|o| !new.iter().any(|l| same(o, l))) {
        c.restart.push(format!("listener[{}] (removed)", o.name));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::Sources;

    fn settings(text: &str) -> Settings {
        let table: toml::Table = text.parse().unwrap();
        Settings::from_table(&table, &Sources::default())
            .unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    /// One change to a key of each top-level section of the configuration: what a reload
    /// says about it (applied or needs a restart).
    const SAMPLES: &[(&str, &str, bool)] = &[
        ("smtp", "[smtp]\nhostname = \"mx.example.test\"\n", true),
        ("smtp", "[smtp]\nproxy_protocol = true\n", false),
        ("store", "[store]\npath = \"elsewhere\"\n", false),
        ("http", "[http]\nlisten = \"127.0.0.1:9025\"\n", false),
        ("mailpit", "[mailpit]\nchaos = true\n", true),
        ("retention", "[retention]\nper_mailbox = 5\n", false),
        (
            "aliases",
            "[aliases]\nsecret = \"0123456789abcdef0123\"\n",
            false,
        ),
        (
            "policy",
            "[policy.profiles.strict]\nchecks = [\"recipients\"]\n",
            true,
        ),
        (
            "recipients",
            "[recipients]\naddresses = [\"a@example.test\"]\n",
            true,
        ),
        ("greylist", "[greylist]\nenabled = true\n", true),
        ("dns", "[dns]\ntimeout = \"2s\"\n", true),
        ("dnsbl", "[dnsbl]\nthreshold = 2\n", true),
        ("helo", "[helo]\nreject_bare_ip = true\n", true),
        ("sender_auth", "[sender_auth]\nenabled = true\n", true),
        ("rspamd", "[rspamd]\nenabled = true\n", true),
        ("spamd", "[spamd]\nenabled = true\n", true),
        ("clamav", "[clamav]\nenabled = true\n", true),
        ("relay", "[relay]\nserver = \"127.0.0.1:2527\"\n", false),
        (
            "webhook",
            "[webhook]\nurl = \"http://127.0.0.1:2528/\"\n",
            false,
        ),
        ("program", "[program]\ncommand = [\"/bin/true\"]\n", false),
        (
            "delivery",
            "[relay]\nserver = \"127.0.0.1:2527\"\n[delivery]\ntargets = [\"store\", \"relay\"]\n",
            false,
        ),
        ("auth", "[auth]\nmax_failures_per_client = 3\n", true),
        (
            "listener",
            "[[listener]]\naddress = \"127.0.0.1:2526\"\n",
            false,
        ),
        (
            "route",
            "[relay]\nserver = \"127.0.0.1:2527\"\n[[route]]\ndomains = [\"x.test\"]\ntargets = [\"relay\"]\n",
            false,
        ),
        (
            "admin",
            "[admin]\ntokens = [\"0123456789abcdef0123\"]\n",
            false,
        ),
        ("log", "[log]\nlevel = \"debug\"\n", false),
        ("run", "[run]\nuser = \"nobody\"\n", false),
        (
            "cluster",
            "[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n",
            false,
        ),
        ("pop3", "[pop3]\nlisten = \"127.0.0.1:1110\"\n", false),
        (
            "directory",
            "[directory]\ntype = \"ldap\"\nurl = \"ldap://127.0.0.1:389\"\nbase = \"dc=example,dc=test\"\n",
            false,
        ),
    ];

    /// `[tls]` with a certificate and key written to `dir`.
    fn tls_sample(dir: &std::path::Path) -> String {
        let cert = rcgen::generate_simple_self_signed(vec!["mx.example.test".into()]).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        format!(
            "[tls]\ncertificate = {:?}\nkey = {:?}\n",
            c.display().to_string(),
            k.display().to_string()
        )
    }

    #[test]
    fn every_section_a_reload_sees_changed_is_applied_or_needs_a_restart() {
        let defaults = Settings::defaults();
        let dir = tempfile::tempdir().unwrap();
        let tls = tls_sample(dir.path());
        let samples = SAMPLES
            .iter()
            .map(|(s, t, a)| (*s, t.to_string(), *a))
            .chain([("tls", tls, false)]);
        for (section, text, applied) in samples {
            let text = text.as_str();
            let c = changes(&defaults, &settings(text));
            let (said, other) = if applied {
                (&c.applied, &c.restart)
            } else {
                (&c.restart, &c.applied)
            };
            assert!(
                !said.is_empty(),
                "[{section}] changed ({text}) and the reload says nothing: {c:?}"
            );
            // A certificate also turns STARTTLS on by default (`smtp.tls`, applied).
            if section != "tls" {
                assert!(
                    other.is_empty(),
                    "[{section}] ({text}) on both sides: {c:?}"
                );
            }
        }
        assert_eq!(
            changes(&defaults, &Settings::defaults()),
            Changes::default()
        );
    }

    /// A new section of the configuration must be given a side in `changes` and a sample
    /// above.
    #[test]
    fn every_top_level_section_has_a_sample() {
        let sampled: BTreeSet<&str> = SAMPLES.iter().map(|(s, _, _)| *s).chain(["tls"]).collect();
        let sections: BTreeSet<String> = crate::config::known_keys()
            .iter()
            .map(|k| k.split(['.', '[']).next().unwrap_or(k).to_string())
            .collect();
        let missing: Vec<&String> = sections
            .iter()
            .filter(|s| !sampled.contains(s.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "sections with no reload sample (classify them in changes.rs): {missing:?}"
        );
    }

    /// Secrets are hidden from the settings' debug text, which the reload compares: a new
    /// password or token must still be named (it takes effect only after a restart).
    #[test]
    fn a_changed_secret_is_named_although_it_is_never_shown() {
        let cases = [
            (
                "delivery",
                "[relay]\nserver = \"127.0.0.1:2527\"\nauth_user = \"u\"\nauth_password = \"SECRET\"\n",
            ),
            (
                "delivery",
                "[webhook]\nurl = \"http://127.0.0.1:2528/\"\nsecret = \"SECRET\"\n",
            ),
            (
                "directory",
                "[directory]\ntype = \"ldap\"\nurl = \"ldap://127.0.0.1:389\"\nbase = \"dc=example,dc=test\"\nbind_dn = \"cn=intake\"\nbind_password = \"SECRET\"\n",
            ),
            (
                "directory",
                "[directory]\ntype = \"sql\"\nurl = \"postgres://app:SECRET@127.0.0.1/app\"\npassword_query = \"SELECT p FROM u WHERE l = $1\"\n",
            ),
            (
                "[http] / [mailpit]",
                "[http]\ntokens = [\"SECRET-0123456789abcdef:read\"]\n",
            ),
            (
                "cluster",
                "[cluster]\nredis_url = \"redis://:SECRET@127.0.0.1:6379\"\n",
            ),
        ];
        for (name, text) in cases {
            let old = settings(text);
            let new = settings(&text.replace("SECRET", "ANOTHER"));
            let c = changes(&old, &new);
            assert_eq!(c.restart, [name], "{text}: {c:?}");
            assert!(c.applied.is_empty(), "{text}: {c:?}");
            assert_eq!(changes(&old, &settings(text)), Changes::default(), "{text}");
            let shown = format!("{old:?}");
            assert!(!shown.contains("SECRET"), "{text}: {shown}");
        }
    }

    #[test]
    fn a_listeners_targets_need_a_restart_and_the_rest_is_applied() {
        let base = "[relay]\nserver = \"127.0.0.1:2527\"\n[[listener]]\nname = \"in\"\naddress = \"127.0.0.1:2526\"\n";
        let old = settings(base);
        let c = changes(&old, &settings(&format!("{base}targets = [\"relay\"]\n")));
        assert_eq!(c.restart, ["listener[in].targets"]);
        assert!(c.applied.is_empty(), "{c:?}");
        let c = changes(&old, &settings(&format!("{base}policy = \"none\"\n")));
        assert_eq!(c.applied, ["listener[in]"]);
        assert!(c.restart.is_empty(), "{c:?}");
    }
}
