//! Operations routes: `/metrics` (Prometheus text, rendered by the recorder the server
//! installed; in `public` and `private` modes it needs the `metrics` scope or a client in
//! `http.metrics_networks`, since it tells how much mail the store holds), `/healthz` (the
//! process answers) and `/readyz` (the store answers and the server is not draining): the
//! probes are open in every mode.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use intake_core::Page;

use crate::AppState;
use crate::access::{Need, Routes};

pub(crate) fn routes() -> Routes<AppState> {
    Routes::new()
        .on(Method::GET, "/metrics", Need::Metrics, metrics)
        .on(Method::GET, "/healthz", Need::Probe, || async { "ok\n" })
        .on(Method::GET, "/readyz", Need::Probe, readyz)
}

async fn metrics(State(state): State<AppState>) -> Response {
    let Some(render) = state.metrics.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "no metrics recorder in this process\n",
        )
            .into_response();
    };
    // Gauges read at scrape time.
    if let Ok(Ok(l)) =
        tokio::time::timeout(Duration::from_secs(2), state.store.list_all(Page::FIRST)).await
    {
        metrics::gauge!("intake_store_messages").set(l.total as f64);
        metrics::gauge!("intake_store_unread_messages").set(l.unread as f64);
    }
    if let Some(bytes) = state.store.size_on_disk() {
        metrics::gauge!("intake_store_bytes").set(bytes as f64);
    }
    // 1 while the store runs with weaker durability than a 250 needs (accepted by the
    // operator), so an alert can say what the log says.
    let weak = state.store.durability_warning().is_some();
    metrics::gauge!("intake_store_durability_weak").set(if weak { 1.0 } else { 0.0 });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        render(),
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    let probe = state.store.list_all(Page::FIRST);
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        // Ready, but say so when acknowledged mail may be lost (the operator accepted a
        // store without durable writes): a probe passes, a person reading it is told.
        Ok(Ok(_)) => match state.store.durability_warning() {
            None => (StatusCode::OK, "ready\n").into_response(),
            Some(w) => (StatusCode::OK, format!("ready\nwarning: {w}\n")).into_response(),
        },
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store too slow\n").into_response(),
    }
}
