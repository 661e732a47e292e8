//! Log output: tracing to stderr through a shared buffer that a background thread writes out
//! every 100 ms (or at once when 64 KiB have accumulated).
//!
//! Intake logs one line per message. At ten thousand messages a second a `write(2)` per line
//! is a measurable share of the server's CPU; batching makes it a few writes a second. A line
//! reaches stderr at most 100 ms after it was logged; [`LogFlusher`] writes the rest on exit.

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogFormat, Settings};

const FLUSH_AT: usize = 64 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(100);

#[derive(Clone, Default)]
struct Batched {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl Batched {
    fn write_out(buf: &mut Vec<u8>) {
        if !buf.is_empty() {
            let _ = std::io::stderr().lock().write_all(buf);
            buf.clear();
        }
    }
}

/// Appends one event to the shared buffer.
struct Guard<'a>(MutexGuard<'a, Vec<u8>>);

impl Write for Guard<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if self.0.len() >= FLUSH_AT {
            Batched::write_out(&mut self.0);
        }
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Guard<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        Guard(self.buf.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Writes out what is buffered when dropped (keep it until the end of `main`).
pub struct LogFlusher {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl Drop for LogFlusher {
    fn drop(&mut self) {
        let mut b = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        Batched::write_out(&mut b);
    }
}

/// Installs the global subscriber for `intake serve`.
pub fn init(settings: &Settings) -> LogFlusher {
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(&settings.log_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let batched = Batched::default();
    let buf = batched.buf.clone();
    let _ = std::thread::Builder::new()
        .name("intake-log".into())
        .spawn({
            let buf = buf.clone();
            move || {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    // Take the bytes under the lock, write them without it.
                    let mut out =
                        std::mem::take(&mut *buf.lock().unwrap_or_else(|e| e.into_inner()));
                    Batched::write_out(&mut out);
                }
            }
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(batched);
    match settings.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    LogFlusher { buf }
}
