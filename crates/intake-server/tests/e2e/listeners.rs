//! Several listeners in one process: the default listener as an MX, a submission listener
//! (STARTTLS required, AUTH required, users may relay) and an implicit-TLS one; what each
//! accepts with and without a login.

use lettre::transport::smtp::authentication::Mechanism;
use lettre::transport::smtp::client::Tls;

use crate::submit::{Submission, any_cert};
use crate::support::{Client, TestServer};

async fn three_listeners() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = crate::tls::make_cert(dir.path(), "mail.example.test");
    let srv = TestServer::start(&format!(
        "[smtp]\ndomains = [\"example.test\"]\n\
         [tls]\ncertificate = \"{}\"\nkey = \"{}\"\n\
         [[listener]]\nname = \"submission\"\naddress = \"127.0.0.1:0\"\ntls = \"required\"\n\
         auth = \"required\"\nrelay = true\npolicy = \"none\"\n\
         [[listener]]\nname = \"submissions\"\naddress = \"127.0.0.1:0\"\ntls = \"implicit\"\n\
         auth = \"required\"\nrelay = true\n",
        cert.display(),
        key.display()
    ))
    .await;
    let data = srv.data();
    let mut add = std::process::Command::new(env!("CARGO_BIN_EXE_intake"))
        .args(["user", "add", "alice@example.test"])
        .env("INTAKE_STORE__PATH", &data)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    add.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    assert!(add.wait().unwrap().success());
    (srv, dir)
}

fn addr(srv: &TestServer, name: &str) -> std::net::SocketAddr {
    srv.running
        .listener_addrs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, a)| *a)
        .unwrap()
}

async fn submit(addr: std::net::SocketAddr, tls: Tls, login: bool) -> Result<(), String> {
    Submission {
        tls,
        login: login.then_some(("alice@example.test", "s3cret", Mechanism::Login)),
        from: "alice@example.test",
        to: "friend@elsewhere.test",
        subject: "out",
    }
    .send(addr)
    .await
}

#[tokio::test]
async fn mx_submission_and_implicit_tls_in_one_process() {
    let (srv, _dir) = three_listeners().await;
    let submission = addr(&srv, "submission");
    let submissions = addr(&srv, "submissions");

    // Submission: STARTTLS then AUTH, then any domain.
    submit(
        submission,
        Tls::Required(any_cert("mail.example.test")),
        true,
    )
    .await
    .expect("submission with a login");
    // Implicit TLS (465 style).
    submit(
        submissions,
        Tls::Wrapper(any_cert("mail.example.test")),
        true,
    )
    .await
    .expect("implicit TLS with a login");
    assert_eq!(srv.subjects("friend@elsewhere.test").await, ["out", "out"]);

    // Without a login neither takes mail at all.
    let e = submit(
        submission,
        Tls::Required(any_cert("mail.example.test")),
        false,
    )
    .await
    .unwrap_err();
    assert!(e.contains("530"), "{e}");
    let e = submit(
        submissions,
        Tls::Wrapper(any_cert("mail.example.test")),
        false,
    )
    .await
    .unwrap_err();
    assert!(e.contains("530"), "{e}");

    // The MX (default listener) is unchanged: our domains only, no AUTH offered.
    let mut c = Client::greeted(srv.addr).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(!ehlo.text().contains("AUTH"), "{}", ehlo.text());
    c.cmd("MAIL FROM:<alice@example.test>").await;
    assert_eq!(
        c.cmd("RCPT TO:<friend@elsewhere.test>").await.head(),
        "550 5.7.1"
    );
    assert_eq!(
        c.cmd("RCPT TO:<bob@example.test>").await.head(),
        "250 2.1.5"
    );

    // The submission listener in plain text: STARTTLS first, and no AUTH before it.
    let mut c = Client::greeted(submission).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.text().contains("STARTTLS") && !ehlo.text().contains("AUTH"));
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.test>").await.head(),
        "530 5.7.0"
    );
    assert_eq!(c.cmd("AUTH LOGIN").await.head(), "538 5.7.11");
}

/// A `[[listener]]` runs the checks of the profile it names.
#[tokio::test]
async fn each_listener_runs_the_checks_of_its_profile() {
    let srv = TestServer::start(
        "[smtp]\ndomains = [\"example.test\"]\n\
         [recipients]\naddresses = [\"alice@example.test\"]\n\
         [policy.profiles.lenient]\nchecks = []\n\
         [[listener]]\nname = \"inbound-lenient\"\naddress = \"127.0.0.1:0\"\npolicy = \"lenient\"\n",
    )
    .await;
    let rcpt = |a| async move {
        let mut c = Client::greeted(a).await;
        c.cmd("EHLO client.example").await;
        c.cmd("MAIL FROM:<s@example.net>").await;
        c.cmd("RCPT TO:<bob@example.test>").await.head()
    };
    assert_eq!(
        rcpt(srv.addr).await,
        "550 5.1.1",
        "the default profile checks recipients"
    );
    assert_eq!(
        rcpt(addr(&srv, "inbound-lenient")).await,
        "250 2.1.5",
        "the lenient profile runs no check"
    );
    srv.stop().await;
}
