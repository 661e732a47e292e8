//! The process's metrics recorder (Prometheus text format, from the `metrics` ecosystem):
//! installed once, described once, rendered by the HTTP side's `/metrics`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often histogram samples are folded into their buckets. The recorder keeps every
/// recorded sample until then (or until a scrape renders them), so a server nobody scrapes
/// would otherwise hold the timing of every delivery and commit for ever.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The renderer for `/metrics`; None when another recorder was installed first.
pub fn render() -> Option<intake_http::MetricsRender> {
    let handle = HANDLE.get_or_init(|| {
        let h = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
            .and_then(|b| b.install_recorder());
        match h {
            Ok(h) => {
                describe();
                keep_up(h.clone(), UPKEEP_EVERY);
                Some(h)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no metrics recorder: /metrics is off");
                None
            }
        }
    });
    let h = handle.clone()?;
    Some(Arc::new(move || h.render()))
}

/// Folds recorded histogram samples into their buckets every `every`, on the runtime that
/// installed the recorder (the server's).
fn keep_up(h: PrometheusHandle, every: Duration) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    h.run_upkeep();
                }
            });
        }
        Err(_) => tracing::warn!(
            "metrics: no runtime to fold histogram samples; they are folded at each scrape"
        ),
    }
}

fn describe() {
    describe_counter!(
        "intake_smtp_connections_total",
        "SMTP connections accepted by the kernel"
    );
    describe_counter!(
        "intake_smtp_connections_refused_total",
        "SMTP connections refused at once, by reason (limit, client_limit)"
    );
    describe_gauge!("intake_smtp_connections_open", "SMTP sessions open now");
    describe_counter!(
        "intake_config_reloads_total",
        "SIGHUP reloads by result: applied, or refused (the old configuration stays)"
    );
    describe_counter!(
        "intake_smtp_messages_total",
        "Messages by result: accepted (250, durable), rejected (5xx), deferred (4xx)"
    );
    describe_counter!(
        "intake_smtp_received_bytes_total",
        Unit::Bytes,
        "Octets of accepted messages"
    );
    describe_histogram!(
        "intake_smtp_deliver_seconds",
        Unit::Seconds,
        "End of data to durable (the wait before the 250)"
    );
    describe_histogram!(
        "intake_store_commit_batch_size",
        Unit::Count,
        "Messages per group commit"
    );
    describe_histogram!(
        "intake_store_commit_seconds",
        Unit::Seconds,
        "Time to write and commit one batch"
    );
    describe_counter!(
        "intake_smtp_tls_sessions_total",
        "TLS handshakes completed (STARTTLS and implicit TLS), by protocol version"
    );
    describe_counter!(
        "intake_smtp_tls_failures_total",
        "TLS handshakes that failed"
    );
    describe_gauge!(
        "intake_store_messages",
        "Messages stored (read at scrape time)"
    );
    describe_gauge!("intake_store_unread_messages", "Unread messages stored");
    describe_gauge!(
        "intake_store_durability_weak",
        "1 when the store may lose acknowledged mail (Redis without appendfsync always, accepted by store.redis_accept_weak_durability), else 0"
    );
    describe_gauge!(
        "intake_store_bytes",
        Unit::Bytes,
        "Bytes the store takes on disk (read at scrape time)"
    );
    describe_histogram!(
        "intake_check_seconds",
        Unit::Seconds,
        "Time one policy check took, by check"
    );
    describe_counter!(
        "intake_check_verdicts_total",
        "Policy verdicts by check and verdict (pass, tag, defer, reject)"
    );
    describe_counter!("intake_http_connections_total", "HTTP connections accepted");
    describe_counter!(
        "intake_http_connections_refused_total",
        "HTTP connections refused at once, by reason (limit, client_limit)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The upkeep folds samples into the histogram without losing any: a scrape after it
    /// counts every sample recorded before it, and the ones recorded after.
    #[tokio::test]
    async fn upkeep_folds_histogram_samples_without_losing_them() {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.001, 0.01])
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        let record = |n: usize, v: f64| {
            metrics::with_local_recorder(&recorder, || {
                for _ in 0..n {
                    metrics::histogram!("upkeep_test_seconds").record(v);
                }
            })
        };
        record(1000, 0.0005);
        let every = Duration::from_millis(20);
        keep_up(handle.clone(), every);
        tokio::time::sleep(every * 5).await;
        record(10, 0.005);
        tokio::time::sleep(every * 5).await;
        let text = handle.render();
        assert!(
            text.contains("upkeep_test_seconds_bucket{le=\"0.001\"} 1000"),
            "{text}"
        );
        assert!(
            text.contains("upkeep_test_seconds_bucket{le=\"0.01\"} 1010"),
            "{text}"
        );
        assert!(text.contains("upkeep_test_seconds_count 1010"), "{text}");
    }
}
