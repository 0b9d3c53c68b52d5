//! The writer thread: every write of a store goes through one connection,
//! which commits whatever writes are waiting in one transaction, so that
//! concurrent appends share an fsync.
//!
//! The queue holds writes of every kind behind the object-safe [`Job`],
//! each with its own typed reply, answered only once the transaction
//! holding it has committed (or failed).

use std::iter::Peekable;
use std::sync::Arc;

use rusqlite::{Connection, TransactionBehavior};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::transaction::SqliteTxn;
use crate::store::StoreError;
use crate::store::rules::{self, Write};

/// The most jobs committed in one transaction: enough to absorb a burst of
/// concurrent callers in one fsync, small enough to keep each one's wait
/// short.
pub(super) const MAX_BATCH: usize = 256;

/// Jobs that may wait for the writer before callers wait to enqueue.
pub(super) const QUEUE_CAPACITY: usize = 1024;

/// A write waiting for the writer thread, whatever it answers: the queue
/// holds writes of every kind, each with its own typed reply.
pub(super) trait Job: Send {
    /// Carries the write out in the batch's transaction; what it answers is
    /// sent once the batch has committed (or failed).
    fn run(self: Box<Self>, txn: &mut SqliteTxn<'_>, written_at: OffsetDateTime) -> Box<dyn Ran>;

    /// Answers with `error` without running: the batch's transaction failed
    /// before the job's turn.
    fn fail(self: Box<Self>, error: StoreError);
}

/// A [`Job`] that has run, holding its answer until the batch ends.
pub(super) trait Ran: Send {
    /// Whether the write succeeded, so that its savepoint is kept.
    fn succeeded(&self) -> bool;

    /// Sends the answer: the write's own once the batch has committed, or
    /// `batch`'s error when the batch's transaction failed.
    fn answer(self: Box<Self>, batch: Result<(), StoreError>);
}

/// Where a caller waits for the answer of a write that answers `T`.
pub(super) type Answered<T> = oneshot::Receiver<Result<T, StoreError>>;

/// `write` as a [`Job`], and where its caller waits for the answer.
pub(super) fn queued<W: Write>(write: W) -> (Box<dyn Job>, Answered<W::Output>) {
    let (reply, answer) = oneshot::channel();
    (Box::new(Queued { write, reply }), answer)
}

struct Queued<W: Write> {
    write: W,
    reply: oneshot::Sender<Result<W::Output, StoreError>>,
}

impl<W: Write> Job for Queued<W> {
    fn run(self: Box<Self>, txn: &mut SqliteTxn<'_>, written_at: OffsetDateTime) -> Box<dyn Ran> {
        Box::new(Answer {
            result: rules::run_ready(self.write.run(txn, written_at)),
            reply: self.reply,
        })
    }

    fn fail(self: Box<Self>, error: StoreError) {
        // A caller that stopped waiting needs no answer.
        let _ = self.reply.send(Err(error));
    }
}

struct Answer<T> {
    result: Result<T, StoreError>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send> Ran for Answer<T> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn answer(self: Box<Self>, batch: Result<(), StoreError>) {
        // A caller that stopped waiting needs no answer.
        let _ = self.reply.send(batch.and(self.result));
    }
}

/// The writer thread: takes every job already waiting, commits them together,
/// and answers, until the store closes the queue.
pub(super) fn run_writer(mut connection: Connection, mut queue: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(job) = queue.blocking_recv() {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        write_batch(&mut connection, batch.drain(..));
    }
}

/// Runs a batch in one transaction and answers every job after COMMIT, or
/// every job with the error if the transaction as a whole failed.
pub(super) fn write_batch(
    connection: &mut Connection,
    jobs: impl ExactSizeIterator<Item = Box<dyn Job>>,
) {
    let count = jobs.len();
    let mut waiting = jobs.peekable();
    let mut ran = Vec::with_capacity(count);
    match run_batch(connection, &mut waiting, &mut ran) {
        Ok(()) => {
            for job in ran {
                job.answer(Ok(()));
            }
        }
        Err(error) => {
            tracing::error!(%error, jobs = count, "an SQLite write transaction failed");
            let error = Arc::new(error);
            let failed = || StoreError::backend(BatchFailed(Arc::clone(&error)));
            for job in ran {
                job.answer(Err(failed()));
            }
            for job in waiting {
                job.fail(failed());
            }
        }
    }
}

/// The transaction of a batch failed; no job of it may be acknowledged.
#[derive(Debug, thiserror::Error)]
#[error("the write transaction failed: {0}")]
struct BatchFailed(#[source] Arc<rusqlite::Error>);

/// Runs each job of `waiting` in its own savepoint, so that one that fails
/// is undone alone and gets its own error, moving it to `ran`, then commits
/// once for all.
///
/// `Err` means the transaction itself failed (it could not begin, a
/// savepoint could not be undone, or COMMIT failed) and is rolled back;
/// the jobs it had not come to are still in `waiting`.
fn run_batch(
    connection: &mut Connection,
    waiting: &mut Peekable<impl Iterator<Item = Box<dyn Job>>>,
    ran: &mut Vec<Box<dyn Ran>>,
) -> rusqlite::Result<()> {
    // One clock reading for the batch: its events are written together.
    let written_at = rules::now_micros();
    let mut tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    while waiting.peek().is_some() {
        let savepoint = tx.savepoint()?;
        // Taken only once its savepoint is open, so that a job the batch
        // fails before its turn is still waiting (and is answered).
        let Some(job) = waiting.next() else { break };
        let done = job.run(
            &mut SqliteTxn {
                connection: &savepoint,
            },
            written_at,
        );
        let succeeded = done.succeeded();
        ran.push(done);
        if succeeded {
            savepoint.commit()?;
        } else {
            // Rolls back to the savepoint and releases it. If SQLite already
            // rolled back the whole transaction (a disk error, say), the
            // savepoint is gone, this fails, and so does the batch.
            savepoint.finish()?;
        }
    }
    tx.commit()
}
