//! `intake serve` on MariaDB/MySQL (`INTAKE_TEST_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`; each test on a fresh database, dropped afterwards):
//! mail in, read back through the HTTP API and the CLI, and kill -9 under 16 concurrent
//! clients with every acknowledged message there after the restart.

use intake_store::mysql::scratch::ScratchDb;

use crate::http::get;
use crate::support::{Process, assert_none_lost, free_port, kill9_under_load, store_message};

/// The environment that points `intake` at `db`.
fn store_env(db: &ScratchDb) -> Vec<(&'static str, String)> {
    vec![
        ("INTAKE_STORE__TYPE", "mysql".to_string()),
        ("INTAKE_STORE__URL", db.url.clone()),
    ]
}

fn with<'a>(
    env: &'a [(&'static str, String)],
    more: &[(&'static str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    env.iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(more.iter().copied())
        .collect()
}

/// The CLI with the server's store settings.
fn cli(
    data: &std::path::Path,
    env: &[(&'static str, String)],
    args: &[&str],
) -> (bool, String, String) {
    crate::support::cli_with(Some(data), env, args)
}

#[tokio::test]
async fn mail_in_read_back_through_the_api_and_the_cli() {
    let db = ScratchDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let env = store_env(&db);
    // Before the server ever ran: no schema, and the CLI says so.
    let (ok, _, err) = cli(dir.path(), &env, &["mailbox", "list", "x@y"]);
    assert!(!ok && err.contains("no Intake data"), "{err}");

    let http_port = free_port().to_string();
    let http_listen = format!("127.0.0.1:{http_port}");
    let p = Process::start(
        dir.path(),
        &with(&env, &[("INTAKE_HTTP__LISTEN", http_listen.as_str())]),
    );
    let id = store_message(
        p.addr,
        "sender@example.net",
        &["Reader@Example.test", "other@example.test"],
        "Subject: maria check\r\nFrom: Sender <sender@example.net>\r\n\r\nhello from MariaDB\r\n",
    )
    .await;

    let http = http_listen.parse().unwrap();
    let v = get(http, "/api/v1/mailboxes/reader@example.test/messages").await;
    assert_eq!(v.status, 200);
    let v = v.json();
    assert_eq!(
        (v["total"].as_u64(), v["unread"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(v["messages"][0]["subject"], "maria check");
    assert_eq!(v["messages"][0]["id"], id.as_str());
    let m = get(http, &format!("/api/v1/messages/{id}")).await.json();
    assert_eq!(m["from"], "Sender <sender@example.net>");
    assert_eq!(
        m["mailboxes"],
        serde_json::json!(["other@example.test", "reader@example.test"])
    );
    assert!(m["text"].as_str().unwrap().contains("hello from MariaDB"));
    let found = get(http, "/api/v1/search?query=hello%20maria").await;
    assert_eq!(found.status, 200, "{}", found.text());
    assert_eq!(found.json()["total"], 1);

    let (ok, out, err) = cli(
        dir.path(),
        &env,
        &["mailbox", "list", "reader@example.test"],
    );
    assert!(ok, "{err}");
    let fields: Vec<&str> = out.trim_end().split('\t').collect();
    assert_eq!(fields[0], id);
    assert_eq!(fields[3], "maria check");
    let (ok, shown, err) = cli(dir.path(), &env, &["message", "show", &id]);
    assert!(ok, "{err}");
    assert!(shown.contains("Subject:     maria check"), "{shown}");
    assert!(shown.contains("hello from MariaDB"));
    p.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_250_survives_sigkill_under_16_clients() {
    let db = ScratchDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let env = store_env(&db);
    let p = Process::start(dir.path(), &with(&env, &[]));
    let acked = kill9_under_load(p, 16).await;
    // Restarted on the same database, the server serves what the dead one acknowledged.
    let again = Process::start(dir.path(), &with(&env, &[]));
    let (ok, out, err) = cli(dir.path(), &env, &["mailbox", "list", "crash@q.test"]);
    assert!(ok, "{err}");
    assert_none_lost(&acked, &out);
    store_message(
        again.addr,
        "s@x.test",
        &["crash@q.test"],
        "Subject: after\r\n\r\nx\r\n",
    )
    .await;
    again.terminate();
}
