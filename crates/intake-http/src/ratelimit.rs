//! Per-client rate limits on the API (GCRA, keyed by client IP): a script that hammers a
//! mailbox gets 429 with `Retry-After`, everyone else is served. One limiter per HTTP state,
//! so a client has one budget across the main API and the Mailpit listener.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// A per-client rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed in a burst.
    pub burst: u32,
}

pub(crate) type Limiter = Arc<DefaultKeyedRateLimiter<IpAddr>>;

async fn check(State(limiter): State<Limiter>, req: Request, next: Next) -> Response {
    let ip = crate::slots::client_ip(req.extensions());
    match limiter.check_key(&ip) {
        Ok(()) => next.run(req).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited(wait.as_secs().max(1)).into_response()
        }
    }
}

/// The limiter for `rl`.
pub(crate) fn limiter(rl: RateLimit) -> Limiter {
    let per_second = std::num::NonZeroU32::new(rl.per_second.max(1)).expect("non-zero");
    let burst = std::num::NonZeroU32::new(rl.burst.max(1)).expect("non-zero");
    keyed(Quota::per_second(per_second).allow_burst(burst))
}

/// Wraps routes with the limiter (when one is configured).
pub(crate) fn layer(routes: axum::Router, limiter: &Option<Limiter>) -> axum::Router {
    match limiter {
        Some(l) => routes.layer(middleware::from_fn_with_state(l.clone(), check)),
        None => routes,
    }
}

/// A limiter keyed by client IP that forgets idle clients now and then, so that its key map
/// stays small (the timer ends with the limiter).
fn keyed(quota: Quota) -> Limiter {
    let limiter: Limiter = Arc::new(RateLimiter::keyed(quota));
    let weak = Arc::downgrade(&limiter);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Some(l) = weak.upgrade() else { break };
            l.retain_recent();
        }
    });
    limiter
}
