//! Group commit: the appends of events that wait together commit in one
//! transaction.
//!
//! Appends of events do not each take a transaction: they queue, and one
//! task of the store commits every append already waiting in one
//! transaction, their rules run side by side on its connection, so that a
//! batch costs the round trips and the WAL flush of one append. A batch
//! takes one append per stream; the others wait for the next. Under the
//! lock nothing else appends, so an append in a batch can only collide with
//! another of the same batch (the same command or event id), whose writes
//! it does not see: both write, and a unique constraint fails. Any failed
//! statement aborts the batch's transaction, nothing of it is acknowledged,
//! and each of its appends then runs in a transaction of its own, to get
//! its own outcome.

use std::collections::{HashSet, VecDeque};

use deadpool_postgres::Pool;
use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};

use super::transaction::{Mode, PgTxn, connection, transact};
use crate::store::rules::{self, Append, Write};
use crate::store::{AppendOutcome, StoreError};

/// The most appends one transaction commits together.
pub(super) const MAX_BATCH: usize = 64;

/// An append waiting for its batch, and where its caller waits for the
/// answer.
pub(super) struct Job {
    pub(super) append: Append,
    pub(super) reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// Commits the appends queued on `jobs`, every one already waiting
/// together, a batch at a time, until the store closes the queue.
///
/// A batch takes one append per stream, in the order they came: two would
/// read the same head, and the later would fail the batch. The others wait
/// for the next batch. A batch whose transaction fails as a whole (see
/// [`write_batch`]) has committed nothing; each of its appends then runs on
/// its own, so that each gets its own outcome.
pub(super) async fn commit_appends(pool: Pool, mut jobs: mpsc::Receiver<Job>) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match jobs.recv().await {
                Some(job) => waiting.push_back(job),
                None => return,
            }
        }
        while waiting.len() < MAX_BATCH
            && let Ok(job) = jobs.try_recv()
        {
            waiting.push_back(job);
        }
        let mut streams = HashSet::new();
        let (mut appends, mut replies) = (Vec::new(), Vec::new());
        for job in std::mem::take(&mut waiting) {
            let Append(request) = &job.append;
            if appends.len() < MAX_BATCH && streams.insert(request.stream.clone()) {
                appends.push(job.append);
                replies.push(job.reply);
            } else {
                waiting.push_back(job);
            }
        }
        let results = match write_batch(&pool, &appends).await {
            Ok(results) => results,
            Err(error) => {
                tracing::debug!(%error, appends = appends.len(), "a batch of appends failed; running them one by one");
                join_all(appends.iter().map(|append| transact(&pool, append))).await
            }
        };
        for (reply, result) in replies.into_iter().zip(results) {
            // A caller that stopped waiting needs no answer.
            let _ = reply.send(result);
        }
    }
}

/// Runs `appends` side by side in one serial transaction on one connection,
/// and commits them together: one snapshot taken under the append lock, one
/// round trip for all their reads, one for all their writes, one `COMMIT`
/// and one WAL flush.
///
/// The rules of each run on the transaction as if alone, and their writes
/// are held back until `COMMIT`, so none sees another's: two that write to
/// the same stream, or the same command or event id, both write it, and a
/// unique constraint fails the batch. `Err` means the transaction failed as
/// a whole (an append's statement failed, which aborts it, or `COMMIT` did)
/// and nothing of it is committed; an append's refusal, which writes
/// nothing, is its own result.
async fn write_batch(
    pool: &Pool,
    appends: &[Append],
) -> Result<Vec<Result<AppendOutcome, StoreError>>, StoreError> {
    let written_at = rules::now_micros();
    let client = connection(pool).await?;
    let mut batch = PgTxn::new(&client, Mode::Serial);
    let mut members: Vec<PgTxn> = appends.iter().map(|_| PgTxn::member_of(&batch)).collect();
    let runs = appends
        .iter()
        .zip(&mut members)
        .map(|(append, txn)| append.run(txn, written_at));
    // `BEGIN` and the lock go first, then every append's reads.
    let mut results = batch.send(join_all(runs)).await?;
    let failed = results.iter().position(|result| {
        matches!(
            result,
            Err(StoreError::Backend(_) | StoreError::Unavailable { .. })
        )
    });
    if let Some(failed) = failed
        && let Err(error) = results.swap_remove(failed)
    {
        return Err(error);
    }
    // A refusal comes before any write, but were a write held by an append
    // that then failed, it must not commit.
    for (member, result) in members.into_iter().zip(&results) {
        if result.is_ok() {
            batch.adopt(member);
        }
    }
    batch.commit().await?;
    Ok(results)
}
