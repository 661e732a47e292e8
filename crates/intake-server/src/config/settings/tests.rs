//! Settings tests: every error with its key, defaults, the environment, each section;
//! and the docs (every key documented, examples valid).

mod unit {
    use std::time::Duration;

    use super::super::*;
    use crate::config::listeners::AuthMode;
    use crate::config::load_table;

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Settings, Vec<ConfigError>> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("intake.toml");
        std::fs::write(&f, file).unwrap();
        let vars = env.iter().map(|(a, b)| (a.to_string(), b.to_string()));
        let (t, s) = load_table(Some(&f), vars)?;
        Settings::from_table(&t, &s)
    }

    #[test]
    fn store_search_is_read_and_checked() {
        let s = load("[store]\nsearch = \"headers\"\n", &[]).unwrap();
        assert_eq!(s.store.search, intake_core::SearchMode::Headers);
        let s = load("", &[("INTAKE_STORE__SEARCH", "off")]).unwrap();
        assert_eq!(s.store.search, intake_core::SearchMode::Off);
        assert_eq!(
            load("", &[]).unwrap().store.search,
            intake_core::SearchMode::Full
        );
        let errs = load("[store]\nsearch = \"bodies\"\n", &[]).unwrap_err();
        assert!(
            errs.iter().any(|e| e.key == "store.search"
                && e.to_string().contains("\"full\", \"headers\", \"off\"")),
            "{errs:?}"
        );
    }

    #[test]
    fn defaults() {
        let s = Settings::defaults();
        assert_eq!(s.smtp_listen.to_string(), "127.0.0.1:2525");
        assert_eq!(s.store, StoreSettings::sqlite("./intake-data"));
        assert!(s.smtp.domains.is_catch_all());
        assert!(s.smtp.lenient_helo);
    }

    #[test]
    fn every_error_is_reported_with_its_key() {
        let errs = load(
            "[smtp]\nlisten = \"nowhere\"\nmax_recipients = \"many\"\nmax_message_size = \"10XB\"\n\
             domains = [\"a@b\"]\ntypo_key = 1\n[store]\ntype = \"oracle\"\n",
            &[("INTAKE_SMTP__COMMAND_TIMEOUT", "soon")],
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "smtp.listen",
            "smtp.max_recipients",
            "smtp.max_message_size",
            "smtp.domains",
            "smtp.typo_key",
            "store.type",
            "smtp.command_timeout",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        let env_err = errs
            .iter()
            .find(|e| e.key == "smtp.command_timeout")
            .unwrap();
        assert!(
            env_err.to_string().contains("INTAKE_SMTP__COMMAND_TIMEOUT"),
            "{env_err}"
        );
    }

    /// intake.example.toml with the directory's type (and that type's keys) from the
    /// environment: either type loads over the same file.
    #[test]
    fn the_example_file_takes_either_directory_type_from_the_environment() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let example = std::fs::read_to_string(root.join("intake.example.toml")).unwrap();
        let sql = load(
            &example,
            &[
                ("INTAKE_DIRECTORY__TYPE", "sql"),
                ("INTAKE_DIRECTORY__URL", "postgres://intake@db.internal/app"),
                (
                    "INTAKE_DIRECTORY__PASSWORD_QUERY",
                    "SELECT password FROM customers WHERE login = $1",
                ),
                (
                    "INTAKE_DIRECTORY__SENDERS_QUERY",
                    "SELECT address FROM mailboxes WHERE owner = $1",
                ),
                ("INTAKE_AUTH__DIRECTORY", "true"),
            ],
        )
        .expect("the example with type = sql loads");
        let d = sql.directory.expect("a directory");
        assert_eq!(d.kind, intake_directory::DirectoryKind::Sql);
        assert!(d.answers_logins() && d.senders_query.is_some());
        assert_eq!(d.sender_attributes, None);

        let ldap = load(
            &example,
            &[
                ("INTAKE_DIRECTORY__TYPE", "ldap"),
                ("INTAKE_DIRECTORY__URL", "ldap://ldap.internal"),
                ("INTAKE_DIRECTORY__BASE", "ou=people,dc=example,dc=com"),
                ("INTAKE_DIRECTORY__BIND_DN", "cn=intake,dc=example,dc=com"),
                // All digits: still the password as given, not a number.
                ("INTAKE_DIRECTORY__BIND_PASSWORD", "123456"),
                ("INTAKE_RECIPIENTS__DIRECTORY", "true"),
            ],
        )
        .expect("the example with type = ldap loads");
        let d = ldap.directory.expect("a directory");
        assert_eq!(d.kind, intake_directory::DirectoryKind::Ldap);
        assert_eq!(d.bind_password.as_deref(), Some("123456"));
        assert_eq!(
            (d.recipient_filter, d.login_filter),
            (None, None),
            "defaults"
        );

        // Keys of the other type, set to something, are still refused.
        let wrong = load(
            &example,
            &[
                ("INTAKE_DIRECTORY__TYPE", "sql"),
                ("INTAKE_DIRECTORY__URL", "postgres://intake@db.internal/app"),
                (
                    "INTAKE_DIRECTORY__RECIPIENT_QUERY",
                    "SELECT 1 FROM m WHERE a = $1",
                ),
                ("INTAKE_DIRECTORY__BASE", "ou=people,dc=example,dc=com"),
            ],
        )
        .unwrap_err();
        assert!(
            wrong[0].to_string().contains("base does not apply"),
            "{wrong:?}"
        );
    }

    #[test]
    fn env_overrides_and_unknown_env_is_a_warning() {
        let s = load(
            "[smtp]\nmax_message_size = \"1MB\"\n",
            &[
                ("INTAKE_SMTP__MAX_MESSAGE_SIZE", "\"10MiB\""),
                ("INTAKE_SMTP__DOMAINS", r#"["example.com"]"#),
                ("INTAKE_DATA_DIR", "/somewhere"),
            ],
        )
        .unwrap();
        assert_eq!(s.smtp.max_message_size, 10 << 20);
        assert!(s.smtp.domains.accepts("example.com") && !s.smtp.domains.accepts("other.test"));
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].to_string().contains("INTAKE_DATA_DIR"));
    }

    #[test]
    fn policy_settings() {
        let s = load(
            "[greylist]\nenabled = true\nallow_networks = [\"10.0.0.0/8\"]\n",
            &[
                (
                    "INTAKE_RECIPIENTS__ADDRESSES",
                    r#"["alice@example.test", "@team.test"]"#,
                ),
                ("INTAKE_GREYLIST__DELAY", "2s"),
            ],
        )
        .unwrap();
        assert_eq!(s.policy.recipients.addresses.len(), 2);
        assert_eq!(s.policy.recipients.on_error, intake_core::OnError::Defer);
        assert!(s.policy.greylist.enabled);
        assert_eq!(s.policy.greylist.delay, Duration::from_secs(2));
        assert_eq!(s.policy.greylist.lifetime, Duration::from_secs(35 * 86_400));
        assert_eq!(s.policy.greylist.on_error, intake_core::OnError::FailOpen);
        assert_eq!(s.policy.greylist.allow_networks.len(), 1);
        assert!(!Settings::defaults().policy.greylist.enabled);
        let errs = load(
            "[recipients]\naddresses = [\"bob\"]\non_error = \"maybe\"\n[greylist]\ntimeout = 0\n",
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "recipients.addresses",
                "recipients.on_error",
                "greylist.timeout"
            ]
        );
    }

    #[test]
    fn delivery_targets_and_their_settings() {
        // The acceptance check's contract, from the environment alone.
        let s = load(
            "",
            &[
                ("INTAKE_DELIVERY__TARGETS", "[\"relay\"]"),
                ("INTAKE_RELAY__SERVER", "127.0.0.1:2526"),
            ],
        )
        .unwrap();
        assert_eq!(s.delivery.targets, ["relay"]);
        assert_eq!(
            s.delivery.sections.relay.as_ref().unwrap().server,
            "127.0.0.1:2526"
        );
        assert!(
            s.warnings.iter().any(|w| w.key == "smtp.domains"),
            "relaying every domain is worth a warning"
        );
        assert_eq!(Settings::defaults().delivery.targets, ["store"]);
        // Each target without what it needs, and nonsense, is an error with its key.
        let errs = load(
            "[delivery]\ntargets = [\"relay\", \"webhook\", \"program\", \"fax\"]\n\
             [relay]\ntls = \"maybe\"\n",
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "delivery.targets",
            "relay.server",
            "relay.tls",
            "webhook.url",
            "program.command",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        let errs = load("[webhook]\nurl = \"ftp://x.test/\"\n", &[]).unwrap_err();
        assert_eq!(errs[0].key, "webhook.url");
        let s = load(
            "[delivery]\ntargets = [\"store\", \"program\"]\n\
             [program]\ncommand = [\"/bin/cat\"]\ntimeout = \"5s\"\n",
            &[],
        )
        .unwrap();
        let p = s.delivery.sections.program.unwrap();
        assert_eq!((p.command.len(), p.timeout.as_secs()), (1, 5));
    }

    #[test]
    fn listeners_that_could_relay_openly_or_leak_passwords_do_not_load() {
        let errs = load(
            "[[listener]]\naddress = \"127.0.0.1:2587\"\nrelay = true\n\
             [[listener]]\naddress = \"127.0.0.1:2588\"\nauth = \"required\"\n\
             [[listener]]\naddress = \"127.0.0.1:2589\"\ntls = \"implicit\"\ntypo = 1\n\
             [[listener]]\naddress = \"127.0.0.1:2589\"\ntargets = [\"relay\"]\n",
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "listener[0].relay",   // relaying without a login
            "listener[1].auth",    // AUTH without TLS
            "listener[2].tls",     // TLS without a certificate
            "listener[2].typo",    // unknown key
            "listener[3].address", // the same address twice
            "listener[3].targets", // relay without [relay]
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        let s = load(
            "[[listener]]\nname = \"app\"\naddress = \"127.0.0.1:2587\"\nauth = \"required\"\n\
             allow_plaintext_auth = true\npolicy = \"none\"\n",
            &[],
        )
        .unwrap();
        let l = &s.listeners[0];
        assert_eq!(
            (l.name.as_str(), l.auth, l.policy.clone()),
            ("app", AuthMode::Required, PolicyProfile::None)
        );
        assert_eq!(l.targets, ["store"], "the default targets");
    }

    #[test]
    fn a_listener_names_an_existing_policy_profile() {
        let s = load(
            "[policy.profiles.lenient]\nchecks = []\n\
             [[listener]]\nname = \"mx2\"\naddress = \"127.0.0.1:2526\"\npolicy = \"lenient\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            s.listeners[0].policy,
            PolicyProfile::Named("lenient".into())
        );
        let errors = load(
            "[[listener]]\nname = \"mx2\"\naddress = \"127.0.0.1:2526\"\npolicy = \"strict\"\n",
            &[],
        )
        .unwrap_err();
        let text = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            text.contains("\"strict\"") && text.contains("policy.profiles"),
            "{text}"
        );
    }

    #[test]
    fn listeners_and_routes_come_from_the_environment_too() {
        let s = load(
            "[[listener]]\nname = \"mx2\"\naddress = \"127.0.0.1:2526\"\n",
            &[
                ("INTAKE_LISTENER__0__ADDRESS", "127.0.0.1:2600"),
                ("INTAKE_LISTENER__1__NAME", "hook"),
                ("INTAKE_LISTENER__1__ADDRESS", "127.0.0.1:2601"),
                ("INTAKE_LISTENER__1__POLICY", "none"),
                ("INTAKE_ROUTE__0__DOMAINS", r#"["dev.example.com"]"#),
                ("INTAKE_ROUTE__0__TARGETS", r#"["store"]"#),
            ],
        )
        .unwrap();
        let got: Vec<(&str, String)> = s
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.address.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("mx2", "127.0.0.1:2600".to_string()),
                ("hook", "127.0.0.1:2601".to_string())
            ]
        );
        assert_eq!(s.routes.len(), 1);
        assert!(s.routes[0].domains.accepts("dev.example.com"));
        // A mistake names the variable it came from.
        let errs = load("", &[("INTAKE_LISTENER__0__ADDRESS", "nowhere")]).unwrap_err();
        let text = errs
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains("INTAKE_LISTENER__0__ADDRESS"), "{text}");
    }

    #[test]
    fn a_mistyped_listener_or_route_key_gets_a_suggestion() {
        let errs = load(
            "[[listener]]\naddress = \"127.0.0.1:2526\"\nrestrict_sender = false\n\
             [[route]]\ndomains = [\"x.test\"]\ntargets = [\"store\"]\ndomain = 1\n",
            &[],
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        for want in [
            "listener[0].restrict_sender: unknown setting; did you mean listener[0].restrict_senders?",
            "route[0].domain: unknown setting; did you mean route[0].domains?",
        ] {
            assert!(text.iter().any(|t| t == want), "{want:?} not in {text:?}");
        }
    }

    #[test]
    fn routes_need_domains_and_configured_targets() {
        let errs = load(
            "[[route]]\ndomains = [\"a@b\"]\ntargets = [\"store\"]\n\
             [[route]]\ndomains = [\"x.test\"]\ntargets = [\"webhook\"]\n\
             [[route]]\ntargets = [\"store\"]\nwhat = 1\n",
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "route[0].domains",
            "route[1].targets",
            "route[2].domains",
            "route[2].what",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn store_settings_are_backend_neutral() {
        let s = load(
            "[store]\npath = \"/srv/mail\"\nmax_batch = 64\nbusy_timeout = \"2s\"\n",
            &[("INTAKE_STORE__COMMIT_DELAY", "0")],
        )
        .unwrap();
        assert_eq!(s.store.kind, intake_store::StoreKind::Sqlite);
        assert_eq!(s.store.path, PathBuf::from("/srv/mail"));
        assert_eq!(
            (s.store.max_batch, s.store.commit_delay),
            (64, Duration::ZERO)
        );
        assert_eq!(s.store.sqlite.busy_timeout, Duration::from_secs(2));
        let s = load(
            "[store]\ntype = \"postgres\"\n",
            &[("INTAKE_STORE__URL", "postgres://intake:pw@db/intake")],
        )
        .unwrap();
        assert_eq!(s.store.kind, intake_store::StoreKind::Postgres);
        assert_eq!(
            s.store.describe(),
            "postgres at postgres://intake:***@db/intake"
        );
        assert_eq!(s.store.pool, intake_store::PoolOptions::default());
        let s = load(
            "[store]\ntype = \"mariadb\"\npool_size = 4\nconnect_timeout = \"2s\"\n\
             require_durable_commit = false\n",
            &[("INTAKE_STORE__URL", "mysql://intake:pw@db:3306/intake")],
        )
        .unwrap();
        assert_eq!(s.store.kind, intake_store::StoreKind::Mysql);
        assert_eq!(
            s.store.mysql,
            intake_store::MysqlOptions {
                require_durable_commit: false,
            }
        );
        assert_eq!(
            s.store.pool,
            intake_store::PoolOptions {
                pool_size: 4,
                connect_timeout: Duration::from_secs(2),
            }
        );
        assert_eq!(
            s.store.describe(),
            "mysql at mysql://intake:***@db:3306/intake"
        );
        let s = load(
            "[store]\ntype = \"postgres\"\nurl = \"postgres://db/x\"\npool_size = 4\n",
            &[("INTAKE_STORE__CONNECT_TIMEOUT", "2s")],
        )
        .unwrap();
        assert_eq!(
            (s.store.pool.pool_size, s.store.pool.connect_timeout),
            (4, Duration::from_secs(2))
        );
        for (file, key) in [
            ("[store]\ntype = \"redis\"\n", "store.url"),
            ("[store]\npool_size = 0\n", "store.pool_size"),
            ("[store]\nurl = \"postgres://db/x\"\n", "store.url"),
            ("[store]\ntype = \"oracle\"\n", "store.type"),
            (
                "[store]\nconnect_timeout = \"0s\"\n",
                "store.connect_timeout",
            ),
            (
                "[aliases]\nsecret = \"a\"\nsecret_file = \"/run/secrets/alias\"\n",
                "aliases.secret_file",
            ),
        ] {
            let errs = load(file, &[]).unwrap_err();
            assert!(errs.iter().any(|e| e.key == key), "{file}: {errs:?}");
        }
        let s = load("[aliases]\nsecret_file = \"/run/secrets/alias\"\n", &[]).unwrap();
        assert_eq!(
            s.alias_secret_file.as_deref(),
            Some(std::path::Path::new("/run/secrets/alias"))
        );
    }

    #[test]
    fn known_keys_cover_every_section() {
        let keys = known_keys();
        for k in ["smtp.listen", "smtp.domains", "store.path", "log.level"] {
            assert!(keys.iter().any(|x| x == k), "{k}");
        }
    }
}

mod doc_tests {
    use super::super::*;

    /// Every setting is documented, and the example file is valid and complete.
    #[test]
    fn docs_and_example_cover_every_key() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let doc = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
        let example = std::fs::read_to_string(root.join("intake.example.toml")).unwrap();
        let table: toml::Table = example.parse().unwrap();
        Settings::from_table(&table, &crate::config::Sources::default()).expect("example is valid");
        for key in known_keys() {
            let (section, name) = key.split_once('.').unwrap();
            let var = format!("INTAKE_{}__{}", section.to_uppercase(), name.to_uppercase());
            assert!(
                doc.contains(&format!("`{name}`")) && doc.contains(&var),
                "{key} ({var}) not in docs/configuration.md"
            );
            assert!(
                table.get(section).and_then(|s| s.get(name)).is_some(),
                "{key} not in intake.example.toml"
            );
        }
        // And the other way round: every variable the reference names is a setting.
        let known: std::collections::BTreeSet<String> = known_keys().into_iter().collect();
        let mut named = 0;
        for (i, _) in doc.match_indices("INTAKE_") {
            let var: String = doc[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let Some((section, name)) = var["INTAKE_".len()..].split_once("__") else {
                continue; // INTAKE_CONFIG, INTAKE_LISTENER, INTAKE_ROUTE
            };
            if name.is_empty() || name.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                continue; // INTAKE_SECTION__KEY as a pattern, INTAKE_LISTENER__0__…
            }
            named += 1;
            let key = format!("{section}.{name}")
                .replace("__", ".")
                .to_lowercase();
            if key.starts_with("policy.profiles.") {
                continue; // one per named profile
            }
            assert!(
                known.contains(&key) || section == "SECTION",
                "docs/configuration.md names {var}, but {key} is not a setting"
            );
        }
        assert!(named > 100, "the reference names the settings' variables");
        // [[listener]] and [[route]] keys are checked by hand (not `known_keys`): each is
        // a row of its section, and each row of the section is a key.
        for (heading, keys) in [
            ("## `[[listener]]`", crate::config::LISTENER_KEYS),
            ("## `[[route]]`", crate::config::ROUTE_KEYS),
        ] {
            let start = doc.find(heading).expect(heading) + heading.len();
            let section = &doc[start..];
            let section = &section[..section.find("\n## ").unwrap_or(section.len())];
            let rows: std::collections::BTreeSet<&str> = section
                .lines()
                .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
                .collect();
            let keys: std::collections::BTreeSet<&str> = keys.iter().copied().collect();
            assert_eq!(
                rows, keys,
                "{heading} in docs/configuration.md and the keys read"
            );
        }
        // Each setting's row is inside a table: a row after a blank line starts no table.
        let lines: Vec<&str> = doc.lines().collect();
        for (i, pair) in lines.windows(2).enumerate() {
            assert!(
                !pair[1].starts_with("| `") || pair[0].starts_with('|'),
                "docs/configuration.md line {}: a table row outside a table",
                i + 2
            );
        }
    }

    /// The example configurations in docs/policy.md load without errors.
    #[test]
    fn policy_examples_are_valid() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let doc = std::fs::read_to_string(root.join("docs/policy.md")).unwrap();
        let blocks: Vec<&str> = doc
            .split("```toml\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .collect();
        assert_eq!(blocks.len(), 3, "directory senders, the MX and the gateway");
        let load = |b: &str| {
            let table: toml::Table = b.parse().unwrap_or_else(|e| panic!("{e}\n{b}"));
            Settings::from_table(&table, &crate::config::Sources::default())
                .unwrap_or_else(|e| panic!("{e:?}\n{b}"))
        };
        // A directory login's senders: the entry's address attributes.
        let senders = load(blocks[0]);
        let d = senders.directory.expect("a directory");
        assert_eq!(
            d.sender_attributes(),
            intake_directory::settings::DEFAULT_SENDER_ATTRIBUTES
        );
        assert!(senders.auth.directory && senders.auth.restrict_senders);
        let blocks = &blocks[1..];
        // The MX: rejects listed clients, greylists, tags spam, records SPF/DKIM/DMARC.
        let mx = load(blocks[0]).policy;
        assert!(mx.dnsbl.enabled && mx.dnsbl.zones.len() == 3);
        assert_eq!(mx.dnsbl.action, intake_policy::DnsblAction::Reject);
        assert!(mx.greylist.enabled);
        assert!(mx.rspamd.enabled && !mx.rspamd.refuse);
        assert!(mx.sender_auth.enabled && !mx.sender_auth.dmarc_enforce);
        assert_eq!(mx.sender_auth.hostname, "mx.inbox.example");
        assert_eq!(
            mx.profile(intake_policy::DEFAULT_PROFILE).unwrap(),
            [
                "dnsbl",
                "helo",
                "recipients",
                "greylist",
                "sender_auth",
                "rspamd"
            ]
        );
        // The gateway: only valid recipients.
        let gw = load(blocks[1]).policy;
        assert!(gw.recipients.file.is_some());
        assert!(gw.greylist.enabled && gw.sender_auth.dmarc_enforce);
        assert_eq!(gw.spamd.reject_score, Some(10.0));
    }
}
