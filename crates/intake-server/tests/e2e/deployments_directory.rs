//! The two directory examples of docs/deployments.md, run against real servers: the
//! qmail-ldap-style gateway against a slapd of the test's own (the example's tree, service
//! account and StartTLS), clamd, spamd and an LMTP mailbox server; the sending platform
//! against a scratch PostgreSQL database with a customers table and a webhook receiver.
//! Only addresses, certificates, store, downstream and DNS are moved to test ones.

use intake_directory::testing::{Slapd, person_in as person, slappasswd};
use intake_policy::testclamd::{Clamd, PATTERN, SIGNATURE};
use intake_policy::testspamd::Spamd;
use intake_server::config::{Settings, Sources};
use intake_server::server;
use intake_store::postgres::scratch::ScratchDatabase;
use lettre::transport::smtp::authentication::Mechanism;
use lettre::transport::smtp::client::Tls;
use sqlx::Connection;

use crate::deployments::{examples, http_server, lmtp_sink, localize, set};
use crate::submit::{Submission, any_cert};
use crate::support::Client;

fn text(t: &toml::Table, section: &str, key: &str) -> String {
    t[section][key].as_str().unwrap().to_string()
}

/// What the LMTP server was handed so far.
fn delivered(dumps: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dumps)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect()
}

#[tokio::test]
async fn the_ldap_gateway_example_checks_everything_then_relays() {
    let mut t = examples().remove(2);
    let dir = tempfile::tempdir().unwrap();
    localize(&mut t, dir.path());

    // The directory the example describes: its suffix, its service account and password,
    // StartTLS (with the test's CA), and one user.
    let base = text(&t, "directory", "base");
    let suffix = base.split_once(',').unwrap().1.to_string();
    let bind_dn = text(&t, "directory", "bind_dn");
    let services = bind_dn.split_once(',').unwrap().1.to_string();
    let slapd = Slapd::serving(&suffix, true);
    let ou = |dn: &str| {
        let name = dn.split(',').next().unwrap().trim_start_matches("ou=");
        format!("dn: {dn}\nobjectClass: organizationalUnit\nou: {name}\n")
    };
    slapd.add(&format!(
        "{}\n{}\ndn: {bind_dn}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
         cn: intake\nuserPassword: {}\n\n{}",
        ou(&base),
        ou(&services),
        slappasswd(&text(&t, "directory", "bind_password")),
        person(&base, "bob", "bob@example.com", "bob-pw"),
    ));
    assert!(t["directory"]["starttls"].as_bool().unwrap());
    set(&mut t, "directory", "url", slapd.url());
    let ca = slapd.tls.as_ref().unwrap().1.display().to_string();
    t["directory"]
        .as_table_mut()
        .unwrap()
        .insert("tls_ca".into(), ca.into());

    // clamd on its unix socket, as in the example; spamd; the mailbox server (LMTP).
    let clamd = Clamd::start();
    set(
        &mut t,
        "clamav",
        "address",
        clamd.socket.display().to_string(),
    );
    let spamd = Spamd::start();
    set(&mut t, "spamd", "address", spamd.addr.to_string());
    let dumps = dir.path().join("lmtp");
    std::fs::create_dir(&dumps).unwrap();
    let sink = lmtp_sink(&dumps);
    set(&mut t, "relay", "server", sink.1.clone());
    // SPF at MAIL asks the test's DNS server, never the network.
    let dns = intake_policy::testdns::Zone::default()
        .txt("sender.test", "v=spf1 ip4:127.0.0.0/8 -all")
        .txt("forged.test", "v=spf1 -all")
        .serve()
        .await;
    let mut dns_section = toml::Table::new();
    dns_section.insert("servers".into(), vec![dns.to_string()].into());
    t.insert("dns".into(), dns_section.into());

    let s = Settings::from_table(&t, &Sources::default()).expect("the example loads");
    let running = server::start(&s).await.unwrap();

    let mut c = Client::greeted(running.smtp_addr).await;
    assert!(c.cmd("EHLO sender.test").await.text().contains("STARTTLS"));
    c.transcript(
        "C: MAIL FROM:<ceo@forged.test>
         S: 550 5.7.23 SPF of forged.test does not allow 127.0.0.1 to send its mail
         C: MAIL FROM:<a@sender.test>
         S: 250 2.1.0
         C: RCPT TO:<nobody@example.com>
         S: 550 5.1.1
         C: RCPT TO:<bob@example.com>
         S: 250 2.1.5
         C: DATA
         S: 354",
    )
    .await;
    c.send(b"From: a@sender.test\r\nTo: bob@example.com\r\nSubject: through the gateway\r\n\r\nhi\r\n.\r\n")
        .await;
    let r = c.reply().await;
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    let got = delivered(&dumps);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].contains("Subject: through the gateway"),
        "{}",
        got[0]
    );
    assert!(
        !got[0].contains("X-Intake-Unchecked"),
        "every check decided: {}",
        got[0]
    );

    // A virus: refused naming the signature, never relayed.
    c.transcript(
        "C: MAIL FROM:<a@sender.test>
         S: 250 2.1.0
         C: RCPT TO:<bob@example.com>
         S: 250 2.1.5
         C: DATA
         S: 354",
    )
    .await;
    c.send(format!("Subject: infected\r\n\r\n{PATTERN}\r\n.\r\n").as_bytes())
        .await;
    let r = c.reply().await;
    assert!(
        r.text().starts_with(&format!(
            "554 5.7.1 Message refused: virus found ({SIGNATURE}"
        )),
        "{}",
        r.text()
    );
    assert_eq!(delivered(&dumps).len(), 1);
    c.cmd("QUIT").await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn the_sending_platform_example_logs_in_against_its_table_and_posts() {
    let mut t = examples().remove(3);
    let dir = tempfile::tempdir().unwrap();
    localize(&mut t, dir.path());

    // The platform's own database: a customers table as the example's query reads it.
    let db = ScratchDatabase::create().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("CREATE TABLE customers (login text PRIMARY KEY, password text, active boolean)")
        .execute(&mut conn)
        .await
        .unwrap();
    for (login, active) in [
        ("customer@their-domain.example", true),
        ("former@their-domain.example", false),
    ] {
        let hash = format!(
            "{{BLF-CRYPT}}{}",
            bcrypt::hash("their-password", 4).unwrap()
        );
        sqlx::query("INSERT INTO customers VALUES ($1, $2, $3)")
            .bind(login)
            .bind(hash)
            .bind(active)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    // The addresses each customer may send as (the example's senders_query).
    sqlx::query("CREATE TABLE sender_addresses (customer text, address text)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO sender_addresses VALUES ('customer@their-domain.example', 'customer@their-domain.example'),
                                             ('customer@their-domain.example', 'billing@their-domain.example')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    set(&mut t, "directory", "url", db.url.clone());
    let (hook, seen) = http_server().await;
    set(
        &mut t,
        "webhook",
        "url",
        format!("http://{hook}/inbound/smtp"),
    );
    let s = Settings::from_table(&t, &Sources::default()).expect("the example loads");
    let running = server::start(&s).await.unwrap();

    let send_as = |login: &'static str, password: &'static str, from: &'static str| {
        Submission {
            tls: Tls::Required(any_cert("mail.example.test")),
            login: Some((login, password, Mechanism::Plain)),
            from,
            to: "someone@anywhere.example",
            subject: "from the platform",
        }
        .send(running.smtp_addr)
    };
    let send = |login: &'static str, password: &'static str| send_as(login, password, login);
    send("customer@their-domain.example", "their-password")
        .await
        .expect("STARTTLS, AUTH 235 against the table, then the webhook said 200");
    send_as(
        "customer@their-domain.example",
        "their-password",
        "billing@their-domain.example",
    )
    .await
    .expect("another of the customer's sender addresses");
    let e = send_as(
        "customer@their-domain.example",
        "their-password",
        "ceo@elsewhere.example",
    )
    .await
    .unwrap_err();
    assert!(e.contains("553"), "an address not the customer's: {e}");
    let e = send("customer@their-domain.example", "wrong")
        .await
        .unwrap_err();
    assert!(e.contains("535"), "{e}");
    let e = send("former@their-domain.example", "their-password")
        .await
        .unwrap_err();
    assert!(e.contains("535"), "a deactivated customer: {e}");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        2,
        "the two messages from the customer's own addresses"
    );
    let (head, body) = &seen[0];
    assert!(head.starts_with("POST /inbound/smtp "), "{head}");
    assert!(head.contains("X-Intake-Signature: t="), "{head}");
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        v["envelope"]["mail_from"], "customer@their-domain.example",
        "{v}"
    );
    assert_eq!(v["envelope"]["rcpt_to"][0], "someone@anywhere.example");
    assert_eq!(v["parsed"]["subject"], "from the platform");
    running.stop().await.unwrap();
    let _ = conn.close().await;
}
