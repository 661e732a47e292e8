//! How a message refused at the end of its content is logged and counted: every 5xx, and
//! 4xx deferrals in summary while one cause fails them all.

use std::time::Duration;

use intake_core::net::Repeated;
use intake_proto::Reply;

/// Messages deferred (4xx) with the same reply: while a downstream, the store or a check
/// is down every message fails alike, so the log gets the first, then one line per ten
/// seconds with the number (`repeats`). The metrics count each.
static DEFERRALS: Repeated = Repeated::new(Duration::from_secs(10));

/// Whether the line about a message refused with `r` is due, and how many refusals it
/// covers: every 5xx (a decision about that message), 4xx summarized by [`DEFERRALS`].
pub(super) fn log_due(r: &Reply) -> Option<u64> {
    if r.code >= 500 {
        Some(1)
    } else {
        DEFERRALS.hit(&r.to_string())
    }
}

/// Counts a message refused at the end of its content: 5xx rejected, 4xx deferred, by its
/// enhanced status code and listener.
pub(super) fn count_refused(r: &Reply, listener: &str) {
    let result = if r.code >= 500 {
        "rejected"
    } else {
        "deferred"
    };
    let reason = r
        .status
        .map(|s| s.to_string())
        .unwrap_or_else(|| r.code.to_string());
    metrics::counter!("intake_smtp_messages_total", "result" => result, "reason" => reason,
        "listener" => listener.to_string())
    .increment(1);
}
