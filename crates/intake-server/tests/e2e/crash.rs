//! Kill -9 while clients are sending: every message that got a 250 is in the store.

use crate::support::{Process, assert_none_lost, cli, kill9_under_load};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_250_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(dir.path(), &[]);
    let acked = kill9_under_load(p, 12).await;
    let (ok, out, err) = cli(dir.path(), &["mailbox", "list", "crash@q.test"]);
    assert!(ok, "{err}");
    assert_none_lost(&acked, &out);
}
