//! `[directory]` read, validated and shown without secrets.

use super::*;

fn read(toml_text: &str) -> Result<DirectorySettings, String> {
    toml::from_str::<DirectorySettings>(toml_text).map_err(|e| e.to_string())
}

#[test]
fn ldap_settings_read_with_defaults() {
    let s = read(
        r#"
        type = "ldap"
        url = "ldap://127.0.0.1:389"
        bind_dn = "cn=admin,dc=example,dc=test"
        bind_password = "admin-secret"
        base = "ou=people,dc=example,dc=test"
        recipient_filter = "(|(mail=%s)(mailAlternateAddress=%s))"
        cache_ttl = "2m"
        negative_cache_ttl = 5
        "#,
    )
    .unwrap();
    assert_eq!(s.kind, DirectoryKind::Ldap);
    assert_eq!(s.cache_ttl, Duration::from_secs(120));
    assert_eq!(s.negative_cache_ttl, Duration::from_secs(5));
    assert_eq!(s.timeout, Duration::from_secs(5));
    assert_eq!(s.login_filter(), "(uid=%s)");
    assert!(s.answers_recipients() && s.answers_logins());
    assert_eq!(s.validate(), Ok(()));
    let shown = format!("{s:?}");
    assert!(!shown.contains("admin-secret"), "{shown}");
}

#[test]
fn sql_settings_read_and_hide_the_url_password() {
    let s = read(
        r#"
        type = "sql"
        url = "postgres://app:hunter2@db.example.test:5432/app"
        password_query = "SELECT password FROM customers WHERE login = $1 AND active"
        "#,
    )
    .unwrap();
    assert_eq!(s.validate(), Ok(()));
    assert!(s.answers_logins() && !s.answers_recipients());
    let shown = format!("{s:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("postgres://app:<redacted "), "{shown}");
    assert!(shown.contains(">@db.example.test:5432/app"), "{shown}");
}

#[test]
fn unknown_keys_and_bad_durations_are_refused() {
    assert!(read("type = \"ldap\"\nurl = \"ldap://x\"\nbsae = \"x\"").is_err());
    let e = read("type = \"ldap\"\nurl = \"ldap://x\"\ntimeout = \"soon\"").unwrap_err();
    assert!(e.contains("is not a duration"), "{e}");
    assert!(read("type = \"nis\"\nurl = \"x\"").is_err());
}

#[test]
fn validation_names_the_problem() {
    let ldap = || {
        let mut s = DirectorySettings::new(DirectoryKind::Ldap, "ldap://127.0.0.1");
        s.base = Some("dc=example,dc=test".into());
        s
    };
    assert_eq!(ldap().validate(), Ok(()));
    let mut s = ldap();
    s.base = None;
    assert_eq!(
        s.validate(),
        Err(SettingsError::Missing {
            key: "base",
            kind: "ldap"
        })
    );
    let mut s = ldap();
    s.url = "http://x".into();
    assert!(matches!(s.validate(), Err(SettingsError::BadUrl { .. })));
    let mut s = ldap();
    s.url = "ldaps://x".into();
    s.starttls = true;
    assert_eq!(s.validate(), Err(SettingsError::StartTlsOnLdaps));
    let mut s = ldap();
    s.login_filter = Some("(uid=alice)".into());
    assert_eq!(
        s.validate(),
        Err(SettingsError::NoPlaceholder {
            key: "login_filter",
            placeholder: "%s"
        })
    );
    let mut s = ldap();
    s.recipient_filter = Some("(mail=%s".into());
    assert!(matches!(s.validate(), Err(SettingsError::BadFilter { .. })));
    let mut s = ldap();
    s.bind_dn = Some("cn=x".into());
    assert_eq!(s.validate(), Err(SettingsError::HalfBind));
    let mut s = ldap();
    s.password_query = Some("SELECT 1".into());
    assert!(matches!(
        s.validate(),
        Err(SettingsError::NotFor {
            key: "password_query",
            ..
        })
    ));

    let sql = |url: &str, q: &str| {
        let mut s = DirectorySettings::new(DirectoryKind::Sql, url);
        s.recipient_query = Some(q.into());
        s
    };
    assert_eq!(
        sql("mysql://root@127.0.0.1/test", "SELECT 1 FROM m WHERE a = ?").validate(),
        Ok(())
    );
    assert_eq!(
        sql(
            "mysql://root@127.0.0.1/test",
            "SELECT 1 FROM m WHERE a = $1"
        )
        .validate(),
        Err(SettingsError::NoPlaceholder {
            key: "recipient_query",
            placeholder: "?"
        })
    );
    assert_eq!(
        sql("postgres://x/db", "SELECT 1 FROM m WHERE a = '$1x'").validate(),
        Ok(()),
        "a crude check: $1 anywhere"
    );
    assert!(matches!(
        sql("sqlite://x", "?").validate(),
        Err(SettingsError::BadUrl { .. })
    ));
    let mut s = sql("postgres://x/db", "SELECT 1 WHERE $1 = ''");
    s.recipient_query = None;
    assert_eq!(s.validate(), Err(SettingsError::NoQuery));
    let mut s = sql("postgres://x/db", "SELECT 1 WHERE $1 = ''");
    s.timeout = Duration::ZERO;
    assert_eq!(s.validate(), Err(SettingsError::Zero("timeout")));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("x"), None);
}

#[test]
fn sender_keys_belong_to_their_type() {
    let mut ldap = DirectorySettings::new(DirectoryKind::Ldap, "ldap://127.0.0.1");
    ldap.base = Some("dc=example,dc=test".into());
    ldap.senders_query = Some("SELECT a FROM m WHERE o = $1".into());
    assert_eq!(
        ldap.validate(),
        Err(SettingsError::NotFor {
            key: "senders_query",
            kind: "ldap"
        })
    );
    ldap.senders_query = None;
    ldap.sender_attributes = Some(vec!["mail".into(), "USERPASSWORD".into()]);
    assert_eq!(
        ldap.validate(),
        Err(SettingsError::PasswordAttribute("USERPASSWORD".into()))
    );
    let mut sql = DirectorySettings::new(DirectoryKind::Sql, "postgres://h/db");
    sql.password_query = Some("SELECT p FROM u WHERE l = $1".into());
    sql.senders_query = Some("SELECT a FROM m WHERE o = 'x'".into());
    assert_eq!(
        sql.validate(),
        Err(SettingsError::NoPlaceholder {
            key: "senders_query",
            placeholder: "$1"
        })
    );
    sql.senders_query = None;
    sql.sender_attributes = Some(vec!["mail".into()]);
    assert_eq!(
        sql.validate(),
        Err(SettingsError::NotFor {
            key: "sender_attributes",
            kind: "sql"
        })
    );
}
