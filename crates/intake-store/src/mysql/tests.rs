//! MariaDB/MySQL for real: each test gets a fresh database on the server at
//! `INTAKE_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`), dropped afterwards.
//! The conformance suite, then what only this backend does (outages, poison batches,
//! concurrent starts, big messages, search limits).

pub(crate) use super::scratch::{ScratchDb, server_url};
use super::*;
use crate::Store;
use crate::conformance::{TestBackend, all, incoming, incoming_with};
use intake_core::{MailStore, RecipientTable};

async fn open_rw(db: &ScratchDb) -> MysqlBackend {
    MysqlBackend::open(MysqlConfig::new(&db.url), Mode::ReadWrite)
        .await
        .unwrap()
}

async fn make() -> TestBackend {
    let db = ScratchDb::new().await;
    let backend = open_rw(&db).await;
    TestBackend::new(backend).keeping(db)
}

mod conformance {
    crate::conformance_suite!(super::make);
}

fn layer(backend: MysqlBackend) -> Store {
    Store::new(Arc::new(backend))
}

async fn open_with(url: &str, connect_timeout: Duration) -> MysqlBackend {
    let mut cfg = MysqlConfig::new(url);
    cfg.connect_timeout = connect_timeout;
    MysqlBackend::open(cfg, Mode::ReadWrite).await.unwrap()
}

/// Kills every connection to the scratch database but `admin`'s own, as an operator (or a
/// failover) would. Returns how many.
async fn kill_connections(admin: &mut MySqlConnection, db: &str) -> usize {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT CAST(id AS SIGNED) FROM information_schema.processlist
         WHERE db = ? AND id <> CONNECTION_ID()",
    )
    .bind(db)
    .fetch_all(&mut *admin)
    .await
    .unwrap();
    for id in &ids {
        // The connection may be gone already.
        let _ = admin
            .execute(sqlx::AssertSqlSafe(format!("KILL {id}")))
            .await;
    }
    ids.len()
}

/// A call that must answer, one way or the other, well within this (a hang detector, not a
/// speed requirement).
const NO_HANG: Duration = Duration::from_secs(20);

async fn answers<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(NO_HANG, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {NO_HANG:?}"))
}

/// Connections killed from SQL between and during deliveries: every delivery answers
/// (success or `Unavailable`, never a hang), the store recovers without a restart, and
/// every acknowledged message is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_fail_deliveries_cleanly_and_the_store_recovers() {
    let db = ScratchDb::new().await;
    let store = Arc::new(layer(open_with(&db.url, Duration::from_secs(2)).await));
    let mut admin = db.admin().await;

    // Between deliveries: the writer's idle connection and the pool's are killed; the
    // next delivery and the next read reconnect by themselves.
    store
        .deliver(incoming(&["k@x.test"], "before"))
        .await
        .unwrap();
    assert!(store.list_all(all()).await.unwrap().total == 1);
    assert!(kill_connections(&mut admin, &db.name).await >= 1);
    store
        .deliver(incoming(&["k@x.test"], "after a kill"))
        .await
        .unwrap();
    assert_eq!(store.list_all(all()).await.unwrap().total, 2);

    // During deliveries: 8 senders while every connection is killed every 20 ms.
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut senders = Vec::new();
    for s in 0..8 {
        let (store, acked, failed, stop) =
            (store.clone(), acked.clone(), failed.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                let m = incoming(&["k@x.test"], &format!("s{s}-{n}"));
                let id = m.id;
                match answers("a delivery", store.deliver(m)).await {
                    Ok(()) => acked.lock().unwrap().push(id),
                    Err(StoreError::Unavailable(_)) => failed.lock().unwrap().push(id),
                    Err(e) => panic!("a delivery failed with {e:?}"),
                }
                n += 1;
            }
        }));
    }
    let mut killed = 0;
    for _ in 0..100 {
        killed += kill_connections(&mut admin, &db.name).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    for s in senders {
        s.await.unwrap();
    }
    assert!(killed > 0);

    // Back to normal without a restart.
    let mut ok = 0;
    for i in 0..20 {
        match answers(
            "a delivery",
            store.deliver(incoming(&["k@x.test"], &format!("calm{i}"))),
        )
        .await
        {
            Ok(()) => ok += 1,
            Err(e) => panic!("delivery {i} after the kills: {e}"),
        }
    }
    assert_eq!(ok, 20);
    let acked = acked.lock().unwrap().clone();
    let failed = failed.lock().unwrap().clone();
    for id in &acked {
        assert!(
            store.fetch(*id).await.unwrap().is_some(),
            "acknowledged message {id} is missing"
        );
    }
    // A 451 may have been answered for a batch whose COMMIT did reach the server (the
    // connection was killed before the answer came back): stored, and the sender will
    // retry (a duplicate, never a loss). Nothing else is stored.
    let everything = Page {
        offset: 0,
        limit: 1_000_000,
    };
    let stored = store.list_mailbox("k@x.test", everything).await.unwrap();
    let in_doubt = stored
        .messages
        .iter()
        .filter(|m| failed.contains(&m.id))
        .count();
    assert_eq!(
        stored.total as usize,
        2 + 20 + acked.len() + in_doubt,
        "only what was delivered, once"
    );
    eprintln!(
        "kills: {killed}; deliveries under the kills: {} acknowledged, {} answered unavailable \
         (of which {in_doubt} committed all the same)",
        acked.len(),
        failed.len()
    );
    store.close().await;
}

/// A delivery whose writer connection is killed mid-transaction (held on a table lock)
/// answers `Unavailable`, and the message is not stored; the next one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_killed_mid_transaction_is_not_acknowledged() {
    let db = ScratchDb::new().await;
    let store = Arc::new(layer(open_with(&db.url, Duration::from_secs(2)).await));
    store
        .deliver(incoming(&["a@x.test"], "warm up"))
        .await
        .unwrap();
    let mut locker = db.admin().await;
    let mut killer = db.admin().await;
    locker.execute("LOCK TABLES messages WRITE").await.unwrap();
    let m = incoming(&["a@x.test"], "killed");
    let id = m.id;
    let pending = tokio::spawn({
        let store = store.clone();
        async move { store.deliver(m).await }
    });
    // Wait until the writer is blocked on the lock, inside its transaction.
    let mut waiting = false;
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.processlist
             WHERE db = ? AND state LIKE '%metadata lock%'",
        )
        .bind(&db.name)
        .fetch_one(&mut killer)
        .await
        .unwrap();
        if n > 0 {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(waiting, "the writer never waited on the lock");
    let writer_ids: Vec<i64> = sqlx::query_scalar(
        "SELECT CAST(id AS SIGNED) FROM information_schema.processlist
         WHERE db = ? AND state LIKE '%metadata lock%'",
    )
    .bind(&db.name)
    .fetch_all(&mut killer)
    .await
    .unwrap();
    for w in writer_ids {
        killer
            .execute(sqlx::AssertSqlSafe(format!("KILL {w}")))
            .await
            .unwrap();
    }
    let r = answers("the killed delivery", pending).await.unwrap();
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    locker.execute("UNLOCK TABLES").await.unwrap();
    assert!(
        store.fetch(id).await.unwrap().is_none(),
        "not acknowledged, not stored"
    );
    store
        .deliver(incoming(&["a@x.test"], "next"))
        .await
        .unwrap();
    let subjects = crate::conformance::subjects(&store, Some("a@x.test")).await;
    assert_eq!(subjects, ["next", "warm up"]);
    store.close().await;
}

/// A TCP relay to the database server that can be taken down, or made to swallow
/// connections without answering: a network outage, with the real server behind it.
struct Relay {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(port: u16, forward: bool) -> Relay {
        let target = {
            let o: MySqlConnectOptions = server_url().parse().unwrap();
            format!("{}:{}", o.get_host(), o.get_port())
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            let mut swallowed = Vec::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !forward {
                    swallowed.push(inbound);
                    continue;
                }
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Relay { port, task }
    }

    /// Closes the listener and every relayed connection.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// `url` with this relay as its server.
    fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
        format!(
            "{scheme}://{}127.0.0.1:{}{tail}",
            user.unwrap_or_default(),
            self.port
        )
    }
}

/// The database unreachable (refused, then silent): calls fail with `Unavailable` within
/// the connect timeout; when it is back the store carries on by itself, with everything
/// it acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_calls_at_once_and_recovery_is_automatic() {
    let db = ScratchDb::new().await;
    let relay = Relay::start(0, true).await;
    let port = relay.port;
    let store = layer(open_with(&relay.url(&db.url), Duration::from_secs(2)).await);
    let mut acked = Vec::new();
    for i in 0..3 {
        let m = incoming(&["o@x.test"], &format!("up{i}"));
        acked.push(m.id);
        store.deliver(m).await.unwrap();
    }

    relay.stop().await; // refused
    for i in 0..3 {
        let r = answers(
            "a delivery",
            store.deliver(incoming(&["o@x.test"], &format!("down{i}"))),
        )
        .await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    }
    let r = answers("a listing", store.list_all(all())).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");

    let silent = Relay::start(port, false).await; // accepts, never answers
    tokio::time::sleep(writer::RECONNECT_BACKOFF).await;
    let r = answers(
        "a delivery",
        store.deliver(incoming(&["o@x.test"], "silent")),
    )
    .await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = answers("a listing", store.list_all(all())).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    silent.stop().await;

    let _back = Relay::start(port, true).await;
    let mut recovered = false;
    for i in 0..50 {
        let m = incoming(&["o@x.test"], &format!("back{i}"));
        let id = m.id;
        if answers("a delivery", store.deliver(m)).await.is_ok() {
            acked.push(id);
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the store did not recover");
    let l = store.list_mailbox("o@x.test", all()).await.unwrap();
    let mut listed: Vec<_> = l.messages.iter().map(|m| m.id).collect();
    listed.sort();
    acked.sort();
    assert_eq!(listed, acked, "exactly what was acknowledged");
    store.close().await;
}

/// One message the server refuses (here: an id already stored) fails alone; the others of
/// its batch are stored and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_fails_alone_in_its_batch() {
    let db = ScratchDb::new().await;
    let store = Arc::new(layer(open_rw(&db).await));
    let first = incoming(&["p@x.test"], "original");
    let dup_id = first.id;
    store.deliver(first).await.unwrap();
    // Hold the writer on a lock so that the next deliveries queue into one batch.
    let mut locker = db.admin().await;
    locker.execute("LOCK TABLES messages WRITE").await.unwrap();
    let blocker = tokio::spawn({
        let store = store.clone();
        async move { store.deliver(incoming(&["p@x.test"], "blocker")).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut pending = Vec::new();
    for i in 0..6 {
        let mut m = incoming(&["p@x.test"], &format!("good{i}"));
        if i == 3 {
            m.id = dup_id;
            m.meta.subject = Some("poison".into());
        }
        let store = store.clone();
        pending.push(tokio::spawn(async move { store.deliver(m).await }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    locker.execute("UNLOCK TABLES").await.unwrap();
    blocker.await.unwrap().unwrap();
    for (i, p) in pending.into_iter().enumerate() {
        let r = p.await.unwrap();
        if i == 3 {
            assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        } else {
            r.unwrap();
        }
    }
    let mut subjects = crate::conformance::subjects(&store, Some("p@x.test")).await;
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "blocker", "good0", "good1", "good2", "good4", "good5", "original"
        ]
    );
    store.close().await;
}

/// Several nodes starting at once on an empty database: one applies the schema, all open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_apply_the_schema_once() {
    let db = ScratchDb::new().await;
    let mut starts = Vec::new();
    for _ in 0..4 {
        let url = db.url.clone();
        starts.push(tokio::spawn(async move {
            MysqlBackend::open(MysqlConfig::new(url), Mode::ReadWrite).await
        }));
    }
    let mut stores = Vec::new();
    for s in starts {
        stores.push(layer(s.await.unwrap().unwrap()));
    }
    let mut admin = db.admin().await;
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    // Each migration once (0001 the schema, 0002 tags), not once per node.
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/mysql"))
        .unwrap()
        .count() as i64;
    assert_eq!(applied, files);
    // They share one alias secret (first writer wins) and one mailbox.
    let mut secrets = Vec::new();
    for s in &stores {
        secrets.push(s.alias_secret(None).await.unwrap());
    }
    assert!(secrets.windows(2).all(|w| w[0] == w[1]));
    stores[0]
        .deliver(incoming(&["n@x.test"], "from node 0"))
        .await
        .unwrap();
    assert_eq!(
        stores[3]
            .list_mailbox("n@x.test", all())
            .await
            .unwrap()
            .total,
        1
    );
    for s in stores {
        s.close().await;
    }
}

/// The CLI's handles: read-only needs the schema and writes nothing; admin creates it and
/// writes policy state, not mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_needs_the_schema_and_admin_takes_no_mail() {
    let db = ScratchDb::new().await;
    let e = MysqlBackend::open(MysqlConfig::new(&db.url), Mode::ReadOnly)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no Intake data in this database"), "{e}");
    let admin = layer(
        MysqlBackend::open(MysqlConfig::new(&db.url), Mode::Admin)
            .await
            .unwrap(),
    );
    assert!(admin.recipient_add("a@x.test").await.unwrap());
    assert!(matches!(
        admin.deliver(incoming(&["a@x.test"], "no")).await,
        Err(StoreError::Closed)
    ));
    let rw = layer(open_rw(&db).await);
    rw.deliver(incoming(&["a@x.test"], "yes")).await.unwrap();
    let ro = layer(
        MysqlBackend::open(MysqlConfig::new(&db.url), Mode::ReadOnly)
            .await
            .unwrap(),
    );
    assert_eq!(ro.list_mailbox("a@x.test", all()).await.unwrap().total, 1);
    assert_eq!(ro.recipient_list().await.unwrap(), ["a@x.test"]);
    assert!(ro.recipient_add("b@x.test").await.is_err());
    assert!(ro.deliver(incoming(&["a@x.test"], "no")).await.is_err());
    rw.close().await;

    // A database that does not exist is named in the error, with the hint to create it.
    let missing = format!("{}_missing", db.url);
    let e = MysqlBackend::open(MysqlConfig::new(&missing), Mode::ReadWrite)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("Unknown database"), "{e}");
}

/// A message bigger than the server's max_allowed_packet (16 MiB on a default MariaDB) is
/// stored in parts and comes back byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_bigger_than_max_allowed_packet_is_stored_in_parts() {
    let db = ScratchDb::new().await;
    let store = layer(open_rw(&db).await);
    let mut admin = db.admin().await;
    let packet: i64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    let body = line.repeat((packet as usize + (1 << 20)) / line.len());
    let m = incoming_with(&["big@x.test"], &format!("Subject: big\r\n\r\n{body}"));
    let (id, raw) = (m.id, m.raw.clone());
    assert!(raw.len() as i64 > packet);
    store.deliver(m).await.unwrap();
    let got = store.fetch(id).await.unwrap().unwrap();
    assert!(
        got.raw == raw,
        "the same bytes ({} vs {})",
        got.raw.len(),
        raw.len()
    );
    assert!(store.delete(id).await.unwrap());
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bodies")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(left, 0, "every part deleted");
    store.close().await;
}

/// What the full-text index cannot do alone still works: words shorter than
/// innodb_ft_min_token_size (through LIKE), words on the server's stopword list (our index
/// has none), accents folded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_short_words_stopwords_and_folds_accents() {
    let db = ScratchDb::new().await;
    let store = layer(open_rw(&db).await);
    store
        .deliver(incoming_with(
            &["s@x.test"],
            "Subject: Invoice 42\r\n\r\nWhat about the caf\u{e9} bill? It is due.\r\n",
        ))
        .await
        .unwrap();
    store
        .deliver(incoming(&["s@x.test"], "Other"))
        .await
        .unwrap();
    let find = |q: &'static str| crate::conformance::mail::search(&store, q);
    assert_eq!(find("42").await, ["Invoice 42"], "short: LIKE");
    assert_eq!(find("about").await, ["Invoice 42"], "a default stopword");
    assert_eq!(find("the bill").await, ["Invoice 42"]);
    assert_eq!(find("cafe").await, ["Invoice 42"], "accents folded");
    assert_eq!(find("\"cafe bill\"").await, ["Invoice 42"], "a phrase");
    assert_eq!(find("INVOICE").await, ["Invoice 42"], "case folded");
    assert!(find("bill nowhere").await.is_empty(), "AND");
    assert_eq!(
        find("\"+-<>()~\"").await.len(),
        2,
        "operators are no query: no words"
    );
    assert_eq!(find("***").await.len(), 2, "no words: everything");
    store.close().await;
}
