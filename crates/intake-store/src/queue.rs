//! The way into an engine's group-commit writer, shared by every engine: a channel that a
//! delivery clones a sender of, and that `close` takes away so the writer drains and ends.

use std::sync::Mutex;

use intake_core::StoreError;
use tokio::sync::mpsc;

/// The sending side of a writer's queue; empty once the store is closed (or never had a
/// writer: a read-only store).
pub(crate) struct WriterQueue<J>(Mutex<Option<mpsc::Sender<J>>>);

impl<J> WriterQueue<J> {
    /// A queue into the writer that receives from `tx`, or none.
    pub(crate) fn new(tx: Option<mpsc::Sender<J>>) -> WriterQueue<J> {
        WriterQueue(Mutex::new(tx))
    }

    /// A sender for one job; [`StoreError::Closed`] once the store is closed.
    pub(crate) fn sender(&self) -> Result<mpsc::Sender<J>, StoreError> {
        let tx = self.0.lock().expect("writer queue").clone();
        tx.ok_or(StoreError::Closed)
    }

    /// Drops the queue's sender: the writer ends once the jobs already sent are done.
    pub(crate) fn close(&self) {
        drop(self.0.lock().expect("writer queue").take());
    }
}
