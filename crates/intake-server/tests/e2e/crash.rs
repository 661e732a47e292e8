//! Kill -9 while clients are sending: every message that got a 250 is in the store.

use crate::support::{Process, cli, kill9_under_load, missing_from};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_250_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(dir.path(), &[]);
    let acked = kill9_under_load(p, 12).await;
    let (ok, out, err) = cli(dir.path(), &["mailbox", "list", "crash@q.test"]);
    assert!(ok, "{err}");
    let missing = missing_from(&acked, &out);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}
