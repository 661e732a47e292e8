//! Waiting for input: how long a session may wait (its deadlines, the slowloris clock on a
//! command line), what it holds meanwhile (parking gives back its buffers), and the poll
//! that waits for the socket, the timer and the shutdown at once.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use intake_proto::{Reply, replies};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::sync::WaitForCancellationFuture;

use super::Connection;

/// How long a session may wait for its next command before it parks (gives back its
/// buffers, see `Connection::park`): long enough that a client sending command after
/// command never pays for it, short enough that idle connections hold little.
pub(super) const PARK_AFTER: Duration = Duration::from_secs(1);
/// Buffer room reserved for reading commands: a command line or a pipelined MAIL, RCPT and
/// DATA fit; a longer batch takes another read. Reserved once the client has sent
/// something (see `Connection::fill`): a connection that has only been greeted, or has
/// parked, holds no buffer.
pub(super) const COMMAND_ROOM: usize = 128;
/// Buffer room reserved for reading message content.
const CONTENT_ROOM: usize = 16 * 1024;

/// A wait for input: how long, whether to park on the way, what room to read with,
/// whether a shutdown ends it.
///
/// Kept small: every idle connection's task holds it while it waits.
pub(super) struct Wait {
    /// Milliseconds (rounded up).
    idle_ms: u32,
    park: bool,
    /// Reading message content (a larger buffer), not commands.
    content: bool,
    interruptible: bool,
    /// Set once the wait has parked the session (see [`PARK_AFTER`]).
    parked: bool,
}

impl Wait {
    /// What the wait's timer is first set to: the park, or the whole wait.
    pub(super) fn first_timer(&self) -> Duration {
        if self.park { PARK_AFTER } else { self.idle() }
    }

    fn idle(&self) -> Duration {
        Duration::from_millis(u64::from(self.idle_ms))
    }

    fn room(&self) -> usize {
        if self.content {
            CONTENT_ROOM
        } else {
            COMMAND_ROOM
        }
    }
}

/// How a wait for input ended.
pub(super) enum Waited {
    /// The read returned (0: the client closed the connection).
    Read(std::io::Result<usize>),
    /// Nothing came within the time allowed.
    TimedOut,
    /// The server is shutting down.
    Shutdown,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// How to wait for the next input, or the reply to close with when the session or the
    /// command line in the buffer has run out of time.
    pub(super) fn next_wait(&mut self, deadline: Instant) -> Result<Wait, Reply> {
        let in_content = self.session.reading_content();
        let idle = if in_content {
            self.session.config().data_timeout
        } else {
            self.session.config().command_timeout
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(replies::SESSION_TOO_LONG);
        }
        let mut idle = idle.min(left);
        // A command line must be complete within the command timeout however slowly it
        // trickles in (slowloris): the clock starts at its first byte.
        if in_content || self.inbuf.is_empty() {
            self.line_started = None;
        } else {
            let started = *self.line_started.get_or_insert_with(Instant::now);
            let line_left = (started + self.session.config().command_timeout)
                .saturating_duration_since(Instant::now());
            if line_left.is_zero() {
                return Err(replies::TIMEOUT);
            }
            idle = idle.min(line_left);
        }
        // Idle sessions hold little: a small buffer for commands, a larger one for
        // content. Between commands, a session quiet for PARK_AFTER gives even those
        // back until its client speaks again (`park`): most of an idle connection's
        // memory otherwise.
        Ok(Wait {
            idle_ms: u32::try_from(idle.as_micros().div_ceil(1000)).unwrap_or(u32::MAX),
            park: !in_content && self.inbuf.is_empty() && idle > PARK_AFTER,
            content: in_content,
            // Between transactions a shutdown ends the session at once; inside one we let
            // the client finish (the listener bounds how long).
            interruptible: !in_content && !self.session.in_transaction(),
            parked: false,
        })
    }

    /// Polls a wait for more input: up to `wait.idle()` (parking after [`PARK_AFTER`] if
    /// `wait.park`), reading with `wait.room()` reserved; the shutdown ends it too if
    /// `wait.interruptible`. `sleep` is the wait's timer.
    ///
    /// A poll function rather than a `select!` of a `timeout`: every idle connection's
    /// task holds this wait, and this way it holds the timer, the shutdown waiter and a
    /// few references, nothing more.
    pub(super) fn poll_input(
        &mut self,
        cx: &mut Context<'_>,
        wait: &mut Wait,
        mut sleep: Pin<&mut tokio::time::Sleep>,
        mut cancelled: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Poll<Waited> {
        loop {
            if wait.interruptible && cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Waited::Shutdown);
            }
            if let Poll::Ready(r) = self.poll_fill(cx, wait.room()) {
                return Poll::Ready(Waited::Read(r));
            }
            ready!(sleep.as_mut().poll(cx));
            if !wait.park || wait.parked {
                return Poll::Ready(Waited::TimedOut);
            }
            self.park();
            wait.parked = true;
            sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + (wait.idle() - PARK_AFTER));
        }
    }

    /// Gives back the buffers a session waiting for its next command does not need: the
    /// command buffer (a new one is reserved once the client speaks again, see `fill`), the
    /// reply buffer and an empty content buffer.
    pub(super) fn park(&mut self) {
        self.inbuf = BytesMut::new();
        self.out = Vec::new();
        if self.content.is_empty() {
            self.content.0 = None;
        }
    }

    /// Reads more input into the command or content buffer, with `room` reserved first.
    /// A buffer with nothing allocated (a new session's, a parked one's) is not reserved
    /// until input has arrived: a zero-length read waits for it (on a socket, tokio waits
    /// until it is readable; on a TLS stream, until there is plaintext), so a connection
    /// whose client stays silent holds no buffer. That costs one more system call when a
    /// session starts or wakes from parking, none per command.
    pub(super) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        room: usize,
    ) -> Poll<std::io::Result<usize>> {
        if self.inbuf.capacity() == 0 {
            // Any error or end of stream shows in the read that follows.
            let _ = ready!(pin!(self.io.read(&mut [])).poll(cx));
        }
        self.inbuf.reserve(room);
        pin!(self.io.read_buf(&mut self.inbuf)).poll(cx)
    }

    /// [`Connection::poll_fill`] as a future.
    pub(super) fn fill(
        &mut self,
        room: usize,
    ) -> impl Future<Output = std::io::Result<usize>> + '_ {
        poll_fn(move |cx| self.poll_fill(cx, room))
    }
}
