//! Transcript tests over raw TCP: every verb and every error path.

use crate::support::{Client, TestServer};

const DOMAINS: &str =
    "[smtp]\ndomains = [\"example.com\", \"*.example.org\"]\nmax_recipients = 3\n";

#[tokio::test]
async fn every_verb() {
    let srv = TestServer::start(DOMAINS).await;
    let mut c = Client::greeted(srv.addr).await;
    let r = c
        .transcript(
            "C: EHLO client.example
             S: 250 CHUNKING",
        )
        .await;
    let ehlo = r[0].text();
    for ext in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ] {
        assert!(ehlo.contains(ext), "EHLO lacks {ext}: {ehlo}");
    }
    assert!(r[0].lines[0].starts_with("250-mx.test"));
    c.transcript(
        "C: HELO client.example
         S: 250 mx.test
         C: NOOP
         S: 250 2.0.0
         C: VRFY someone
         S: 252 2.5.0
         C: HELP
         S: 214 2.0.0
         C: EXPN list
         S: 502 5.5.1
         C: STARTTLS
         S: 502 5.5.1
         C: FROB nicate
         S: 500 5.5.1
         C: MAIL FROM:<sender@example.net>
         S: 250 2.1.0
         C: RCPT TO:<someone@example.com>
         S: 250 2.1.5
         C: RSET
         S: 250 2.0.0
         C: RCPT TO:<someone@example.com>
         S: 503 5.5.1
         C: QUIT
         S: 221 2.0.0",
    )
    .await;
    assert!(c.is_closed().await);
    assert!(
        srv.subjects("someone@example.com").await.is_empty(),
        "RSET dropped the transaction"
    );
}

#[tokio::test]
async fn pipelined_transaction_in_one_write() {
    let srv = TestServer::start(DOMAINS).await;
    let mut c = Client::greeted(srv.addr).await;
    // Everything up to DATA in one write, then the content and QUIT in a second.
    c.send(
        b"EHLO client.example\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<x@example.com>\r\n\
          RCPT TO:<nobody@elsewhere.test>\r\nRCPT TO:<y@a.example.org>\r\nDATA\r\n",
    )
    .await;
    let heads: Vec<String> = [
        c.reply().await,
        c.reply().await,
        c.reply().await,
        c.reply().await,
        c.reply().await,
        c.reply().await,
    ]
    .iter()
    .map(|r| r.head())
    .collect();
    assert_eq!(
        heads[1..],
        [
            "250 2.1.0",
            "250 2.1.5",
            "550 5.7.1",
            "250 2.1.5",
            "354 2.0.0"
        ]
    );
    c.send(b"Subject: piped\r\n\r\nhi\r\n.\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await.head(), "250 2.0.0");
    assert_eq!(c.reply().await.code, 221);
    assert_eq!(srv.subjects("x@example.com").await, ["piped"]);
    assert_eq!(srv.subjects("Y@A.example.org").await, ["piped"]);
}

#[tokio::test]
async fn two_messages_pipelined_after_data_end() {
    let srv = TestServer::start("").await;
    let mut c = Client::greeted(srv.addr).await;
    c.send(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<p@q.test>\r\nDATA\r\n")
        .await;
    for _ in 0..4 {
        c.reply().await;
    }
    // The end of one message, the whole next transaction and its content: one write.
    c.send(b"Subject: one\r\n\r\n1\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<p@q.test>\r\nDATA\r\nSubject: two\r\n\r\n2\r\n.\r\n")
        .await;
    let heads: Vec<String> = [
        c.reply().await,
        c.reply().await,
        c.reply().await,
        c.reply().await,
        c.reply().await,
    ]
    .iter()
    .map(|r| r.head())
    .collect();
    assert_eq!(
        heads,
        [
            "250 2.0.0",
            "250 2.1.0",
            "250 2.1.5",
            "354 2.0.0",
            "250 2.0.0"
        ]
    );
    assert_eq!(srv.subjects("p@q.test").await, ["two", "one"]);
}

#[tokio::test]
async fn dot_stuffing_and_empty_messages() {
    let srv = TestServer::start("").await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c").await;
    for content in [
        &b"..\r\n.\r\n"[..],
        b".\r\n",
        b"Subject: dots\r\n\r\n..leading\r\n...\r\nmid.dle\r\n.\r\n",
    ] {
        c.cmd("MAIL FROM:<a@b>").await;
        c.cmd("RCPT TO:<dots@q.test>").await;
        assert_eq!(c.cmd("DATA").await.code, 354);
        c.send(content).await;
        assert_eq!(c.reply().await.head(), "250 2.0.0");
    }
    let list = srv
        .running
        .store
        .list_mailbox("dots@q.test", intake_core::Page::default())
        .await
        .unwrap()
        .messages;
    assert_eq!(list.len(), 3);
    let bodies: Vec<Vec<u8>> = {
        let mut v = Vec::new();
        for m in list.iter().rev() {
            let full = srv.running.store.fetch(m.id).await.unwrap().unwrap();
            let raw = full.raw.to_vec();
            // Strip our Received: header (it ends at the first line not starting with a tab).
            let mut pos = 0;
            loop {
                let eol = raw[pos..].windows(2).position(|w| w == b"\r\n").unwrap() + pos + 2;
                pos = eol;
                if raw.get(pos) != Some(&b'\t') {
                    break;
                }
            }
            v.push(raw[pos..].to_vec());
        }
        v
    };
    assert_eq!(bodies[0], b".\r\n", "a body that is only a dot");
    assert_eq!(bodies[1], b"", "an empty message");
    assert_eq!(
        bodies[2],
        b"Subject: dots\r\n\r\n.leading\r\n..\r\nmid.dle\r\n"
    );
    assert_eq!(list[0].size, bodies[2].len() as u64);
}

#[tokio::test]
async fn bdat_chunks_including_zero_last() {
    let srv = TestServer::start("").await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c").await;
    c.cmd("MAIL FROM:<a@b> BODY=8BITMIME").await;
    c.cmd("RCPT TO:<chunks@q.test>").await;
    let part1 = b"Subject: chunked\r\n\r\nbinary \x00\xff\r\n.\r\n";
    c.send(format!("BDAT {}\r\n", part1.len()).as_bytes()).await;
    c.send(part1).await;
    assert_eq!(c.reply().await.head(), "250 2.0.0");
    // A chunk and the next command in one write, then BDAT 0 LAST.
    c.send(b"BDAT 5\r\nend\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await.head(), "250 2.0.0");
    assert_eq!(c.reply().await.head(), "250 2.0.0");
    let r = c.cmd("BDAT 0 LAST").await;
    assert_eq!(r.head(), "250 2.0.0", "{r:?}");
    // One BDAT LAST with the whole message.
    c.cmd("MAIL FROM:<a@b>").await;
    c.cmd("RCPT TO:<chunks@q.test>").await;
    c.send(b"BDAT 20 LAST\r\nSubject: single\r\n\r\nx").await;
    assert_eq!(c.reply().await.head(), "250 2.0.0");
    // BDAT without a transaction: its octets are still consumed.
    c.send(b"BDAT 4\r\nNOOPNOOP\r\n").await;
    assert_eq!(c.reply().await.head(), "503 5.5.1");
    assert_eq!(c.reply().await.head(), "250 2.0.0");
    let list = srv
        .running
        .store
        .list_mailbox("chunks@q.test", intake_core::Page::default())
        .await
        .unwrap()
        .messages;
    assert_eq!(list.len(), 2);
    let first = srv.running.store.fetch(list[1].id).await.unwrap().unwrap();
    assert!(
        first.raw.ends_with(b"binary \x00\xff\r\n.\r\nend\r\n"),
        "BDAT content is stored as sent"
    );
    assert_eq!(first.meta.subject.as_deref(), Some("chunked"));
    assert_eq!(list[0].subject.as_deref(), Some("single"));
}

#[tokio::test]
async fn utf8_and_8bit() {
    let srv = TestServer::start("").await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c").await;
    c.transcript(
        "C: MAIL FROM:<jörg@bücher.example>
         S: 553 5.6.7
         C: MAIL FROM:<jörg@bücher.example> SMTPUTF8 BODY=8BITMIME
         S: 250 2.1.0
         C: RCPT TO:<Ünïcode@Пример.test>
         S: 250 2.1.5
         C: DATA
         S: 354",
    )
    .await;
    c.send(
        "Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße, καλημέρα\r\n.\r\n"
            .as_bytes(),
    )
    .await;
    let r = c.reply().await;
    assert_eq!(r.head(), "250 2.0.0");
    let list = srv
        .running
        .store
        .list_mailbox("ünïcode@пример.test", intake_core::Page::default())
        .await
        .unwrap()
        .messages;
    assert_eq!(
        list.len(),
        1,
        "mailbox key is the lower-cased UTF-8 address"
    );
    let m = srv.running.store.fetch(list[0].id).await.unwrap().unwrap();
    assert_eq!(m.envelope.mail_from, "jörg@bücher.example");
    assert!(String::from_utf8_lossy(&m.raw).contains("Grüße, καλημέρα"));
    assert!(String::from_utf8_lossy(&m.raw).contains("with UTF8SMTP"));
}

#[tokio::test]
async fn unknown_domain_is_relay_denied_and_null_recipient_refused() {
    let srv = TestServer::start(DOMAINS).await;
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO c
         S: 250
         C: MAIL FROM:<a@b.example>
         S: 250 2.1.0
         C: RCPT TO:<victim@elsewhere.test>
         S: 550 5.7.1
         C: RCPT TO:<x@example.org>
         S: 550 5.7.1
         C: RCPT TO:<>
         S: 550 5.1.1
         C: RCPT TO:<Postmaster>
         S: 250 2.1.5
         C: DATA
         S: 354",
    )
    .await;
}

#[tokio::test]
async fn too_many_recipients() {
    let srv = TestServer::start(DOMAINS).await;
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO c
         C: MAIL FROM:<a@b.example>
         C: RCPT TO:<r1@example.com>
         C: RCPT TO:<r2@example.com>
         C: RCPT TO:<r3@example.com>
         C: RCPT TO:<r4@example.com>
         C: DATA
         S: 250
         S: 250 2.1.0
         S: 250 2.1.5
         S: 250 2.1.5
         S: 250 2.1.5
         S: 452 4.5.3
         S: 354",
    )
    .await;
    c.send(b"Subject: three\r\n\r\n.\r\n").await;
    c.reply().await;
    for r in ["r1@example.com", "r2@example.com", "r3@example.com"] {
        assert_eq!(srv.subjects(r).await, ["three"]);
    }
    assert!(srv.subjects("r4@example.com").await.is_empty());
}

#[tokio::test]
async fn sequence_errors() {
    let srv = TestServer::start("").await;
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: MAIL FROM:<a@b>
         S: 503 5.5.1
         C: EHLO c
         S: 250
         C: RCPT TO:<x@y.test>
         S: 503 5.5.1
         C: DATA
         S: 503 5.5.1
         C: MAIL FROM:<a@b>
         S: 250
         C: MAIL FROM:<a@b>
         S: 503 5.5.1
         C: DATA
         S: 503 5.5.1
         C: MAIL FROM:bad
         S: 501 5.5.4
         C: RCPT TO:<no-at-sign>
         S: 501",
    )
    .await;
}

#[tokio::test]
async fn too_many_errors_closes_with_421() {
    let srv = TestServer::start("[smtp]\nmax_errors = 3\n").await;
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: BOGUS
         C: BOGUS
         C: BOGUS
         C: NOOP
         S: 500 5.5.1
         S: 500 5.5.1
         S: 421 4.7.0",
    )
    .await;
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn lenient_and_strict_helo() {
    let srv = TestServer::start("").await;
    let mut c = Client::greeted(srv.addr).await;
    c.transcript(
        "C: EHLO
         S: 250 CHUNKING
         C: HELO
         S: 250 mx.test",
    )
    .await;
    c.cmd("MAIL FROM:<a@b>").await;
    c.cmd("RCPT TO:<helo@q.test>").await;
    c.cmd("DATA").await;
    c.send(b"Subject: nohelo\r\n\r\n.\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    let list = srv
        .running
        .store
        .list_mailbox("helo@q.test", intake_core::Page::default())
        .await
        .unwrap()
        .messages;
    let m = srv.running.store.fetch(list[0].id).await.unwrap().unwrap();
    assert_eq!(m.helo, "", "an empty HELO name is recorded as empty");

    let strict = TestServer::start("[smtp]\nlenient_helo = false\n").await;
    let mut c = Client::greeted(strict.addr).await;
    c.transcript(
        "C: EHLO
         S: 501 5.5.4
         C: HELO
         S: 501 5.5.4
         C: MAIL FROM:<a@b>
         S: 503 5.5.1
         C: EHLO c.test
         S: 250",
    )
    .await;
}

#[tokio::test]
async fn bad_lines() {
    let srv = TestServer::start("[smtp]\nmax_line_length = 600\n").await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c").await;
    let long = format!("NOOP {}\r\n", "x".repeat(5000));
    c.send(long.as_bytes()).await;
    assert_eq!(c.reply().await.head(), "500 5.5.2");
    c.send(b"NOOP\nNOOP\r\nMAIL FROM:<a@b>\rRCPT TO:<c@d>\r\nNO\0OP\r\n")
        .await;
    assert_eq!(c.reply().await.head(), "500 5.5.2", "bare LF");
    assert_eq!(c.reply().await.head(), "250 2.0.0");
    assert_eq!(c.reply().await.head(), "500 5.5.2", "bare CR");
    assert_eq!(c.reply().await.head(), "500 5.5.2", "NUL");
    assert_eq!(c.cmd("NOOP").await.head(), "250 2.0.0", "still in step");
}

#[tokio::test]
async fn bare_lf_in_data_is_rejected_and_never_ends_it() {
    let srv = TestServer::start("").await;
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO c").await;
    c.cmd("MAIL FROM:<a@b>").await;
    c.cmd("RCPT TO:<smuggle@q.test>").await;
    c.cmd("DATA").await;
    c.send(b"Subject: outer\r\n\r\nx\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<smuggle@q.test>\r\nDATA\r\nSubject: inner\r\n\r\n.\r\n")
        .await;
    assert_eq!(c.reply().await.head(), "550 5.6.0");
    assert_eq!(c.cmd("NOOP").await.head(), "250 2.0.0");
    assert!(
        srv.subjects("smuggle@q.test").await.is_empty(),
        "nothing stored, nothing smuggled"
    );
}
