//! Group commit for the Redis store: one task takes every queued delivery (up to
//! `store.max_batch`), lingers up to `store.commit_delay` while other sessions are still
//! receiving content, and sends the batch as one `MULTI`/`EXEC` (per message: `SET` of the
//! body, then the filing script). With `appendfsync always`, Redis fsyncs the append-only
//! file before it replies to `EXEC`, so one fsync covers the batch; only then is each
//! caller answered. While one batch commits, the next one queues.

use std::sync::Arc;

use intake_core::{Arrivals, Incoming, StoreError};
use redis::Value;
use tokio::sync::{mpsc, oneshot};

use super::{Inner, encode, unavailable};

/// A delivery waiting for its batch.
pub(crate) type Queued = (
    Box<(Incoming, Vec<String>)>,
    oneshot::Sender<Result<(), StoreError>>,
);

pub(super) async fn run(inner: Arc<Inner>, mut rx: mpsc::Receiver<Queued>, arrivals: Arrivals) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        gather(&inner, &mut rx, &arrivals, &mut batch).await;
        commit(&inner, batch).await;
    }
}

/// Takes what is queued, lingering while sessions are still receiving content.
async fn gather(
    inner: &Inner,
    rx: &mut mpsc::Receiver<Queued>,
    arrivals: &Arrivals,
    batch: &mut Vec<Queued>,
) {
    let deadline = tokio::time::Instant::now() + inner.commit_delay;
    while batch.len() < inner.max_batch {
        match rx.try_recv() {
            Ok(q) => {
                batch.push(q);
                continue;
            }
            Err(mpsc::error::TryRecvError::Disconnected) => return,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        // Everyone who is about to deliver has: commit now.
        if arrivals.pending() <= batch.len() || inner.commit_delay.is_zero() {
            return;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(q)) => batch.push(q),
            Ok(None) | Err(_) => return,
        }
    }
}

async fn commit(inner: &Inner, batch: Vec<Queued>) {
    let mut pipe = redis::pipe();
    pipe.atomic();
    let mut waiting = Vec::with_capacity(batch.len());
    for (job, done) in batch {
        let (msg, mailboxes) = *job;
        let fields = match encode(&msg) {
            Ok(f) => f,
            Err(e) => {
                let _ = done.send(Err(e));
                continue;
            }
        };
        let [sum, doc, head, text] = fields;
        let id = msg.id.to_string();
        pipe.cmd("SET")
            .arg(inner.key(&format!("b:{id}")))
            .arg(&msg.raw[..])
            .ignore();
        pipe.cmd("EVAL")
            .arg(&inner.scripts.deliver_source)
            .arg(0)
            .arg(inner.prefix())
            .arg(&id)
            .arg(sum)
            .arg(doc)
            .arg(head)
            .arg(text)
            .arg(msg.size)
            .arg(msg.received_at)
            .arg(inner.opts.mailbox_cap.unwrap_or(0))
            .arg(&mailboxes);
        waiting.push(done);
    }
    if waiting.is_empty() {
        return;
    }
    let n = waiting.len();
    let mut conn = inner.conn();
    let result: Result<Vec<Value>, StoreError> = inner
        .call("delivery EXEC", pipe.query_async(&mut conn))
        .await;
    let values = match result {
        Ok(v) if v.len() == n => v,
        Ok(v) => {
            let e = format!("Redis answered {} results for {n} deliveries", v.len());
            for done in waiting {
                let _ = done.send(Err(StoreError::Unavailable(e.clone())));
            }
            return;
        }
        Err(e) => {
            if let Some(repeats) = crate::common::WRITE_FAILURES.hit(&e.to_string()) {
                tracing::warn!(error = %e, messages = n, repeats, "Redis store: a delivery batch failed");
            }
            for done in waiting {
                let _ = done.send(Err(StoreError::Unavailable(e.to_string())));
            }
            return;
        }
    };
    for (done, v) in waiting.into_iter().zip(values) {
        let r = match redis::from_redis_value::<(i64, Vec<(String, String, i64)>)>(v) {
            Ok((_, trimmed)) => {
                if !trimmed.is_empty() {
                    tracing::debug!(
                        unfiled = trimmed.len(),
                        "Redis store: mailbox cap (store.redis_mailbox_cap) unfiled old mail"
                    );
                }
                Ok(())
            }
            Err(e) => Err(unavailable(format!("Redis delivery: {e}"))),
        };
        let _ = done.send(r);
    }
}
