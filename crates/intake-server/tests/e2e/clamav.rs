//! ClamAV over real sockets: the `intake` binary configured by its environment
//! (`INTAKE_CLAMAV__*`) against a real clamd of the test's own (`intake_policy::testclamd`,
//! with a signature the test writes). The exact replies a sending server sees, and what is
//! stored.

use intake_policy::testclamd::{Clamd, PATTERN, SIGNATURE};

use crate::support::{Process, cli, send_message, store_message};

fn infected(subject: &str) -> String {
    format!("From: a@sender.test\r\nSubject: {subject}\r\n\r\nhere it is: {PATTERN}\r\n")
}

fn clean(subject: &str) -> String {
    format!("From: a@sender.test\r\nSubject: {subject}\r\n\r\nnothing here\r\n")
}

/// `intake` with clamav on against `clamd`, and `env` besides.
fn intake(dir: &std::path::Path, clamd: &Clamd, env: &[(&str, &str)]) -> Process {
    let address = format!("127.0.0.1:{}", clamd.port);
    let mut all = vec![
        ("INTAKE_CLAMAV__ENABLED", "true"),
        ("INTAKE_CLAMAV__ADDRESS", address.as_str()),
    ];
    all.extend_from_slice(env);
    Process::start(&dir.join("data"), &all)
}

/// The stored message `id` as `intake message show --raw` prints it.
fn raw(p: &Process, id: &str) -> String {
    let (ok, out, err) = cli(&p.data, &["message", "show", "--raw", id]);
    assert!(ok, "{err}");
    out
}

#[tokio::test]
async fn a_virus_is_refused_clean_mail_stored_and_clamd_away_deferred() {
    let clamd = Clamd::start();
    let dir = tempfile::tempdir().unwrap();
    let p = intake(dir.path(), &clamd, &[]);
    let to = ["bob@example.test"];

    let r = send_message(p.addr, "a@sender.test", &to, &infected("virus")).await;
    let text = r.text();
    assert!(
        text.starts_with(&format!(
            "554 5.7.1 Message refused: virus found ({SIGNATURE}"
        )) && text.ends_with(')'),
        "{text}"
    );
    let id = store_message(p.addr, "a@sender.test", &to, &clean("clean")).await;
    let stored = raw(&p, &id);
    assert!(stored.contains("Subject: clean"), "{stored}");
    assert!(!stored.contains("X-Virus-Found"), "{stored}");
    assert!(!stored.contains("X-Intake-Unchecked"), "{stored}");

    // clamd stops: every message, clean or not, is deferred (on_error = "defer" by
    // default), never refused and never let through unscanned.
    clamd.stop();
    for content in [clean("while away"), infected("while away")] {
        let r = send_message(p.addr, "a@sender.test", &to, &content).await;
        assert_eq!(r.head(), "451 4.4.3", "{}", r.text());
    }
}

#[tokio::test]
async fn with_action_tag_the_virus_is_stored_with_x_virus_found() {
    let clamd = Clamd::start();
    let dir = tempfile::tempdir().unwrap();
    let p = intake(dir.path(), &clamd, &[("INTAKE_CLAMAV__ACTION", "tag")]);
    let id = store_message(
        p.addr,
        "a@sender.test",
        &["bob@example.test"],
        &infected("tagged"),
    )
    .await;
    let stored = raw(&p, &id);
    let header = stored
        .lines()
        .find(|l| l.starts_with("X-Virus-Found: "))
        .unwrap_or_else(|| panic!("no X-Virus-Found in {stored}"));
    assert!(
        header.starts_with(&format!("X-Virus-Found: {SIGNATURE}")),
        "{header}"
    );
    let m = crate::http::get(p.http, &format!("/api/v1/messages/{id}"))
        .await
        .json();
    let symbol = m["checks"]["symbols"][0].as_str().unwrap_or_default();
    assert!(symbol.starts_with(&format!("CLAMAV:{SIGNATURE}")), "{m}");
}

#[tokio::test]
async fn a_message_over_max_size_is_stored_marked_unscanned() {
    let clamd = Clamd::start();
    let dir = tempfile::tempdir().unwrap();
    let p = intake(dir.path(), &clamd, &[("INTAKE_CLAMAV__MAX_SIZE", "2KiB")]);
    let to = ["bob@example.test"];
    // Under the limit: scanned.
    let r = send_message(p.addr, "a@sender.test", &to, &infected("small")).await;
    assert_eq!(r.head(), "554 5.7.1", "{}", r.text());
    // Over it: not scanned, which the stored message says.
    let padding = "padding padding padding padding padding padding\r\n".repeat(60);
    let big = format!("Subject: big\r\n\r\n{padding}here it is: {PATTERN}\r\n");
    let id = store_message(p.addr, "a@sender.test", &to, &big).await;
    let stored = raw(&p, &id);
    assert!(
        stored.contains("X-Intake-Unchecked: clamav; larger than clamav.max_size (2048 octets)"),
        "{stored}"
    );
    let m = crate::http::get(p.http, &format!("/api/v1/messages/{id}"))
        .await
        .json();
    assert_eq!(m["checks"]["undecided"][0]["check"], "clamav", "{m}");
}
