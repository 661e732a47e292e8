//! An independent client (lettre, which does not share our parser) sends real mail.

use lettre::message::{Attachment, MultiPart, SinglePart, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::support::TestServer;

#[tokio::test]
async fn lettre_sends_and_we_read_back() {
    let srv = TestServer::start("[smtp]\ndomains = [\"example.com\"]\n").await;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(srv.addr.port())
        .build();
    let email = Message::builder()
        .from("Alice Sender <alice@example.net>".parse().unwrap())
        .to("Bob <Bob@Example.com>".parse().unwrap())
        .cc("carol@example.com".parse().unwrap())
        .subject("Quarterly report ✓")
        .message_id(Some("<report-1@example.net>".into()))
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain(
                    "Please find the report attached.\n.\nA line with a dot.".to_string(),
                ))
                .singlepart(Attachment::new("report.pdf".into()).body(
                    vec![7u8; 3000],
                    ContentType::parse("application/pdf").unwrap(),
                )),
        )
        .unwrap();
    let response = transport.send(email).await.expect("lettre gets a 250");
    assert!(response.is_positive());
    let id_text = response.message().collect::<Vec<_>>().join(" ");

    let list = srv
        .running
        .store
        .list_mailbox("bob@example.com", intake_core::Page::default())
        .await
        .unwrap()
        .messages;
    assert_eq!(list.len(), 1);
    assert!(
        id_text.contains(&list[0].id.to_string()),
        "the 250 names the stored id: {id_text}"
    );
    assert_eq!(
        srv.subjects("carol@example.com").await,
        ["Quarterly report ✓"]
    );
    let m = srv.running.store.fetch(list[0].id).await.unwrap().unwrap();
    assert_eq!(m.envelope.mail_from, "alice@example.net");
    assert_eq!(
        m.meta.from.as_deref(),
        Some("Alice Sender <alice@example.net>")
    );
    assert_eq!(m.meta.to.as_deref(), Some("Bob <Bob@Example.com>"));
    assert_eq!(m.meta.cc.as_deref(), Some("carol@example.com"));
    assert_eq!(m.meta.content_type.as_deref(), Some("multipart/mixed"));
    assert_eq!(m.meta.attachments.len(), 1);
    assert_eq!(m.meta.attachments[0].name.as_deref(), Some("report.pdf"));
    assert_eq!(m.meta.attachments[0].content_type, "application/pdf");
    assert_eq!(m.meta.attachments[0].size, 3000);
    assert_eq!(m.meta.message_id.as_deref(), Some("report-1@example.net"));
    assert!(m.meta.date.is_some());
    assert!(!m.helo.is_empty());
    assert!(m.client.ip().is_loopback());
    assert_eq!(m.sha256.len(), 64);
    let raw = String::from_utf8_lossy(&m.raw);
    assert!(
        raw.starts_with("Received: from "),
        "our trace header comes first"
    );
    assert!(
        raw.contains("\r\n.\r\nA line with a dot."),
        "dot-stuffing undone"
    );
    assert!(m.raw.len() as u64 > m.size);
}
