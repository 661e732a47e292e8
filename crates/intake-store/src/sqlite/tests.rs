//! SQLite on a real file in a temporary directory: the conformance suite, then what only
//! this backend does (restarts, locks, poison batches, schema upgrades, other handles).

use super::*;
use crate::Store;
use crate::conformance::{TestBackend, all, incoming, incoming_with};
use intake_core::{GreyRecord, MailStore, PolicyState, RecipientTable, UserDirectory};

async fn make() -> TestBackend {
    let dir = tempfile::tempdir().unwrap();
    let backend = SqliteBackend::open(SqliteConfig::new(dir.path())).unwrap();
    TestBackend::new(backend).keeping(dir)
}

mod conformance {
    crate::conformance_suite!(super::make);
}

fn layer(backend: SqliteBackend) -> Store {
    Store::new(Arc::new(backend))
}

fn open_in(dir: &Path) -> Store {
    layer(SqliteBackend::open(SqliteConfig::new(dir)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path());
    let alias = intake_core::alias::derive(b"k", "bob@x.test");
    store.register_alias(&alias, "bob@x.test").await.unwrap();
    for i in 0..3 {
        store
            .deliver(incoming(&["a@example.com"], &format!("n{i}")))
            .await
            .unwrap();
    }
    store.close().await;
    drop(store);
    let store = open_in(dir.path());
    let l = store.list_mailbox("a@example.com", all()).await.unwrap();
    assert_eq!((l.total, l.messages[0].subject.as_deref()), (3, Some("n2")));
    store.deliver(incoming(&[&alias], "x")).await.unwrap();
    assert_eq!(
        store.list_mailbox("bob@x.test", all()).await.unwrap().total,
        1,
        "aliases too"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_fails_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SqliteConfig::new(dir.path());
    cfg.busy_timeout = Duration::from_millis(50);
    let store = layer(SqliteBackend::open(cfg.clone()).unwrap());
    let other = Connection::open(cfg.db_file()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let r = store.deliver(incoming(&["a@b"], "x")).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    other.execute_batch("ROLLBACK").unwrap();
    store.deliver(incoming(&["a@b"], "y")).await.unwrap();
    assert_eq!(
        store
            .list_mailbox("a@b", Page::default())
            .await
            .unwrap()
            .total,
        1
    );
}

/// FTS5 folds diacritics: `cafe` finds `café`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_folds_diacritics() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path());
    store
        .deliver(incoming_with(
            &["ann@x.test"],
            "Subject: Invoice\r\n\r\nPlease pay the caf\u{e9} bill.\r\n",
        ))
        .await
        .unwrap();
    let q = Query::parse("cafe").unwrap();
    for _ in 0..500 {
        if store.search(&q, all()).await.unwrap().total == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("cafe did not find café");
}

/// Mail that arrives after every message was deleted is still indexed for search (SQLite
/// would reuse the deleted rows' numbers, which the index had already passed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_after_deleting_everything_is_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path());
    let found = async |word: &str| {
        let q = Query::parse(word).unwrap();
        for _ in 0..500 {
            if store.search(&q, all()).await.unwrap().total == 1 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    };
    for word in ["first", "second"] {
        let m = incoming_with(&["ann@x.test"], &format!("Subject: {word}\r\n\r\nbody\r\n"));
        let id = m.id;
        store.deliver(m).await.unwrap();
        assert!(found(word).await, "{word} never found");
        assert!(store.delete(id).await.unwrap());
    }
}

#[tokio::test]
async fn policy_tables_are_shared_with_admin_and_read_only_handles() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path());
    assert!(store.recipient_add("@catch.test").await.unwrap());
    let rec = GreyRecord {
        first_seen: 1_000,
        last_seen: 2_000,
        passes: 1,
    };
    store.greylist_put("t a b c", rec).await.unwrap();
    store.close().await;
    drop(store);
    // Another process (the CLI) sees and changes the same tables.
    let admin = layer(SqliteBackend::open_admin(SqliteConfig::new(dir.path())).unwrap());
    assert_eq!(admin.recipient_list().await.unwrap(), ["@catch.test"]);
    assert!(admin.recipient_add("carol@example.test").await.unwrap());
    assert!(admin.deliver(incoming(&["x@y"], "no")).await.is_err());
    let ro = layer(SqliteBackend::open_read_only(SqliteConfig::new(dir.path())).unwrap());
    assert_eq!(
        ro.recipient_lookup("carol@example.test").await.unwrap(),
        Some(true)
    );
    assert!(ro.recipient_add("dave@example.test").await.is_err());
    assert!(ro.deliver(incoming(&["x@y"], "no")).await.is_err());
    // Greylist records survive the restart.
    let store = open_in(dir.path());
    assert_eq!(store.greylist_get("t a b c").await.unwrap(), Some(rec));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_survive_a_restart_and_go_with_their_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path());
    let mut m = incoming(&["a@example.com"], "checked");
    m.findings.spf = Some("pass".into());
    let checked = m.id;
    store.deliver(m).await.unwrap();
    store.close().await;
    drop(store);
    let store = open_in(dir.path());
    let got = store.fetch(checked).await.unwrap().unwrap().findings;
    assert_eq!(got.unwrap().spf.as_deref(), Some("pass"));
    assert!(store.delete(checked).await.unwrap());
    let conn = rusqlite::Connection::open(dir.path().join("intake.db")).unwrap();
    let left: i64 = conn
        .query_row("SELECT count(*) FROM message_checks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_database_is_upgraded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path());
    let old = incoming(&["a@example.com"], "old");
    let old_id = old.id;
    store.deliver(old).await.unwrap();
    assert!(store.set_seen(old_id, true).await.unwrap());
    store.close().await;
    drop(store);
    // As an earlier release left it: no message_checks nor meta table, no index of read
    // messages, the search index's default merges, schema version 3.
    let conn = rusqlite::Connection::open(dir.path().join("intake.db")).unwrap();
    conn.execute_batch(
        "DROP TABLE message_checks; DROP TABLE meta; DROP INDEX messages_read;
         DELETE FROM search_index_config WHERE k = 'automerge';
         PRAGMA user_version = 3;",
    )
    .unwrap();
    drop(conn);
    let store = open_in(dir.path());
    assert_eq!(store.fetch(old_id).await.unwrap().unwrap().findings, None);
    let mut m = incoming(&["a@example.com"], "new");
    m.findings.spf = Some("pass".into());
    let id = m.id;
    store.deliver(m).await.unwrap();
    let got = store.fetch(id).await.unwrap().unwrap().findings.unwrap();
    assert_eq!(got.spf.as_deref(), Some("pass"));
    // Version 7: tags.
    use intake_core::MailTags;
    assert!(store.set_tags(id, &["upgraded".into()]).await.unwrap());
    assert_eq!(store.all_tags().await.unwrap(), vec!["upgraded"]);
    assert!(store.alias_secret(None).await.unwrap().len() >= 32);
    let conn = rusqlite::Connection::open(dir.path().join("intake.db")).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 10);
    // Version 10: the search index merges eight segments of a size, not FTS5's four.
    let automerge: i64 = conn
        .query_row(
            "SELECT v FROM search_index_config WHERE k = 'automerge'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(automerge, 8);
    // Version 8: the read messages' index, built over the old rows: the counts use it.
    let read: i64 = conn
        .query_row(
            "SELECT count(*) FROM messages INDEXED BY messages_read WHERE seen != 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(read, 1, "the old message, read before the upgrade");
    let all = store.list_all(all()).await.unwrap();
    assert_eq!((all.total, all.unread), (2, 1));
}

/// One poison message in a batch fails alone (the case is shared with PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_fails_alone_and_its_batch_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SqliteConfig::new(dir.path());
    cfg.commit_delay = Duration::from_millis(500);
    let engine = Arc::new(SqliteBackend::open(cfg).unwrap());
    let opened = crate::Opened {
        arrivals: engine.arrivals(),
        store: Arc::new(Store::new(engine)),
    };
    crate::conformance::a_poison_message_fails_alone(opened).await;
}

/// The linger adapts to what is on its way: a message with no other session receiving
/// content is committed at once, and a linger ends when the last session receiving content
/// is done, long before `commit_delay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_linger_ends_when_no_session_is_receiving() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SqliteConfig::new(dir.path());
    cfg.commit_delay = Duration::from_secs(30);
    let engine = Arc::new(SqliteBackend::open(cfg).unwrap());
    let arrivals = engine.arrivals().unwrap();
    let store = Arc::new(Store::new(engine));
    let started = std::time::Instant::now();
    store
        .deliver(incoming(&["linger@example.com"], "alone"))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a lone message waited"
    );

    let arriving = arrivals.start();
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .deliver(incoming(&["linger@example.com"], "lingered"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "committed while a session was receiving"
    );
    let released = std::time::Instant::now();
    drop(arriving);
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the commit follows the last arrival, not the 30 s commit_delay")
        .unwrap()
        .unwrap();
    assert!(released.elapsed() < Duration::from_secs(10));
    let list = store
        .list_mailbox("linger@example.com", all())
        .await
        .unwrap();
    assert_eq!(list.total, 2);
    store.close().await;
}

#[tokio::test]
async fn users_table_changes_are_seen_at_once_by_another_handle() {
    let dir = tempfile::tempdir().unwrap();
    let server = open_in(dir.path());
    assert_eq!(server.user_get("a@example.test").await.unwrap(), None);
    // The CLI is another process with its own handle on the same database.
    let admin = layer(SqliteBackend::open_admin(SqliteConfig::new(dir.path())).unwrap());
    let user = intake_core::User {
        address: "Alice@Example.test".into(),
        password_hash: "$argon2id$x".into(),
        enabled: true,
        senders: vec!["@Example.test".into()],
    };
    assert!(admin.user_add(user).await.unwrap());
    assert!(
        admin
            .user_set_enabled("alice@example.test", false)
            .await
            .unwrap()
    );
    let got = server
        .user_get("alice@EXAMPLE.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.address.as_str(), got.enabled),
        ("alice@example.test", false)
    );
}

/// Searches `q` until it finds `want` messages (the index is filled after the commit).
async fn search_until(store: &Store, q: &str, want: u64) -> u64 {
    let q = Query::parse(q).unwrap();
    let mut found = 0;
    for _ in 0..500 {
        found = store.search(&q, all()).await.unwrap().total;
        if found == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    found
}

/// Index commits are not fsync'd: a crash may lose the last of them (with the
/// `indexed_upto` written in the same transactions), never a message. Here the state after
/// such a crash is made by hand; on the next start the writer indexes those messages again
/// by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_catches_up_after_losing_index_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path());
    for i in 0..5 {
        store
            .deliver(incoming_with(
                &["a@x.test"],
                &format!("Subject: n{i}\r\n\r\nzebra number {i}\r\n"),
            ))
            .await
            .unwrap();
    }
    assert_eq!(search_until(&store, "zebra", 5).await, 5);
    store.close().await;
    drop(store);
    {
        // What a crash after the first two index commits leaves: the messages (fsync'd),
        // the index and its mark for the first two only.
        let c = Connection::open(SqliteConfig::new(dir.path()).db_file()).unwrap();
        c.execute_batch(
            "DELETE FROM search_index WHERE rowid > 2;
             UPDATE state SET value = 2 WHERE key = 'indexed_upto';",
        )
        .unwrap();
    }
    let store = open_in(dir.path());
    assert_eq!(
        store.list_mailbox("a@x.test", all()).await.unwrap().total,
        5
    );
    assert_eq!(
        search_until(&store, "zebra", 5).await,
        5,
        "the writer re-indexes what the lost commits held"
    );
    store.close().await;
}

fn open_searching(dir: &Path, search: SearchMode) -> Store {
    let mut cfg = SqliteConfig::new(dir);
    cfg.search = search;
    layer(SqliteBackend::open(cfg).unwrap()).with_search(search)
}

const TICKET: &str = "Subject: weekly report\r\nX-Ticket: walrus\r\n\r\nthe body says giraffe\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_headers_indexes_no_body() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_searching(dir.path(), SearchMode::Headers);
    store
        .deliver(incoming_with(&["a@x.test"], TICKET))
        .await
        .unwrap();
    assert_eq!(search_until(&store, "walrus", 1).await, 1, "a header value");
    assert_eq!(search_until(&store, "weekly", 1).await, 1, "the subject");
    assert_eq!(search_until(&store, "giraffe", 0).await, 0, "not the body");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_off_refuses_words_and_keeps_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_searching(dir.path(), SearchMode::Off);
    store
        .deliver(incoming_with(&["a@x.test"], TICKET))
        .await
        .unwrap();
    let e = store
        .search(&Query::parse("walrus").unwrap(), all())
        .await
        .unwrap_err();
    match e {
        StoreError::BadQuery(why) => assert!(why.contains("store.search = \"off\""), "{why}"),
        other => panic!("{other:?}"),
    }
    let q = Query::parse("subject:weekly to:a@x.test").unwrap();
    assert_eq!(store.search(&q, all()).await.unwrap().total, 1);
    store.close().await;
    let c = Connection::open(SqliteConfig::new(dir.path()).db_file()).unwrap();
    let indexed: i64 = c
        .query_row("SELECT count(*) FROM search_index_docsize", [], |r| {
            r.get(0)
        })
        .unwrap_or(0);
    use rusqlite::OptionalExtension;
    let upto: Option<i64> = c
        .query_row(
            "SELECT value FROM state WHERE key = 'indexed_upto'",
            [],
            |r| r.get(0),
        )
        .optional()
        .unwrap();
    assert_eq!((indexed, upto), (0, None), "nothing was indexed");
}

async fn total(store: &Store) -> u64 {
    store.list_all(all()).await.unwrap().total
}

/// The all-mail total is the count the writer keeps (schema version 9), not a count of
/// the table: it follows deliveries (a poison message in a batch not counted), deletions
/// by id and by mailbox, a message leaving one of its mailboxes, eviction; a database
/// without the count is counted once when opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_count_of_messages_follows_every_write() {
    use intake_core::Retention;
    let dir = tempfile::tempdir().unwrap();
    let rows = || -> u64 {
        let conn = rusqlite::Connection::open(dir.path().join("intake.db")).unwrap();
        conn.query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0))
            .unwrap() as u64
    };
    let store = open_in(dir.path());
    let mut ids = Vec::new();
    for i in 0..6 {
        let m = incoming(&["a@x.test", "b@x.test"], &format!("n{i}"));
        ids.push(m.id);
        store.deliver(m).await.unwrap();
    }
    for i in 0..3 {
        store
            .deliver(incoming(&["c@x.test"], &format!("c{i}")))
            .await
            .unwrap();
    }
    assert_eq!((total(&store).await, rows()), (9, 9));
    assert!(store.delete(ids[0]).await.unwrap());
    assert!(!store.delete(ids[0]).await.unwrap(), "deleted once");
    assert_eq!((total(&store).await, rows()), (8, 8));
    // Leaving one of its two mailboxes deletes no message; leaving the last one does.
    store.delete_mailbox("a@x.test").await.unwrap();
    assert_eq!((total(&store).await, rows()), (8, 8));
    store.delete_mailbox("b@x.test").await.unwrap();
    assert_eq!((total(&store).await, rows()), (3, 3));
    let policy = Retention {
        per_mailbox: Some(1),
        ..Retention::default()
    };
    store.evict(&policy).await.unwrap();
    assert_eq!((total(&store).await, rows()), (1, 1));
    // A filtered listing still counts its rows.
    let q = Query::parse("from:nobody").unwrap();
    assert_eq!(store.search(&q, all()).await.unwrap().total, 0);
    store.close().await;
    drop(store);
    // As a release before version 9 left it: no count. Opening counts the rows once.
    let conn = rusqlite::Connection::open(dir.path().join("intake.db")).unwrap();
    conn.execute_batch("DELETE FROM state WHERE key = 'messages'; PRAGMA user_version = 8;")
        .unwrap();
    drop(conn);
    let store = open_in(dir.path());
    store.deliver(incoming(&["d@x.test"], "d")).await.unwrap();
    assert_eq!((total(&store).await, rows()), (2, 2));
    store.close().await;
    drop(store);
    // An older release opened it again (it sets version 8) and stored mail without
    // counting it: the count is stale until this release opens it and counts again.
    let conn = rusqlite::Connection::open(dir.path().join("intake.db")).unwrap();
    conn.execute_batch(
        "UPDATE state SET value = 40 WHERE key = 'messages'; PRAGMA user_version = 8;",
    )
    .unwrap();
    drop(conn);
    let store = open_in(dir.path());
    assert_eq!((total(&store).await, rows()), (2, 2));
    store.close().await;
}
