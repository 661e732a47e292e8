//! SMTP smuggling (SEC Consult, 2023): end-of-data sequences other than `<CRLF>.<CRLF>`
//! that some servers accept. For each published variant, one message goes in and either
//! exactly one message is stored (normalize) or it is refused (reject, the default); the
//! second message hidden inside is never stored.

use crate::support::{Client, TestServer};

/// End-of-data look-alikes, each followed by a hidden second transaction.
const VARIANTS: &[&[u8]] = &[
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r.\n",
    b"\r.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r\n.\r\r\n",
    b"\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
];

/// A CR not followed by LF, or an LF not preceded by CR.
fn has_bare_line_ending(v: &[u8]) -> bool {
    v.iter().enumerate().any(|(i, &b)| {
        (b == b'\r' && v.get(i + 1) != Some(&b'\n'))
            || (b == b'\n' && (i == 0 || v[i - 1] != b'\r'))
    })
}

async fn try_variant(srv: &TestServer, i: usize, variant: &[u8]) -> (String, Vec<String>) {
    let mut c = Client::greeted(srv.addr).await;
    c.cmd("EHLO attacker.test").await;
    c.cmd("MAIL FROM:<attacker@evil.test>").await;
    c.cmd(&format!("RCPT TO:<outer{i}@q.test>")).await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    let mut payload = format!("Subject: outer {i}\r\n\r\nfirst part").into_bytes();
    payload.extend_from_slice(variant);
    payload.extend_from_slice(
        format!("MAIL FROM:<ceo@bank.test>\r\nRCPT TO:<hidden{i}@q.test>\r\nDATA\r\nSubject: smuggled {i}\r\n\r\nfake\r\n").as_bytes(),
    );
    payload.extend_from_slice(b".\r\n");
    c.send(&payload).await;
    let r = c.reply().await;
    // Exactly one reply for the whole payload: nothing after the real end was a command.
    let after = c.cmd("NOOP").await;
    assert_eq!(
        after.head(),
        "250 2.0.0",
        "variant {variant:?}: the session is in step"
    );
    let mut stored = srv.subjects(&format!("outer{i}@q.test")).await;
    stored.extend(srv.subjects(&format!("hidden{i}@q.test")).await);
    (r.head(), stored)
}

#[tokio::test]
async fn every_variant_is_refused_by_default() {
    let srv = TestServer::start("[smtp]\nmax_errors = 1000\n").await;
    for (i, v) in VARIANTS.iter().enumerate() {
        let (reply, stored) = try_variant(&srv, i, v).await;
        if has_bare_line_ending(v) {
            assert_eq!(reply, "550 5.6.0", "variant {v:?}");
            assert!(stored.is_empty(), "variant {v:?}: {stored:?}");
        } else {
            // Only NUL tricks, all lines end in CRLF: one ordinary message, never two.
            assert_eq!(reply, "250 2.0.0", "variant {v:?}");
            assert_eq!(stored, [format!("outer {i}")], "variant {v:?}");
        }
    }
}

#[tokio::test]
async fn normalize_stores_exactly_one_message() {
    let srv =
        TestServer::start("[smtp]\nbare_line_endings = \"normalize\"\nmax_errors = 1000\n").await;
    for (i, v) in VARIANTS.iter().enumerate() {
        let (reply, stored) = try_variant(&srv, i, v).await;
        assert_eq!(reply, "250 2.0.0", "variant {v:?}");
        assert_eq!(
            stored,
            [format!("outer {i}")],
            "variant {v:?}: one message, the outer one"
        );
    }
}
