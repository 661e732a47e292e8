//! Messages survive a restart.

use crate::support::{TestServer, send_each, settings, store_message};

#[tokio::test]
async fn restart_and_read_back() {
    let srv = TestServer::start("").await;
    send_each(srv.addr, "a@b", &["keep@q.test"], 20, |i| {
        format!("Subject: m{i}\r\n\r\nbody {i}\r\n")
    })
    .await;
    let dir = srv.stop().await;
    let s = settings("", &dir.path().join("data"));
    let again = intake_server::server::start(&s).await.unwrap();
    let list = again
        .store
        .list_mailbox(
            "keep@q.test",
            intake_core::Page {
                offset: 0,
                limit: 100,
            },
        )
        .await
        .unwrap()
        .messages;
    let subjects: Vec<_> = list.iter().map(|m| m.subject.clone().unwrap()).collect();
    let want: Vec<_> = (0..20).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(subjects, want);
    // And it keeps accepting.
    store_message(
        again.smtp_addr,
        "a@b",
        &["keep@q.test"],
        "Subject: after\r\n\r\n",
    )
    .await;
    again.stop().await.unwrap();
}
