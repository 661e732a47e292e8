//! `store.type = "postgres"`: `intake serve` on a fresh PostgreSQL database (from
//! `INTAKE_TEST_POSTGRES_URL`, default the server on 127.0.0.1:5432): mail in over SMTP,
//! read back by the HTTP API and the CLI with the same settings, events between two nodes,
//! and every 250 present after kill -9 under 16 clients.

use std::time::Duration;

use intake_store::postgres::scratch::ScratchDatabase;

use crate::http::{Sse, get};
use crate::support::{Process, assert_none_lost, free_port, kill9_under_load, store_message};

/// The environment of a node (and of the CLI) on `db`.
fn env(db: &ScratchDatabase) -> Vec<(&'static str, String)> {
    vec![
        ("INTAKE_STORE__TYPE", "postgres".to_string()),
        ("INTAKE_STORE__URL", db.url.clone()),
    ]
}

fn start(data: &std::path::Path, db: &ScratchDatabase, http: u16) -> Process {
    let http = format!("127.0.0.1:{http}");
    let mut vars = env(db);
    vars.push(("INTAKE_HTTP__LISTEN", http));
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Process::start(data, &refs)
}

/// `intake <args>` with the store settings of `db`: (success, stdout, stderr).
fn cli(data: &std::path::Path, db: &ScratchDatabase, args: &[&str]) -> (bool, String, String) {
    crate::support::cli_with(Some(data), &env(db), args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_in_read_back_by_the_api_and_the_cli() {
    let db = ScratchDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    // Before any server ran there is no schema: the CLI says so.
    let (ok, _, err) = cli(dir.path(), &db, &["mailbox", "list", "x@y"]);
    assert!(
        !ok && err.contains("no Intake data in postgres at"),
        "{err}"
    );
    let http_port = free_port();
    let p = start(dir.path(), &db, http_port);
    let http = format!("127.0.0.1:{http_port}").parse().unwrap();
    let id = store_message(
        p.addr,
        "sender@example.net",
        &["Reader@Example.test"],
        "Subject: pg check\r\nFrom: Sender <sender@example.net>\r\n\r\nhello from postgres\r\n",
    )
    .await;

    let v = get(http, "/api/v1/mailboxes/reader@example.test/messages")
        .await
        .json();
    assert_eq!(v["total"], 1);
    assert_eq!(v["messages"][0]["id"], id.as_str());
    assert_eq!(v["messages"][0]["subject"], "pg check");
    let raw = get(http, &format!("/api/v1/messages/{id}/raw")).await;
    assert_eq!(raw.status, 200);
    assert!(raw.text().ends_with("hello from postgres\r\n"));
    let found = get(http, "/api/v1/search?query=hello").await.json();
    assert_eq!(found["total"], 1, "{found}");

    let (ok, out, err) = cli(dir.path(), &db, &["mailbox", "list", "reader@example.test"]);
    assert!(ok, "{err}");
    let fields: Vec<&str> = out.trim_end().split('\t').collect();
    assert_eq!(fields.len(), 5, "{out}");
    assert_eq!(fields[0], id);
    assert_eq!(fields[3], "pg check");
    let (ok, shown, err) = cli(dir.path(), &db, &["message", "show", &id]);
    assert!(ok, "{err}");
    assert!(shown.contains("Subject:     pg check"), "{shown}");
    assert!(shown.contains("hello from postgres"));
    // The CLI's admin commands write the same database the server reads.
    let (ok, _, err) = cli(dir.path(), &db, &["recipient", "add", "@example.test"]);
    assert!(ok, "{err}");
    let (ok, listed, _) = cli(dir.path(), &db, &["recipient", "list"]);
    assert!(ok && listed.contains("@example.test"), "{listed}");
    p.terminate();
}

/// Two nodes on one database: mail sent to A shows on B's event stream and in its API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_mail_and_events() {
    let db = ScratchDatabase::create().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(dir_a.path(), &db, free_port());
    let http_b_port = free_port();
    let _b = start(dir_b.path(), &db, http_b_port);
    let http_b = format!("127.0.0.1:{http_b_port}").parse().unwrap();
    let mut on_b = Sse::open(http_b, "/api/v1/events?mailbox=both@example.test").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    store_message(
        a.addr,
        "s@example.net",
        &["both@example.test"],
        "Subject: via A\r\n\r\nx\r\n",
    )
    .await;
    let (name, data) = tokio::time::timeout(Duration::from_secs(15), on_b.next())
        .await
        .expect("B announces mail delivered through A");
    assert_eq!(name, "new");
    let v: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(v["message"]["subject"], "via A");
    let listed = get(http_b, "/api/v1/mailboxes/both@example.test/messages")
        .await
        .json();
    assert_eq!(listed["total"], 1);
}

/// kill -9 while 16 clients send: every message that got a 250 is in the database, read by
/// the CLI and by the restarted server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_250_survives_sigkill_under_16_clients() {
    let db = ScratchDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), &db, free_port());
    let acked = kill9_under_load(p, 16).await;
    let (ok, out, err) = cli(dir.path(), &db, &["mailbox", "list", "crash@q.test"]);
    assert!(ok, "{err}");
    assert_none_lost(&acked, &out);
    // The restarted server finds them all too, and takes mail again.
    let http_port = free_port();
    let p = start(dir.path(), &db, http_port);
    let http = format!("127.0.0.1:{http_port}").parse().unwrap();
    let v = get(http, "/api/v1/mailboxes/crash@q.test/messages?per_page=1")
        .await
        .json();
    assert!(v["total"].as_u64().unwrap() >= acked.len() as u64, "{v}");
    store_message(
        p.addr,
        "s@x.test",
        &["crash@q.test"],
        "Subject: after\r\n\r\n",
    )
    .await;
    p.terminate();
}
