//! Log output: tracing to stderr through a shared buffer that a background thread writes out
//! every 100 ms, or at once when 64 KiB have accumulated.
//!
//! Intake logs one line per message. At ten thousand messages a second a `write(2)` per line
//! is a measurable share of the server's CPU; batching makes it a few writes a second. The
//! writes are the log thread's: a runtime worker only appends to the buffer (and wakes the
//! thread when it is full), so a slow stderr (a file on a busy disk, a pipe) does not stall
//! SMTP sessions. Only when the thread falls far behind ([`HARD_LIMIT`]) does the logging
//! worker write itself, so that memory stays bounded and no line is lost. A line reaches
//! stderr at most 100 ms after it was logged; [`LogFlusher`] writes the rest on exit.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogFormat, Settings};

const FLUSH_AT: usize = 64 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Buffered output past which the logging thread itself writes (the log thread is stuck).
const HARD_LIMIT: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct Shared {
    buf: Mutex<Vec<u8>>,
    /// Signalled when the buffer reaches [`FLUSH_AT`].
    full: Condvar,
}

#[derive(Clone, Default)]
struct Batched(Arc<Shared>);

impl Batched {
    fn write_out(buf: &mut Vec<u8>) {
        if !buf.is_empty() {
            let _ = std::io::stderr().lock().write_all(buf);
            buf.clear();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.0.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The log thread: waits for a full buffer or the period, swaps in its empty spare
    /// buffer (no regrowth from nothing each period) and writes the full one unlocked.
    fn run(&self) {
        let mut spare = Vec::with_capacity(FLUSH_AT * 2);
        loop {
            let buf = self.lock();
            let (mut buf, _) = self
                .0
                .full
                .wait_timeout_while(buf, FLUSH_EVERY, |b| b.len() < FLUSH_AT)
                .unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut *buf, &mut spare);
            drop(buf);
            Batched::write_out(&mut spare);
            if spare.capacity() > HARD_LIMIT {
                spare = Vec::with_capacity(FLUSH_AT * 2);
            }
        }
    }
}

/// Appends one event to the shared buffer.
struct Guard<'a> {
    buf: MutexGuard<'a, Vec<u8>>,
    shared: &'a Shared,
}

impl Write for Guard<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let len = self.buf.len();
        if len >= HARD_LIMIT {
            Batched::write_out(&mut self.buf);
        } else if len >= FLUSH_AT {
            self.shared.full.notify_one();
        }
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Guard<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        Guard {
            buf: self.lock(),
            shared: &self.0,
        }
    }
}

/// Writes out what is buffered when dropped (keep it until the end of `main`).
pub struct LogFlusher {
    batched: Batched,
}

impl Drop for LogFlusher {
    fn drop(&mut self) {
        Batched::write_out(&mut self.batched.lock());
    }
}

/// Installs the global subscriber for `intake serve`.
pub fn init(settings: &Settings) -> LogFlusher {
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(&settings.log_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let batched = Batched::default();
    let _ = std::thread::Builder::new()
        .name("intake-log".into())
        .spawn({
            let batched = batched.clone();
            move || batched.run()
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(batched.clone());
    match settings.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    LogFlusher { batched }
}
