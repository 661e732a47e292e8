//! The client against small servers written here: what it sends, what it reads, and what it
//! refuses to read.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::*;

/// A server that reads one request head and body, sends it to the test, writes `answer`,
/// then holds the connection open until `release` fires (so a client that waited for the
/// end of an unfinished body would hang).
async fn server(answer: Vec<u8>) -> (SocketAddr, oneshot::Receiver<String>, oneshot::Sender<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (seen_tx, seen) = oneshot::channel();
    let (release, released) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Read the head, then the body by its Content-Length.
        let (head_len, body_len) = loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed before sending a request");
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                break (end + 4, len);
            }
        };
        while got.len() < head_len + body_len {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        let _ = seen_tx.send(String::from_utf8_lossy(&got).to_string());
        s.write_all(&answer).await.unwrap();
        let _ = released.await;
    });
    (addr, seen, release)
}

fn client(addr: SocketAddr, max_body: usize) -> HttpClient {
    HttpClient::new(&format!("http://{addr}/checkv2?x=1"), Trust::System)
        .unwrap()
        .with_max_body(max_body)
}

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_post_sends_its_headers_and_body_and_reads_the_answer() {
    let (addr, seen, _hold) = server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"a\":\"b\"}\r\n"
            .to_vec(),
    )
    .await;
    let r = client(addr, 1024)
        .post(
            &[
                ("Rcpt", "a@example.test"),
                ("Rcpt", "b@example.test"),
                ("Helo", "héllo"),
            ],
            Bytes::from_static(b"Subject: x\r\n\r\nhi\r\n"),
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(&r.bytes().await.unwrap()[..], b"{\"a\":\"b\"}\r\n");
    let req = seen.await.unwrap();
    assert!(req.starts_with("POST /checkv2?x=1 HTTP/1.1\r\n"), "{req}");
    assert!(req.contains(&format!("\r\nHost: {addr}\r\n")), "{req}");
    assert!(req.contains("\r\nContent-Length: 18\r\n"), "{req}");
    assert!(req.contains("\r\nConnection: close\r\n"), "{req}");
    assert!(
        req.contains("\r\nRcpt: a@example.test\r\nRcpt: b@example.test\r\n"),
        "{req}"
    );
    assert!(
        req.contains("\r\nHelo: héllo\r\n"),
        "UTF-8 passes as it is: {req}"
    );
    assert!(req.ends_with("\r\n\r\nSubject: x\r\n\r\nhi\r\n"), "{req}");
}

#[tokio::test]
async fn a_chunked_answer_is_read_whole_within_the_bound() {
    let (addr, _seen, _hold) = server(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            .to_vec(),
    )
    .await;
    let r = client(addr, 11)
        .post(&[], Bytes::new(), LONG)
        .await
        .unwrap();
    assert_eq!(&r.bytes().await.unwrap()[..], b"hello world");
}

#[tokio::test]
async fn a_body_announced_larger_than_the_bound_is_refused_without_reading_it() {
    // The server announces 1 GB and sends a few bytes, then waits: the client must not.
    let (addr, _seen, _hold) =
        server(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n{\"action\":".to_vec()).await;
    let r = client(addr, 64 * 1024)
        .post(&[], Bytes::new(), LONG)
        .await
        .unwrap();
    let e = r.bytes().await.unwrap_err();
    assert!(matches!(e, HttpError::TooLarge { limit: 65536 }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "the response body is larger than 65536 bytes"
    );
}

#[tokio::test]
async fn a_chunked_body_past_the_bound_is_refused_as_soon_as_it_passes() {
    // 100 KiB in chunks and no last chunk: the client stops at the bound, not at the end.
    let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..100 {
        answer.extend_from_slice(b"400\r\n");
        answer.extend_from_slice(&[b'x'; 1024]);
        answer.extend_from_slice(b"\r\n");
    }
    let (addr, _seen, _hold) = server(answer).await;
    let r = client(addr, 64 * 1024)
        .post(&[], Bytes::new(), LONG)
        .await
        .unwrap();
    let e = r.bytes().await.unwrap_err();
    assert!(matches!(e, HttpError::TooLarge { limit: 65536 }), "{e:?}");
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_timed_out() {
    // The server reads the request and never answers.
    let (addr, _seen, _hold) = server(Vec::new()).await;
    let started = std::time::Instant::now();
    let e = client(addr, 1024)
        .post(&[], Bytes::new(), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::TimedOut(_)), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_body_that_stalls_is_timed_out_under_the_same_deadline() {
    let (addr, _seen, _hold) =
        server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".to_vec()).await;
    let r = client(addr, 1024)
        .post(&[], Bytes::new(), Duration::from_millis(300))
        .await
        .unwrap();
    let e = r.bytes().await.unwrap_err();
    assert!(matches!(e, HttpError::TimedOut(_)), "{e:?}");
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let e = client(addr, 1024)
        .post(&[], Bytes::new(), LONG)
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Connect { .. }), "{e:?}");
}

#[test]
fn urls() {
    let u = HttpUrl::parse("http://127.0.0.1:8080/hook?x=1").unwrap();
    assert_eq!(
        (u.authority.as_str(), u.host.as_str(), u.path.as_str()),
        ("127.0.0.1:8080", "127.0.0.1:8080", "/hook?x=1")
    );
    let u = HttpUrl::parse("http://app.internal").unwrap();
    assert_eq!(
        (u.authority.as_str(), u.path.as_str()),
        ("app.internal:80", "/")
    );
    let u = HttpUrl::parse("http://[::1]/in").unwrap();
    assert_eq!(u.authority, "[::1]:80");
    let u = HttpUrl::parse("https://hooks.example.com/in").unwrap();
    assert!(u.tls);
    assert_eq!(
        (u.authority.as_str(), u.hostname()),
        ("hooks.example.com:443", "hooks.example.com")
    );
    let u = HttpUrl::parse("https://[::1]:8443/in").unwrap();
    assert_eq!(
        (u.authority.as_str(), u.hostname()),
        ("[::1]:8443", "[::1]")
    );
    assert!(!HttpUrl::parse("http://a/").unwrap().tls);
    assert!(HttpUrl::parse("ftp://example.com/").is_none());
    assert!(HttpUrl::parse("http://u:p@host/").is_none());
    assert!(HttpUrl::parse("http://host/a b").is_none());
    assert!(matches!(
        HttpClient::new("ftp://example.com/", Trust::System),
        Err(HttpError::BadUrl(_))
    ));
}
