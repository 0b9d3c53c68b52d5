//! The writer thread: every write of a store goes through one connection,
//! which commits whatever writes are waiting in one transaction, so that
//! concurrent appends share an fsync.
//!
//! The queue holds writes of every kind behind the object-safe [`Job`],
//! each with its own typed reply, answered only once the transaction
//! holding it has committed (or failed), and, last, the store's
//! [`Request::Close`].

use std::iter::Peekable;
use std::sync::Arc;

use rusqlite::{Connection, TransactionBehavior};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::transaction::SqliteTxn;
use super::{outage_of, store_closed};
use crate::store::rules::{self, Write};
use crate::store::{Outage, StoreError};

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

    /// The outage the write met, if it failed on one: SQLite may then have
    /// rolled back the whole transaction, which fails the batch with an
    /// error of its own that no longer says why.
    fn outage(&self) -> Option<Outage>;

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

    fn outage(&self) -> Option<Outage> {
        match &self.result {
            Err(StoreError::Unavailable { outage, .. }) => Some(*outage),
            _ => None,
        }
    }

    fn answer(self: Box<Self>, batch: Result<(), StoreError>) {
        // A caller that stopped waiting needs no answer.
        let _ = self.reply.send(batch.and(self.result));
    }
}

/// What the writer thread is asked to do.
pub(super) enum Request {
    /// Run a write.
    Write(Box<dyn Job>),
    /// Finish the writes asked for before, checkpoint the log into the
    /// database file, close the file, and answer; refuse every write after.
    Close(oneshot::Sender<rusqlite::Result<()>>),
}

/// The writer thread: takes every job already waiting, commits them together,
/// and answers, until the store closes the queue or asks it to close.
pub(super) fn run_writer(mut connection: Connection, mut queue: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut closing = None;
    while let Some(request) = queue.blocking_recv() {
        let mut next = Some(request);
        while let Some(request) = next.take() {
            match request {
                Request::Write(job) => batch.push(job),
                Request::Close(reply) => {
                    closing = Some(reply);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            write_batch(&mut connection, batch.drain(..));
        }
        if let Some(reply) = closing {
            return close(connection, queue, reply);
        }
    }
}

/// Refuses whatever was queued after the close, then checkpoints the log
/// into the database file (synced whatever `synchronous` says, and the
/// log truncated) and closes the file, so that the file alone holds every
/// committed write once `reply` is answered.
fn close(
    connection: Connection,
    mut queue: mpsc::Receiver<Request>,
    reply: oneshot::Sender<rusqlite::Result<()>>,
) {
    queue.close();
    while let Ok(request) = queue.try_recv() {
        match request {
            Request::Write(job) => job.fail(store_closed()),
            Request::Close(again) => {
                let _ = again.send(Ok(()));
            }
        }
    }
    let closed = checkpoint(&connection).and_then(|()| connection.close().map_err(|(_, e)| e));
    // A caller that stopped waiting needs no answer.
    let _ = reply.send(closed);
}

/// Moves every committed page of the log into the database file and
/// empties the log. A reader still open keeps part of the log in use; that
/// part stays in the log, committed all the same.
fn checkpoint(connection: &Connection) -> rusqlite::Result<()> {
    let (busy, log, moved): (i64, i64, i64) =
        connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    if busy != 0 {
        tracing::warn!(
            log,
            moved,
            "a reader kept part of the SQLite log from the checkpoint"
        );
    }
    Ok(())
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
            let outage = outage_of(&error).or_else(|| ran.iter().find_map(|job| job.outage()));
            let error = Arc::new(error);
            let failed = || {
                let failed = BatchFailed(Arc::clone(&error));
                match outage {
                    Some(outage) => StoreError::unavailable(outage, failed),
                    None => StoreError::backend(failed),
                }
            };
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
