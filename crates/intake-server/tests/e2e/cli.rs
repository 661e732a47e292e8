//! The CLI reads what the server wrote, through the same configuration.

use crate::support::{Process, cli, send_message};

#[tokio::test]
async fn mailbox_list_and_message_show() {
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(dir.path(), &[]);
    let r = send_message(
        p.addr,
        "sender@example.net",
        &["Reader@Example.test"],
        "Subject: cli check\r\nFrom: Sender <sender@example.net>\r\n\r\nhello from the cli test\r\n",
    )
    .await;
    assert_eq!(r.code, 250);
    let (ok, out, err) = cli(dir.path(), &["mailbox", "list", "reader@example.test"]);
    assert!(ok, "{err}");
    let fields: Vec<&str> = out.trim_end().split('\t').collect();
    assert_eq!(fields.len(), 5, "{out}");
    assert_eq!(fields[2], "sender@example.net");
    assert_eq!(fields[3], "cli check");
    assert!(fields[1].ends_with('Z'));
    let id = fields[0];
    assert!(r.text().contains(id));

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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_intake"))
        .args(["--config", f.to_str().unwrap(), "check-config"])
        .env("INTAKE_SMTP__DATA_TIMEOUT", "whenever")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
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
