//! The driver over an in-memory stream with fake effects: what the client sees, what the
//! checks and the targets are handed, and how replies are written.

use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use intake_core::{
    AuthResult, CheckCtx, Credentials, DeliveryReport, Findings, Handoff, OnError, Pipeline,
    RcptOutcome, Reason, Stage, Verdict,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadBuf};

use super::wait::PARK_AFTER;
use super::*;
use crate::assemble::HEADROOM;

/// What a fake check answers for a context.
type Answer = fn(&CheckCtx) -> Verdict;

/// Effects that record what they are handed: checks answer with `answer`, deliveries are
/// accepted for every recipient (or never answered, with `hang`), logins are refused.
struct Fake {
    answer: Answer,
    hang: bool,
    checked: Mutex<Vec<CheckCtx>>,
    delivered: Mutex<Vec<Handoff>>,
    /// Sessions receiving content when a delivery started.
    arrivals: Option<Arrivals>,
    receiving_at_delivery: Mutex<Vec<usize>>,
}

impl Fake {
    fn new(answer: Answer) -> Arc<Fake> {
        Arc::new(Fake {
            answer,
            hang: false,
            checked: Mutex::default(),
            delivered: Mutex::default(),
            arrivals: None,
            receiving_at_delivery: Mutex::default(),
        })
    }

    fn delivered(&self) -> Vec<Handoff> {
        self.delivered.lock().unwrap().clone()
    }
}

#[async_trait]
impl Effects for Fake {
    async fn check(&self, cx: &CheckCtx) -> Vec<Verdict> {
        self.checked.lock().unwrap().push(cx.clone());
        vec![(self.answer)(cx)]
    }

    async fn deliver(&self, msg: &Handoff) -> DeliveryReport {
        if let Some(a) = &self.arrivals {
            self.receiving_at_delivery.lock().unwrap().push(a.pending());
        }
        if self.hang {
            std::future::pending::<()>().await;
        }
        self.delivered.lock().unwrap().push(msg.clone());
        DeliveryReport::all(
            msg.message.envelope.rcpt_to.len(),
            RcptOutcome::Accepted,
            true,
        )
    }

    fn delivery_timed_out(&self, rcpts: usize) -> DeliveryReport {
        DeliveryReport::all(rcpts, RcptOutcome::TEMP, true)
    }

    async fn authenticate(&self, _: &Credentials) -> AuthResult {
        AuthResult::Invalid
    }
}

fn pass(_: &CheckCtx) -> Verdict {
    Verdict::Pass
}

/// A check the session asks for at `stage`; the fake effects answer in its place.
struct AskedAt(Stage);

#[async_trait]
impl intake_core::Check for AskedAt {
    fn name(&self) -> &'static str {
        "asked"
    }
    fn stage(&self) -> Stage {
        self.0
    }
    async fn check(&self, _: &CheckCtx) -> Result<Verdict, intake_core::CheckError> {
        unreachable!("the fake effects answer")
    }
}

/// Settings whose sessions ask for checks at `stages`.
fn asking_at(stages: &[Stage]) -> Arc<SessionConfig> {
    let mut p = Pipeline::new();
    for st in stages {
        p.add(
            Arc::new(AskedAt(*st)),
            Duration::from_secs(1),
            OnError::Defer,
        );
    }
    Arc::new(SessionConfig {
        checks: Arc::new(p),
        ..SessionConfig::default()
    })
}

fn services(fake: &Arc<Fake>) -> Arc<Services> {
    Arc::new(Services {
        effects: fake.clone(),
        arrivals: fake.arrivals.clone(),
    })
}

/// A connection over an in-memory stream, running; the client's end and the task.
fn start(
    cfg: Arc<SessionConfig>,
    fake: &Arc<Fake>,
) -> (
    DuplexStream,
    tokio::task::JoinHandle<std::io::Result<Ended<DuplexStream>>>,
) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let conn = Connection::new(
        server,
        "192.0.2.9:1234".parse().unwrap(),
        cfg,
        services(fake),
    );
    (client, tokio::spawn(conn.run(CancellationToken::new())))
}

/// The server's end of the connection, counting the writes it makes.
struct Counting {
    inner: DuplexStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn read_replies(c: &mut DuplexStream, n: usize) -> String {
    let mut text = String::new();
    while !ends_complete(&text, n) {
        let mut b = [0u8; 4096];
        let k = c.read(&mut b).await.unwrap();
        assert!(k > 0, "closed early: {text}");
        text.push_str(&String::from_utf8_lossy(&b[..k]));
    }
    text
}

/// Whether `text` holds `n` complete replies (last lines have a space after the code).
fn ends_complete(text: &str, n: usize) -> bool {
    text.lines()
        .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
        .count()
        >= n
}

#[tokio::test]
async fn a_pipelined_batch_is_answered_in_one_write() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let writes = Arc::new(AtomicUsize::new(0));
    let fake = Fake::new(pass);
    let conn = Connection::new(
        Counting {
            inner: server,
            writes: writes.clone(),
        },
        "192.0.2.9:1234".parse().unwrap(),
        Arc::new(SessionConfig::default()),
        services(&fake),
    );
    let task = tokio::spawn(conn.run(CancellationToken::new()));
    read_replies(&mut client, 1).await; // greeting
    let before = writes.load(Ordering::SeqCst);
    client
        .write_all(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<z@y.test>\r\nNOOP\r\nDATA\r\n")
        .await
        .unwrap();
    let text = read_replies(&mut client, 6).await;
    assert!(
        text.ends_with("354 2.0.0 Send message, end with <CRLF>.<CRLF>\r\n"),
        "{text}"
    );
    assert_eq!(
        writes.load(Ordering::SeqCst) - before,
        1,
        "six replies, one write"
    );
    client
        .write_all(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        .await
        .unwrap();
    let text = read_replies(&mut client, 2).await;
    assert!(text.starts_with("250 2.0.0 Message stored as "), "{text}");
    assert!(matches!(task.await.unwrap().unwrap(), Ended::Closed));
    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].message.envelope.rcpt_to,
        ["x@y.test", "z@y.test"]
    );
    assert!(
        delivered[0]
            .message
            .raw
            .ends_with(b"Subject: x\r\n\r\nhi\r\n")
    );
}

#[tokio::test]
async fn shutdown_answers_421_between_transactions() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let token = CancellationToken::new();
    let conn = Connection::new(
        server,
        "192.0.2.9:1234".parse().unwrap(),
        Arc::new(SessionConfig::default()),
        services(&Fake::new(pass)),
    );
    let task = tokio::spawn(conn.run(token.clone()));
    read_replies(&mut client, 1).await;
    client.write_all(b"EHLO c\r\n").await.unwrap();
    read_replies(&mut client, 1).await;
    token.cancel();
    let text = read_replies(&mut client, 1).await;
    assert!(text.starts_with("421 4.3.2"), "{text}");
    assert!(matches!(task.await.unwrap().unwrap(), Ended::Closed));
}

/// Rejects content containing "SPAM", tags the rest with its length.
fn spam_filter(cx: &CheckCtx) -> Verdict {
    if cx.content.windows(4).any(|w| w == b"SPAM") {
        return Verdict::Reject {
            reason: Reason::Policy("Looks like spam".into()),
        };
    }
    Verdict::Tag {
        score: 0.5,
        header: format!("X-Content-Checked: {} octets\r\n", cx.content.len()),
        findings: Findings::default(),
    }
}

#[tokio::test]
async fn content_checks_see_the_message_as_stored_and_can_refuse_it() {
    let fake = Fake::new(spam_filter);
    let (mut client, task) = start(asking_at(&[Stage::Data]), &fake);
    read_replies(&mut client, 1).await;
    client
        .write_all(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
        .await
        .unwrap();
    read_replies(&mut client, 4).await;
    client
        .write_all(
            b"Subject: SPAM\r\n\r\nbuy\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n",
        )
        .await
        .unwrap();
    let text = read_replies(&mut client, 4).await;
    assert!(text.starts_with("550 5.7.1 Looks like spam\r\n"), "{text}");
    client
        .write_all(b"Subject: fine\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        .await
        .unwrap();
    let text = read_replies(&mut client, 2).await;
    assert!(text.starts_with("250 2.0.0 Message stored as "), "{text}");
    task.await.unwrap().unwrap();

    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 1, "the refused message was not delivered");
    let m = &delivered[0].message;
    // What the content check saw: our Received: (client address, HELO) first, then the
    // content, exactly what is delivered but for the check's own header field.
    let checked = fake.checked.lock().unwrap();
    let seen = &checked[1].content;
    let seen_text = String::from_utf8_lossy(seen);
    assert!(
        seen_text.starts_with("Received: from c ([192.0.2.9] port 1234)\r\n"),
        "{seen_text}"
    );
    assert!(
        seen.ends_with(b"\r\nSubject: fine\r\n\r\nhi\r\n"),
        "{seen_text}"
    );
    let raw = String::from_utf8_lossy(&m.raw);
    let tag = format!("X-Content-Checked: {} octets\r\n", seen.len());
    assert_eq!(
        raw,
        seen_text.replace("\r\nSubject: fine", &format!("\r\n{tag}Subject: fine")),
        "stored: what the check saw with its header added after ours"
    );
    assert_eq!(m.size, 21, "our headers are not counted as content");
}

#[tokio::test]
async fn checks_see_the_message_without_forged_results_of_ours() {
    let fake = Fake::new(pass);
    let (mut client, task) = start(asking_at(&[Stage::Data]), &fake);
    read_replies(&mut client, 1).await;
    client
        .write_all(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
        .await
        .unwrap();
    read_replies(&mut client, 4).await;
    client
        .write_all(b"Authentication-Results: localhost; dkim=pass\r\nSubject: s\r\n\r\nhi\r\n.\r\n")
        .await
        .unwrap();
    let text = read_replies(&mut client, 1).await;
    assert!(text.starts_with("250 "), "{text}");
    drop(client);
    task.await.unwrap().unwrap();
    let checked = fake.checked.lock().unwrap();
    let seen = String::from_utf8_lossy(&checked[0].content);
    assert!(!seen.contains("dkim=pass"), "{seen}");
    let raw = String::from_utf8_lossy(&fake.delivered()[0].message.raw).into_owned();
    assert!(!raw.contains("dkim=pass"), "{raw}");
}

/// Sends `messages` in one session and returns what was delivered.
async fn deliver_in_one_session(
    cfg: Arc<SessionConfig>,
    fake: &Arc<Fake>,
    messages: &[Vec<u8>],
) -> Vec<Handoff> {
    let (mut client, task) = start(cfg, fake);
    read_replies(&mut client, 1).await;
    client.write_all(b"EHLO c\r\n").await.unwrap();
    read_replies(&mut client, 1).await;
    for m in messages {
        client
            .write_all(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
            .await
            .unwrap();
        read_replies(&mut client, 3).await;
        client.write_all(m).await.unwrap();
        client.write_all(b".\r\n").await.unwrap();
        let text = read_replies(&mut client, 1).await;
        assert!(text.starts_with("250 2.0.0 Message stored as "), "{text}");
    }
    client.write_all(b"QUIT\r\n").await.unwrap();
    read_replies(&mut client, 1).await;
    task.await.unwrap().unwrap();
    fake.delivered()
}

/// Our header fields, then exactly the content.
fn assert_delivered(h: &Handoff, content: &[u8], header_start: &str) {
    let m = &h.message;
    let header_len = m.raw.len() - content.len();
    let header = String::from_utf8_lossy(&m.raw[..header_len]);
    assert!(header.starts_with(header_start), "{header}");
    assert!(header.ends_with("\r\n"), "{header}");
    assert_eq!(&m.raw[header_len..], content);
    assert_eq!(m.size, content.len() as u64);
}

#[tokio::test]
async fn each_message_of_a_session_is_delivered_exactly_after_our_header() {
    let big = format!(
        "Subject: big\r\n\r\n{}",
        "y".repeat(76).repeat(2000) + "\r\n"
    );
    let messages = [
        big.into_bytes(),
        b"Subject: small\r\n\r\nhi\r\n".to_vec(),
        b"Subject: smaller\r\n\r\n".to_vec(),
    ];
    let fake = Fake::new(pass);
    let delivered =
        deliver_in_one_session(Arc::new(SessionConfig::default()), &fake, &messages).await;
    assert_eq!(delivered.len(), 3);
    for (h, content) in delivered.iter().zip(&messages) {
        assert_delivered(h, content, "Received: from c ");
    }
}

/// Tags every message with one header field longer than the room kept in front of the
/// content.
fn long_header(_: &CheckCtx) -> Verdict {
    let folded = vec!["x".repeat(70); 60].join("\r\n ");
    Verdict::Tag {
        score: 0.0,
        header: format!("X-Long: {folded}\r\n"),
        findings: Findings::default(),
    }
}

#[tokio::test]
async fn header_fields_longer_than_the_room_in_front_are_delivered_too() {
    let messages = [
        b"Subject: one\r\n\r\nfirst\r\n".to_vec(),
        b"Subject: two\r\n\r\nsecond\r\n".to_vec(),
    ];
    let fake = Fake::new(long_header);
    let delivered = deliver_in_one_session(asking_at(&[Stage::Data]), &fake, &messages).await;
    assert_eq!(delivered.len(), 2);
    for (h, content) in delivered.iter().zip(&messages) {
        assert_delivered(h, content, "Received: from c ");
        let raw = String::from_utf8_lossy(&h.message.raw);
        assert!(raw.len() > HEADROOM + content.len(), "{raw}");
        assert!(raw.contains("\r\nX-Long: xxx"), "{raw}");
    }
}

#[tokio::test]
async fn a_delivery_past_its_deadline_is_451() {
    let fake = Arc::new(Fake {
        hang: true,
        ..Arc::into_inner(Fake::new(pass)).unwrap()
    });
    let cfg = Arc::new(SessionConfig {
        deliver_timeout: Duration::from_millis(100),
        ..SessionConfig::default()
    });
    let (mut client, task) = start(cfg, &fake);
    read_replies(&mut client, 1).await;
    client
        .write_all(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
        .await
        .unwrap();
    read_replies(&mut client, 4).await;
    client
        .write_all(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        .await
        .unwrap();
    let text = read_replies(&mut client, 2).await;
    assert!(text.starts_with("451 4.3.0 "), "{text}");
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_session_counts_as_arriving_only_while_it_receives_content() {
    let arrivals = Arrivals::default();
    let fake = Arc::new(Fake {
        arrivals: Some(arrivals.clone()),
        ..Arc::into_inner(Fake::new(pass)).unwrap()
    });
    let (mut client, task) = start(Arc::new(SessionConfig::default()), &fake);
    read_replies(&mut client, 1).await;
    client
        .write_all(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y.test>\r\n")
        .await
        .unwrap();
    read_replies(&mut client, 3).await;
    assert_eq!(arrivals.pending(), 0, "not before DATA");
    client.write_all(b"DATA\r\n").await.unwrap();
    read_replies(&mut client, 1).await;
    assert_eq!(arrivals.pending(), 1, "while the content comes");
    client
        .write_all(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        .await
        .unwrap();
    read_replies(&mut client, 2).await;
    task.await.unwrap().unwrap();
    assert_eq!(
        *fake.receiving_at_delivery.lock().unwrap(),
        [0],
        "done arriving once the content is complete, before the delivery"
    );
    assert_eq!(arrivals.pending(), 0);
}

#[tokio::test]
async fn an_endless_sasl_line_ends_the_session() {
    let mut cfg = SessionConfig::default();
    cfg.auth.authenticator = Some(Arc::new(NoLogins));
    cfg.auth.allow_plaintext = true;
    cfg.max_line_length = 100;
    let (mut client, task) = start(Arc::new(cfg), &Fake::new(pass));
    read_replies(&mut client, 1).await;
    client.write_all(b"EHLO c\r\nAUTH PLAIN\r\n").await.unwrap();
    let text = read_replies(&mut client, 2).await;
    assert!(text.ends_with("334 \r\n"), "{text}");
    client.write_all(&[b'A'; 200]).await.unwrap();
    let text = read_replies(&mut client, 1).await;
    assert!(text.starts_with("501 5.5.2"), "{text}");
    assert!(matches!(task.await.unwrap().unwrap(), Ended::Closed));
}

/// An authenticator the fake effects stand in for (it makes the session offer AUTH).
struct NoLogins;

#[async_trait]
impl intake_core::Authenticator for NoLogins {
    async fn authenticate(&self, _: &Credentials) -> AuthResult {
        unreachable!("the fake effects answer")
    }
}

/// A session quiet between commands parks (gives back its buffers), then reads its next
/// commands as before, a command longer than the parked room included; a message after
/// parking is delivered whole.
#[tokio::test(start_paused = true)]
async fn a_parked_session_reads_its_next_commands() {
    let fake = Fake::new(pass);
    let (mut client, task) = start(Arc::new(SessionConfig::default()), &fake);
    read_replies(&mut client, 1).await;
    // Past PARK_AFTER with nothing sent: the session parks (paused time moves on by itself
    // while every task waits).
    tokio::time::sleep(PARK_AFTER * 3).await;
    client
        .write_all(b"EHLO a-client-name-longer-than-sixteen-bytes.example\r\n")
        .await
        .unwrap();
    let ehlo = read_replies(&mut client, 1).await;
    assert!(ehlo.starts_with("250-"), "{ehlo}");
    tokio::time::sleep(PARK_AFTER * 3).await;
    client
        .write_all(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
        .await
        .unwrap();
    read_replies(&mut client, 3).await;
    client
        .write_all(b"Subject: parked\r\n\r\nhi\r\n.\r\n")
        .await
        .unwrap();
    let done = read_replies(&mut client, 1).await;
    assert!(done.starts_with("250 "), "{done}");
    tokio::time::sleep(PARK_AFTER * 3).await;
    client.write_all(b"QUIT\r\n").await.unwrap();
    let bye = read_replies(&mut client, 1).await;
    assert!(bye.starts_with("221 "), "{bye}");
    task.await.unwrap().unwrap();
    assert_eq!(fake.delivered().len(), 1);
}

/// A client that was greeted and says nothing costs no command buffer: its room is
/// reserved once it speaks (over a real socket, tokio waits until it is readable), and a
/// parked session gives it back.
#[tokio::test]
async fn a_silent_client_holds_no_command_buffer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (sock, peer) = listener.accept().await.unwrap();
    let mut conn = Connection::new(
        sock,
        peer,
        Arc::new(SessionConfig::default()),
        services(&Fake::new(pass)),
    );
    assert!(conn.fill(COMMAND_ROOM).now_or_never().is_none());
    assert_eq!(conn.inbuf.capacity(), 0, "nothing sent, nothing reserved");
    client.write_all(b"EHLO c\r\n").await.unwrap();
    while conn.inbuf.len() < 8 {
        assert!(conn.fill(COMMAND_ROOM).await.unwrap() > 0);
    }
    assert_eq!(&conn.inbuf[..], b"EHLO c\r\n");
    conn.inbuf.clear();
    conn.park();
    assert_eq!(conn.inbuf.capacity(), 0, "a parked session holds no buffer");
    client.write_all(b"QUIT\r\n").await.unwrap();
    while conn.inbuf.len() < 6 {
        assert!(conn.fill(COMMAND_ROOM).await.unwrap() > 0);
    }
    assert_eq!(&conn.inbuf[..], b"QUIT\r\n");
    drop(client);
    assert_eq!(conn.fill(COMMAND_ROOM).await.unwrap(), 0, "end of stream");
}

#[tokio::test]
async fn a_client_that_does_not_read_its_replies_is_cut_off() {
    // A small pipe: the replies to a long pipelined batch fill it while the client reads
    // nothing, so the write waits; the timer made then ends the session at the command
    // timeout, and the writes before it did not start any timer.
    let (mut client, server) = tokio::io::duplex(256);
    let cfg = SessionConfig {
        command_timeout: Duration::from_millis(300),
        ..SessionConfig::default()
    };
    let conn = Connection::new(
        server,
        "192.0.2.9:1234".parse().unwrap(),
        Arc::new(cfg),
        services(&Fake::new(pass)),
    );
    let task = tokio::spawn(conn.run(CancellationToken::new()));
    read_replies(&mut client, 1).await; // greeting
    let started = std::time::Instant::now();
    let (mut from_server, mut to_server) = tokio::io::split(client);
    // The batch is sent from a task of its own: once the server stops reading, this write
    // waits (and fails when the server gives up), which is not what is tested here.
    tokio::spawn(async move {
        let mut batch = b"EHLO c\r\n".to_vec();
        batch.extend(b"NOOP\r\n".repeat(60));
        let _ = to_server.write_all(&batch).await;
    });
    let ended = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the session ends")
        .unwrap();
    let Err(e) = ended else {
        panic!("the session should end with an error")
    };
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // What fit in the pipe was written, in order.
    let mut seen = vec![0u8; 256];
    let n = from_server.read(&mut seen).await.unwrap();
    assert!(String::from_utf8_lossy(&seen[..n]).starts_with("250-"));
}
