//! The CLI reads what the server wrote, through the same configuration.

use crate::support::{Process, cli, send_message, stderr_of_failure, store_message};

#[tokio::test]
async fn mailbox_list_and_message_show() {
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(dir.path(), &[]);
    let stored = store_message(
        p.addr,
        "sender@example.net",
        &["Reader@Example.test"],
        "Subject: cli check\r\nFrom: Sender <sender@example.net>\r\n\r\nhello from the cli test\r\n",
    )
    .await;
    let (ok, out, err) = cli(dir.path(), &["mailbox", "list", "reader@example.test"]);
    assert!(ok, "{err}");
    let fields: Vec<&str> = out.trim_end().split('\t').collect();
    assert_eq!(fields.len(), 5, "{out}");
    assert_eq!(fields[2], "sender@example.net");
    assert_eq!(fields[3], "cli check");
    assert!(fields[1].ends_with('Z'));
    let id = fields[0];
    assert_eq!(stored, id);

    let (ok, shown, _) = cli(dir.path(), &["message", "show", id]);
    assert!(ok);
    assert!(shown.contains("Subject:     cli check"), "{shown}");
    assert!(shown.contains("hello from the cli test"));
    assert!(shown.contains("Envelope:    from sender@example.net to Reader@Example.test"));
    let (ok, raw, _) = cli(dir.path(), &["message", "show", id, "--raw"]);
    assert!(ok);
    assert!(raw.starts_with("Received: from client.test"));
    assert!(raw.ends_with("hello from the cli test\r\n"));

    let (ok, _, err) = cli(dir.path(), &["message", "show", "not-an-id"]);
    assert!(!ok && err.contains("not a message id"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, err) = cli(empty.path(), &["mailbox", "list", "x@y"]);
    assert!(!ok && err.contains("no Intake data"), "{err}");
    p.terminate();
}

#[test]
fn check_config_reports_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(
        &f,
        "[smtp]\nlisten = \"nope\"\nmax_recipients = -1\nspelling_mistake = 1\n",
    )
    .unwrap();
    let err = stderr_of_failure(
        std::process::Command::new(env!("CARGO_BIN_EXE_intake"))
            .args(["--config", f.to_str().unwrap(), "check-config"])
            .env("INTAKE_SMTP__DATA_TIMEOUT", "whenever"),
    );
    for k in [
        "smtp.listen",
        "smtp.max_recipients",
        "smtp.spelling_mistake",
        "smtp.data_timeout (from INTAKE_SMTP__DATA_TIMEOUT)",
    ] {
        assert!(err.contains(k), "{k} not reported:\n{err}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("check-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

/// What `serve` would refuse, `check-config` refuses too, in words an operator reads: a
/// missing certificate, a key that is not PEM, a store path that cannot be made, a wrong
/// type, a list given as a string, a misspelt key.
#[test]
fn check_config_says_what_serve_would_refuse_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("newcomer.toml");
    let check = |config: String| -> String {
        std::fs::write(&f, config).unwrap();
        stderr_of_failure(
            std::process::Command::new(env!("CARGO_BIN_EXE_intake")).args([
                "--config",
                f.to_str().unwrap(),
                "check-config",
            ]),
        )
    };
    // A valid certificate and key, so that each case below has one problem of its kind.
    let ck = rcgen::generate_simple_self_signed(vec!["mx.example.test".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let tls = |cert: &std::path::Path, key: &std::path::Path| {
        format!("[tls]\ncertificate = {cert:?}\nkey = {key:?}\n")
    };

    // Values of the wrong type, a misspelt key and a missing certificate (the key is fine).
    let err = check(format!(
        "[smtp]\nmax_recipients = \"ten\"\ndomains = \"example.com\"\nmax_recipient = 5\n{}",
        tls(&dir.path().join("missing-cert.pem"), &key)
    ));
    for expected in [
        "smtp.max_recipients: expected a whole number of 0 or more, found string \"ten\"",
        "smtp.domains: expected a list such as [\"a\", \"b\"], found string \"example.com\"",
        "smtp.max_recipient: unknown setting; did you mean smtp.max_recipients?",
        "tls.certificate:",
        "missing-cert.pem",
    ] {
        assert!(err.contains(expected), "{expected:?} not said:\n{err}");
    }
    assert!(
        !err.contains("usize") && !err.contains("a sequence"),
        "{err}"
    );

    // A key that is not PEM, alone (the certificate is fine): refused, naming the key.
    let not_pem = dir.path().join("not-a-key.pem");
    std::fs::write(&not_pem, "this is not a key").unwrap();
    let err = check(tls(&cert, &not_pem));
    assert!(
        err.contains("tls.key: no private key in")
            && err.contains("not-a-key.pem (expected PEM")
            && err.contains("1 error(s)"),
        "{err}"
    );

    // With a valid file, the store path is checked too.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let err = check(format!("[store]\npath = {:?}\n", blocker.join("data")));
    assert!(
        err.contains("store.path") && err.contains("is not a directory"),
        "{err}"
    );
}

#[tokio::test]
async fn one_log_line_per_accepted_or_rejected_message() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("intake.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let p = crate::support::Process::start_logging(
        &dir.path().join("data"),
        &[
            ("INTAKE_LOG__LEVEL", "info"),
            ("INTAKE_SMTP__MAX_MESSAGE_SIZE", "100"),
        ],
        log.into(),
    );
    let id = store_message(
        p.addr,
        "good@example.net",
        &["a@q.test", "b@q.test"],
        "Subject: fits\r\n\r\n",
    )
    .await;
    let big = format!("Subject: too big\r\n\r\n{}\r\n", "z".repeat(200));
    let refused = send_message(p.addr, "big@example.net", &["a@q.test"], &big).await;
    assert_eq!(refused.code, 552);
    assert!(p.terminate().success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    let accepted: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("good@example.net"))
        .collect();
    assert_eq!(accepted.len(), 1, "{text}");
    for field in [
        format!("id={id}"),
        "client=127.0.0.1:".into(),
        "rcpts=2".into(),
        "size=".into(),
        "outcome=\"accepted\"".into(),
    ] {
        assert!(
            accepted[0].contains(&field),
            "{field} missing in {}",
            accepted[0]
        );
    }
    let rejected: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("big@example.net"))
        .collect();
    assert_eq!(rejected.len(), 1, "{text}");
    assert!(
        rejected[0].contains("552 5.3.4") && rejected[0].contains("rcpts=1"),
        "{}",
        rejected[0]
    );
}
