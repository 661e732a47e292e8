//! SMTP AUTH end to end: users added with the CLI (a separate process) log in to a running
//! server without a restart; every hash scheme; AUTH before TLS; failed-login limits; and
//! open-relay attempts on each kind of listener.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use lettre::transport::smtp::authentication::Mechanism;
use lettre::transport::smtp::client::Tls;

use crate::submit::{Submission, any_cert};
use crate::support::{Client, TestServer};

/// `intake user ...` against the store in `data`, `stdin` on its standard input.
fn user_cli(data: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("user")
        .args(args)
        .env("INTAKE_STORE__PATH", data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

async fn submission(extra: &str) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = crate::tls::make_cert(dir.path(), "submit.example.test");
    let srv = TestServer::start(&format!(
        "[smtp]\ndomains = [\"example.test\"]\ntls = \"optional\"\n\
         [tls]\ncertificate = \"{}\"\nkey = \"{}\"\n[auth]\nenabled = true\n{extra}",
        cert.display(),
        key.display()
    ))
    .await;
    (srv, dir)
}

/// lettre (an independent client) over STARTTLS with a login; the send result.
async fn send_as(
    srv: &TestServer,
    user: &str,
    password: &str,
    from: &str,
    to: &str,
) -> Result<(), String> {
    Submission {
        tls: Tls::Required(any_cert("submit.example.test")),
        login: Some((user, password, Mechanism::Plain)),
        from,
        to,
        subject: "submitted",
    }
    .send(srv.addr)
    .await
}

#[tokio::test]
async fn a_user_added_with_the_cli_logs_in_at_once_and_may_relay() {
    let (srv, _dir) = submission("required = true\nrelay = true\n").await;
    // Unknown yet: refused.
    let r = send_as(
        &srv,
        "alice@example.test",
        "s3cret",
        "alice@example.test",
        "bob@elsewhere.test",
    )
    .await;
    assert!(r.unwrap_err().contains("535"), "unknown user");
    let (ok, out) = user_cli(&srv.data(), &["add", "alice@example.test"], "s3cret\n");
    assert!(ok, "{out}");
    // The running server sees the new user on the next AUTH.
    send_as(
        &srv,
        "alice@example.test",
        "s3cret",
        "alice@example.test",
        "bob@elsewhere.test",
    )
    .await
    .expect("logged in, relayed to a foreign domain");
    assert_eq!(srv.subjects("bob@elsewhere.test").await, ["submitted"]);
    // Not somebody else's sender address.
    let r = send_as(
        &srv,
        "alice@example.test",
        "s3cret",
        "carol@example.test",
        "bob@elsewhere.test",
    )
    .await;
    assert!(r.unwrap_err().contains("553"), "sender not owned");
    // Password changed and user disabled: effective at once.
    let (ok, _) = user_cli(&srv.data(), &["passwd", "alice@example.test"], "n3w\n");
    assert!(ok);
    let r = send_as(
        &srv,
        "alice@example.test",
        "s3cret",
        "alice@example.test",
        "x@example.test",
    )
    .await;
    assert!(r.unwrap_err().contains("535"));
    send_as(
        &srv,
        "alice@example.test",
        "n3w",
        "alice@example.test",
        "x@example.test",
    )
    .await
    .unwrap();
    let (ok, _) = user_cli(&srv.data(), &["disable", "alice@example.test"], "");
    assert!(ok);
    let r = send_as(
        &srv,
        "alice@example.test",
        "n3w",
        "alice@example.test",
        "x@example.test",
    )
    .await;
    assert!(
        r.unwrap_err().contains("535"),
        "disabled looks like a wrong password"
    );
    let (_, list) = user_cli(&srv.data(), &["list"], "");
    assert!(list.contains("alice@example.test\tdisabled"), "{list}");
}

#[tokio::test]
async fn imported_hashes_of_each_scheme_log_in() {
    let (srv, _dir) = submission("").await;
    let bcrypt = bcrypt::hash("b-pass", 4).unwrap();
    let sha512 = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
    let users = [
        ("b@example.test", bcrypt.clone(), "b-pass"),
        ("d@example.test", format!("{{BLF-CRYPT}}{bcrypt}"), "b-pass"),
        ("s@example.test", sha512.to_string(), "Hello world!"),
        (
            "v@example.test",
            format!("{{SHA512-CRYPT}}{sha512}"),
            "Hello world!",
        ),
    ];
    for (user, hash, _) in &users {
        let (ok, out) = user_cli(&srv.data(), &["add", user, "--hash"], &format!("{hash}\n"));
        assert!(ok, "{out}");
    }
    // A plain-text "hash" is refused at import.
    let (ok, _) = user_cli(
        &srv.data(),
        &["add", "p@example.test", "--hash"],
        "{PLAIN}x\n",
    );
    assert!(!ok);
    for (user, _, password) in &users {
        send_as(&srv, user, password, user, "x@example.test")
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        let r = send_as(&srv, user, "wrong", user, "x@example.test").await;
        assert!(r.unwrap_err().contains("535"), "{user}");
    }
}

#[tokio::test]
async fn no_auth_before_tls() {
    let (srv, _dir) = submission("").await;
    let mut c = Client::greeted(srv.addr).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(!ehlo.text().contains("AUTH"), "{}", ehlo.text());
    // "\0alice@example.test\0s3cret"
    let r = c
        .cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzM2NyZXQ=")
        .await;
    assert_eq!(r.head(), "538 5.7.11");
}

#[tokio::test]
async fn failed_logins_are_limited_and_never_tell_who_exists() {
    let (srv, _dir) = submission("allow_plaintext = true\nmax_failures_per_client = 3\n").await;
    let (ok, _) = user_cli(&srv.data(), &["add", "alice@example.test"], "s3cret\n");
    assert!(ok);
    let mut c = Client::greeted(srv.addr).await;
    assert!(
        c.cmd("EHLO client.test")
            .await
            .text()
            .contains("AUTH PLAIN LOGIN")
    );
    // Wrong password for alice, then a user that does not exist: the same reply.
    let wrong = c
        .cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw==")
        .await;
    let nobody = c
        .cmd("AUTH PLAIN AG5vYm9keUBleGFtcGxlLnRlc3QAd3Jvbmc=")
        .await;
    assert_eq!(wrong.head(), "535 5.7.8");
    assert_eq!((wrong.head(), wrong.text()), (nobody.head(), nobody.text()));
    // LOGIN, wrong again: the third failure from this client.
    assert_eq!(c.cmd("AUTH LOGIN").await.head(), "334 VXNlcm5hbWU6");
    assert_eq!(
        c.cmd("YWxpY2VAZXhhbXBsZS50ZXN0").await.head(),
        "334 UGFzc3dvcmQ6"
    );
    assert_eq!(c.cmd("d3Jvbmc=").await.head(), "535 5.7.8");
    // Now even the right password is not checked.
    let r = c
        .cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzM2NyZXQ=")
        .await;
    assert_eq!(r.head(), "454 4.7.0");
}

/// One AUTH PLAIN from the loopback address `from`; the reply's head.
async fn login_from(addr: std::net::SocketAddr, from: [u8; 4], plain: &str) -> String {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind((std::net::Ipv4Addr::from(from), 0).into())
        .unwrap();
    let mut c = Client::from_stream(sock.connect(addr).await.unwrap());
    assert_eq!(c.reply().await.code, 220);
    c.cmd("EHLO client.test").await;
    c.cmd(&format!("AUTH PLAIN {plain}")).await.head()
}

#[tokio::test]
async fn wrong_passwords_from_one_address_do_not_lock_the_owner_out() {
    let (srv, _dir) = submission(
        "allow_plaintext = true\nmax_failures_per_client = 3\nmax_failures_per_account = 3\n",
    )
    .await;
    let (ok, _) = user_cli(&srv.data(), &["add", "alice@example.test"], "s3cret\n");
    assert!(ok);
    // "\0alice@example.test\0wrong", then "\0alice@example.test\0s3cret".
    let wrong = "AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw==";
    let right = "AGFsaWNlQGV4YW1wbGUudGVzdABzM2NyZXQ=";
    let mut heads = Vec::new();
    for _ in 0..5 {
        heads.push(login_from(srv.addr, [127, 0, 0, 2], wrong).await);
    }
    assert_eq!(
        heads,
        [
            "535 5.7.8",
            "535 5.7.8",
            "535 5.7.8",
            "454 4.7.0",
            "454 4.7.0"
        ],
        "the guessing address is stopped"
    );
    // The owner, from another address, logs in (after a short delay: the account has had
    // its failures).
    assert_eq!(
        login_from(srv.addr, [127, 0, 0, 3], right).await,
        "235 2.7.0"
    );
    // The guesser is still refused, even with the right password.
    assert_eq!(
        login_from(srv.addr, [127, 0, 0, 2], right).await,
        "454 4.7.0"
    );
}

#[tokio::test]
async fn open_relay_attempts_are_refused_on_every_listener_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = crate::tls::make_cert(dir.path(), "mx.example.test");
    let tls = format!(
        "[tls]\ncertificate = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let sink = crate::support::free_port();
    let configs = [
        // An MX: our domains only.
        "[smtp]\ndomains = [\"example.test\"]\n".to_string(),
        // A gateway relaying to a downstream.
        format!(
            "[smtp]\ndomains = [\"example.test\"]\n[delivery]\ntargets = [\"relay\"]\n\
             [relay]\nserver = \"127.0.0.1:{sink}\"\n"
        ),
        // Submission that lets logged-in users relay, plaintext AUTH allowed.
        "[smtp]\ndomains = [\"example.test\"]\n[auth]\nenabled = true\nallow_plaintext = true\nrelay = true\n"
            .to_string(),
        // The same over STARTTLS, AUTH required.
        format!(
            "[smtp]\ndomains = [\"example.test\"]\ntls = \"optional\"\n{tls}\
             [auth]\nenabled = true\nrequired = true\nrelay = true\n"
        ),
    ];
    for cfg in configs {
        let srv = TestServer::start(&cfg).await;
        let mut c = Client::greeted(srv.addr).await;
        c.cmd("EHLO spammer.test").await;
        let mail = c.cmd("MAIL FROM:<spam@spammer.test>").await;
        if mail.code == 250 {
            let r = c.cmd("RCPT TO:<victim@elsewhere.test>").await;
            assert_eq!(r.head(), "550 5.7.1", "{cfg}");
            let r = c.cmd("RCPT TO:<victim@[127.0.0.1]>").await;
            assert!(r.code >= 500, "{cfg}: {}", r.text());
        } else {
            assert_eq!(mail.head(), "530 5.7.0", "{cfg}");
        }
    }
}
