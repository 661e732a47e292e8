//! One HTTP/1 connection and its timers.
//!
//! hyper's own `header_read_timeout` starts when the server begins to wait for a request, so
//! it cannot tell a slow header from a kept-alive connection waiting for its next request.
//! [`TimedIo`] wraps the socket and knows the phase of the connection:
//!
//! - **waiting** for a request: a fresh connection must deliver a complete header within
//!   `header_timeout`; after a response it may stay idle for `idle_timeout`, and once the
//!   first byte of the next request arrives the header must be complete within
//!   `header_timeout` of it;
//! - **busy** from the moment hyper hands the request to the app (the header is complete)
//!   until the response body has ended: no read deadline (SSE streams and `/wait` run long;
//!   the request body has its own deadline, see `lib.rs`).
//!
//! In every phase a write that makes no progress for `idle_timeout` (a client that stopped
//! reading) ends the connection.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// The timers of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// A request header must be complete this long after its first byte (or after connect).
    pub header: Duration,
    /// Between requests, and for a write that makes no progress.
    pub idle: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request header. `started`: its first byte has arrived.
    Waiting { deadline: Instant, started: bool },
    /// A request is being served.
    Busy,
}

/// The phase, shared by the socket wrapper, the service and the response body.
#[derive(Clone)]
pub(crate) struct Clock {
    state: Arc<Mutex<ClockState>>,
    t: Timeouts,
}

struct ClockState {
    phase: Phase,
    /// hyper's read interest while busy (it watches for the next request or a close):
    /// woken when the phase changes, so that the new deadline is armed at once.
    reader: Option<Waker>,
}

impl Clock {
    fn new(t: Timeouts) -> Self {
        Clock {
            state: Arc::new(Mutex::new(ClockState {
                phase: Phase::Waiting {
                    deadline: Instant::now() + t.header,
                    started: false,
                },
                reader: None,
            })),
            t,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().expect("phase lock")
    }

    /// Bytes arrived: the first byte of a request starts its header deadline.
    fn bytes_read(&self) {
        let mut s = self.lock();
        if let Phase::Waiting { started: false, .. } = s.phase {
            s.phase = Phase::Waiting {
                deadline: Instant::now() + self.t.header,
                started: true,
            };
        }
    }

    /// hyper parsed a complete header and calls the app.
    fn request_started(&self) {
        self.lock().phase = Phase::Busy;
    }

    /// The response body ended: wait for the next request, at most `idle`.
    fn response_done(&self) {
        let reader = {
            let mut s = self.lock();
            s.phase = Phase::Waiting {
                deadline: Instant::now() + self.t.idle,
                started: false,
            };
            s.reader.take()
        };
        if let Some(w) = reader {
            w.wake();
        }
    }

    /// The read deadline now; while busy, remembers who to wake when that changes.
    fn read_deadline(&self, cx: &Context<'_>) -> Option<Instant> {
        let mut s = self.lock();
        match s.phase {
            Phase::Waiting { deadline, .. } => Some(deadline),
            Phase::Busy => {
                s.reader = Some(cx.waker().clone());
                None
            }
        }
    }
}

/// A socket with the connection's deadlines.
pub(crate) struct TimedIo<S> {
    inner: S,
    clock: Clock,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<S> TimedIo<S> {
    fn new(inner: S, clock: Clock) -> Self {
        TimedIo {
            inner,
            clock,
            read_timer: None,
            write_timer: None,
        }
    }

    fn timed_out(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, what.to_string())
    }

    /// Polls the write-progress timer after a write returned Pending.
    fn write_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let idle = self.clock.t.idle;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Self::timed_out("client stopped reading")),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.clock.bytes_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(deadline) = self.clock.read_deadline(cx) else {
                    self.read_timer = None;
                    return Poll::Pending;
                };
                let timer = self
                    .read_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(Self::timed_out(
                        "request header not complete in time, or idle too long",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.write_stalled(cx).map(Err),
            done => {
                self.write_timer = None;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.write_stalled(cx).map(Err),
            done => {
                self.write_timer = None;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.write_stalled(cx).map(Err),
            done => {
                self.write_timer = None;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that tells the clock when it has ended (or was dropped).
struct Tracked {
    inner: Body,
    clock: Option<Clock>,
}

impl Tracked {
    fn done(&mut self) {
        if let Some(c) = self.clock.take() {
            c.response_done();
        }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() {
            self.done();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.done();
    }
}

/// Serves HTTP/1 on one accepted stream until the client leaves, a timer fires, or
/// `graceful` asks the connection to finish its current request.
pub(crate) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    timeouts: Timeouts,
    graceful: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let clock = Clock::new(timeouts);
    let io = hyper_util::rt::TokioIo::new(TimedIo::new(stream, clock.clone()));
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        clock.request_started();
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        let clock = clock.clone();
        async move {
            let Ok(resp) = app.oneshot(req).await;
            Ok::<_, Infallible>(resp.map(|inner| Tracked {
                inner,
                clock: Some(clock),
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(64 * 1024)
        .serve_connection(io, svc);
    if let Err(e) = graceful.watch(conn).await {
        tracing::debug!(client = %peer, error = %e, "HTTP connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn app() -> Router {
        use axum::routing::get;
        Router::new().route("/", get(|| async { "hello" })).route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
    }

    /// A server on a duplex pipe; returns the client end.
    fn start(t: Timeouts) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _keep = graceful;
            serve(server, "192.0.2.7:1234".parse().unwrap(), app(), t, watcher).await;
        });
        client
    }

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    async fn read_response(c: &mut tokio::io::DuplexStream) -> String {
        let mut buf = vec![0u8; 4096];
        let n = c.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// True when the server closed its end (reads return EOF).
    async fn closed(c: &mut tokio::io::DuplexStream) -> bool {
        let mut buf = [0u8; 64];
        matches!(c.read(&mut buf).await, Ok(0) | Err(_))
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_sent_header_is_closed_after_the_header_timeout() {
        let mut c = start(T);
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let t0 = Instant::now();
        assert!(closed(&mut c).await);
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_the_header_timeout() {
        let mut c = start(T);
        let t0 = Instant::now();
        assert!(closed(&mut c).await);
        assert!(t0.elapsed() < Duration::from_secs(11));
    }

    #[tokio::test(start_paused = true)]
    async fn dripping_a_header_does_not_extend_its_deadline() {
        let mut c = start(T);
        let t0 = Instant::now();
        let mut closed_after = None;
        for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n" {
            if c.write_all(&[*b]).await.is_err() {
                closed_after = Some(t0.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let after = closed_after.expect("the server closed the connection mid-header");
        assert!(after <= Duration::from_secs(11), "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn kept_alive_connections_wait_idle_timeout_not_header_timeout() {
        let mut c = start(T);
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut c).await.ends_with("hello"));
        // Idle longer than the header timeout: still open for the next request.
        tokio::time::sleep(Duration::from_secs(30)).await;
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut c).await.ends_with("hello"));
        // Idle past the idle timeout: closed.
        let t0 = Instant::now();
        assert!(closed(&mut c).await);
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(59) && waited <= Duration::from_secs(61),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_handler_is_not_a_slow_header() {
        let t = Timeouts {
            header: Duration::from_secs(1),
            idle: Duration::from_secs(2),
        };
        let mut c = start(t);
        c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut c).await.ends_with("late"));
    }
}
