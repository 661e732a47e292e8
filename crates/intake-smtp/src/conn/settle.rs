//! The driver's other half: carrying out what the session waits for (checks, AUTH,
//! delivery) through the injected [`Effects`](crate::effects::Effects), each under its
//! deadline, and logging and counting each message's outcome.

use std::time::Instant;

use intake_core::{AuthResult, DeliveryReport, Stage};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::timeout;

use super::Connection;
use super::refused::{count_refused, log_due};
use crate::session::{Delivery, Effect, Outcome, Step};

/// What an accepted message counts in.
pub(super) struct AcceptedMetrics {
    messages: metrics::Counter,
    bytes: metrics::Counter,
    deliver_seconds: metrics::Histogram,
}

impl AcceptedMetrics {
    fn new(listener: &str) -> AcceptedMetrics {
        AcceptedMetrics {
            messages: metrics::counter!("intake_smtp_messages_total", "result" => "accepted",
                "reason" => "2.0.0", "listener" => listener.to_string()),
            bytes: metrics::counter!("intake_smtp_received_bytes_total"),
            deliver_seconds: metrics::histogram!("intake_smtp_deliver_seconds"),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// Carries out the session's effects until it gives a step that needs no waiting.
    /// The flag says whether a delivery was attempted (it logs its own outcome).
    pub(super) async fn settle(&mut self, mut step: Step) -> (Step, bool) {
        let mut delivered = false;
        while let Step::Await(effect) = step {
            let outcome = match effect {
                Effect::Check { mut cx, header } => {
                    // Content checks see the message as it will be stored, lent from the
                    // content buffer rather than copied.
                    let lent = (cx.stage == Stage::Data).then(|| {
                        self.content
                            .get()
                            .strip_forged_results(&self.session.config().hostname);
                        let lent = self.content.get().lend(header.as_bytes());
                        cx.content = lent.message.clone();
                        lent
                    });
                    let verdicts = self.services.effects.check(&cx).await;
                    drop(cx);
                    if let Some(lent) = lent {
                        self.content.get().give_back(lent);
                    }
                    Outcome::Checked(verdicts)
                }
                Effect::Deliver(d) => {
                    delivered = true;
                    Outcome::Delivered(Box::pin(self.deliver(d)).await)
                }
                Effect::Authenticate(c) => {
                    let limit = self.session.config().command_timeout;
                    match timeout(limit, self.services.effects.authenticate(&c)).await {
                        Ok(r) => Outcome::Authenticated(r),
                        Err(_) => Outcome::Authenticated(AuthResult::Unavailable),
                    }
                }
            };
            step = self.session.resume(outcome);
        }
        (step, delivered)
    }

    /// Hands a message to the delivery targets under the delivery deadline and logs the
    /// outcome.
    async fn deliver(&mut self, d: Delivery) -> DeliveryReport {
        let started = Instant::now();
        let rcpts = d.envelope.rcpt_to.len();
        let sender = d.envelope.mail_from.clone();
        let id = d.id;
        let handoff = self
            .content
            .get()
            .message(d, &self.session.config().hostname);
        let size = handoff.message.size;
        let effects = &self.services.effects;
        let limit = self.session.config().deliver_timeout;
        let report = match timeout(limit, effects.deliver(&handoff)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(%id, targets = ?effects.targets(), ?limit,
                    "delivery not finished within smtp.deliver_timeout");
                effects.delivery_timed_out(rcpts)
            }
        };
        self.content.get().reuse(handoff.message.raw);
        let accepted = report.rcpts.iter().filter(|o| o.is_accepted()).count();
        if accepted == rcpts {
            tracing::info!(
                %id, client = %self.session.client(), sender = %sender, rcpts, size,
                micros = started.elapsed().as_micros() as u64, outcome = "accepted",
                targets = ?self.services.effects.targets(), "message delivered"
            );
            let listener = &self.session.config().listener;
            let m = self
                .metrics
                .get_or_insert_with(|| Box::new(AcceptedMetrics::new(listener)));
            m.messages.increment(1);
            m.bytes.increment(size);
            m.deliver_seconds.record(started.elapsed());
        } else {
            let outcome = crate::session::final_reply(id, &report);
            if let Some(repeats) = log_due(&outcome) {
                tracing::error!(
                    %id, client = %self.session.client(), sender = %sender, rcpts, accepted, size,
                    outcomes = ?report.rcpts, outcome = %outcome, repeats, "message not delivered"
                );
            }
            count_refused(&outcome, &self.session.config().listener);
        }
        report
    }
}
