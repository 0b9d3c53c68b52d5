//! The transaction a write runs in ([`PgTxn`], with the rules' primitives
//! on it), and running a write again when it loses a race ([`transact`]).
//!
//! # Transactions
//!
//! Every write runs the rules in a `REPEATABLE READ` transaction: all their
//! reads see one snapshot, so they decide as if they ran alone at that
//! instant. Unique constraints (`(stream, sequence)`, `event_id`,
//! `command_id`) and the upsert of the stream's row make its writes fail if
//! a concurrent transaction committed something those reads did not see, so
//! a decision on stale reads is never committed. A transaction that failed
//! that way lost a race; it is run again from scratch, and the rules decide
//! anew on what the winner committed (a conflict, the original outcome of a
//! retried append, the recorded command). A refusal writes nothing, so a
//! decision on one snapshot is always one a serial execution could make.
//!
//! A write that appends events takes the append lock (see
//! [`super::positions`]) *before* its snapshot, so no other append can commit between its reads and its
//! writes: it cannot lose to an append, only to a concurrent record of the
//! same command id, after which the record exists and the next attempt
//! returns it. Other writes (rejections, documents, checkpoints) are
//! optimistic: they take the lock only if they write outbox rows, and a
//! repeat attempt takes it first. So no write loses more than one attempt
//! to the same race, never a livelock.
//!
//! # Round trips
//!
//! Statements that do not need each other's answers go to the server
//! together, in one round trip (see `PgTxn`), and writes whose answers
//! nobody needs are held back and sent with the next statement. So an
//! append of events costs two round trips: `BEGIN` with the append lock,
//! the reads the rules decide on, and the last position handed out; then
//! the events (numbered and placed by the host, which the lock makes safe),
//! the moves of their streams, their outbox rows, the command record, the
//! change signals and `COMMIT`. A batch costs the same two: every append's
//! reads in the first, all their writes, one statement of each kind, with
//! `COMMIT` in the second. A refusal costs the first round trip alone, and
//! its `ROLLBACK` is not waited for.
//!
//! The server still runs the statements one after another, in the order
//! sent, and the first that fails aborts the transaction, so sending them
//! together changes no outcome. In particular events or a command record
//! that a concurrent transaction committed first fail the last round trip:
//! the server answers `COMMIT` by rolling back, and the write is reported
//! as a lost race (and run again), never acknowledged.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Pool};
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};
use uuid::Uuid;

use super::error::{lost_race, pg_error, pool_error};
use super::event_store::{
    SELECT_COMMAND_RECORD, SELECT_STREAM_SEQUENCE, command_record, stream_sequence,
};
use super::held::{Held, HeldEvents, HeldPairs, INSERT_COMMANDS, INSERT_EVENTS};
use super::outbox;
use super::positions::{Positions, SELECT_LAST_POSITION, last_position};
use crate::model::{EventContext, NewEvent, NotificationKind, StreamId};
use crate::store::outbox::{Added, DeadLetter, Document, Pruned};
use crate::store::rules::{self, AppendReads, StoreTxn, StoredEventId, Write};
use crate::store::sql::{select_event_ids, sql_bound, stored_event_id, to_json, to_sql_int};
use crate::store::{AppendedEvent, CommandRecord, StoreError};

/// The statement of [`LOCK_APPENDS`], for the statements that include it.
macro_rules! lock_appends {
    () => {
        "LOCK TABLE append_lock IN EXCLUSIVE MODE"
    };
}

/// Takes the lock that position assignment needs. Not a query, so in a
/// `REPEATABLE READ` transaction it does not fix the snapshot: taken first,
/// it makes the snapshot newer than every committed append.
const LOCK_APPENDS: &str = lock_appends!();

/// Starts a write transaction. `REPEATABLE READ`: the rules' reads share one
/// snapshot (see the module documentation).
const BEGIN: &str = "START TRANSACTION ISOLATION LEVEL REPEATABLE READ";

/// Starts a write transaction of [`Mode::Serial`]: [`BEGIN`], then the
/// append lock before anything fixes the snapshot. One simple query, so that
/// it takes no round trip of its own: the statements sent after it in the
/// same round trip run only once the lock is granted.
const BEGIN_SERIAL: &str = concat!(
    "START TRANSACTION ISOLATION LEVEL REPEATABLE READ; ",
    lock_appends!()
);

/// How many times a write runs before a lost race is reported as a backend
/// error. The second attempt holds the append lock throughout (see the
/// module documentation), so more than three means something else is wrong.
const WRITE_ATTEMPTS: u32 = 4;

/// Runs `write` in a transaction of its own until it does not lose a race,
/// at most [`WRITE_ATTEMPTS`] times; every attempt is serial but the first
/// of a write that appends no events, which is optimistic. A write that
/// appends events takes the append lock before its reads, to hand out
/// positions itself.
pub(super) async fn transact<W: Write>(pool: &Pool, write: &W) -> Result<W::Output, StoreError> {
    let mut mode = if write.adds().events {
        Mode::Serial
    } else {
        Mode::Optimistic
    };
    let mut attempt = 1;
    loop {
        match transact_once(pool, write, mode).await {
            Err(error) if lost_race(&error) && attempt < WRITE_ATTEMPTS => {
                tracing::debug!(%error, attempt, "a write lost a race; running it again");
                mode = Mode::Serial;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// A connection from `pool`, for a transaction or a read.
pub(super) async fn connection(pool: &Pool) -> Result<deadpool_postgres::Client, StoreError> {
    pool.get().await.map_err(pool_error)
}

/// Runs `write` in one transaction and commits it if the rules accept it.
/// A refusal or an error rolls back (dropping an unfinished [`PgTxn`]
/// does).
async fn transact_once<W: Write>(
    pool: &Pool,
    write: &W,
    mode: Mode,
) -> Result<W::Output, StoreError> {
    let written_at = rules::now_micros();
    let client = connection(pool).await?;
    let mut txn = PgTxn::new(&client, mode);
    let done = write.run(&mut txn, written_at).await?;
    txn.commit().await?;
    Ok(done)
}

/// How a write transaction takes the append lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// When it first writes outbox rows, if it does: for writes that append
    /// no events, whose reads then run concurrently with appends.
    Optimistic,
    /// Before its snapshot: no other append commits while it runs.
    Serial,
}

/// Where a [`PgTxn`] stands in its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnState {
    /// Nothing sent yet: `BEGIN` goes with the first statement, and takes
    /// the append lock in [`Mode::Serial`].
    Unbegun(Mode),
    /// `BEGIN` was sent, so the transaction must end: this value commits
    /// it, or rolls it back when dropped.
    Open {
        /// Whether it holds `append_lock` (or will, once what it sent has
        /// run).
        locked: bool,
    },
    /// One append's part of a batch's transaction, which the batch began
    /// under the append lock and ends itself: this value hands what it
    /// holds to the batch ([`PgTxn::adopt`]).
    Member,
    /// `COMMIT` was answered: nothing is left to roll back.
    Finished,
}

impl TxnState {
    /// Whether the transaction holds `append_lock`, or will once what it
    /// sent (or the `BEGIN` it will send) has run.
    fn locked(self) -> bool {
        match self {
            TxnState::Unbegun(mode) => mode == Mode::Serial,
            TxnState::Open { locked } => locked,
            TxnState::Member => true,
            TxnState::Finished => false,
        }
    }
}

/// The write primitives of [`rules`] on one transaction, which it begins,
/// commits and (when dropped unfinished) rolls back itself.
///
/// It saves round trips by sending statements together: tokio-postgres
/// sends a request when its future is first polled and `join!` first polls
/// its futures in the order written, so statements joined go to the server
/// in that order, in one round trip, and the server runs each only after the
/// one before. `BEGIN` is sent with the first statement of the transaction,
/// and the writes whose answers nobody needs (events, outbox rows, command
/// records: [`Held`]) with the next statement or `COMMIT`, never alone (see
/// [`PgTxn::send`]). Only prepared statements and simple queries may be
/// sent this way: a statement prepared on the spot would wait for the
/// server before being sent, behind the ones that should follow it.
pub(super) struct PgTxn<'c> {
    client: &'c ClientWrapper,
    state: TxnState,
    /// Whether it added events or outbox rows, which projection
    /// propagation and dispatchers must hear of.
    added: Added,
    /// The event positions it hands out (shared with the batch it is a
    /// member of).
    positions: Arc<Positions>,
    /// Writes not sent yet, sent with the next statement.
    held: Held,
}

impl<'c> PgTxn<'c> {
    /// A transaction on `client`, begun with its first statement.
    pub(super) fn new(client: &'c ClientWrapper, mode: Mode) -> Self {
        PgTxn {
            client,
            state: TxnState::Unbegun(mode),
            added: Added::default(),
            positions: Arc::default(),
            held: Held::default(),
        }
    }

    /// A transaction for one append of `batch`: it sends no `BEGIN` (the
    /// batch has), holds the append lock (the batch is serial), and leaves
    /// the end of the transaction to the batch.
    pub(super) fn member_of(batch: &PgTxn<'c>) -> Self {
        PgTxn {
            client: batch.client,
            state: TxnState::Member,
            added: Added::default(),
            positions: Arc::clone(&batch.positions),
            held: Held::default(),
        }
    }

    /// Takes over what `member` holds for the end of the transaction: the
    /// writes it held back, and what it added.
    pub(super) fn adopt(&mut self, mut member: PgTxn<'c>) {
        self.held.extend(std::mem::take(&mut member.held));
        self.added.events |= member.added.events;
        self.added.outbox_rows |= member.added.outbox_rows;
    }

    /// Sends what the transaction owes the server before its next statement
    /// (`BEGIN`, with the append lock in serial mode, unless it has begun;
    /// the writes it held back), then `statements`, all in one round trip,
    /// and waits for every answer.
    ///
    /// `statements` must send its requests when first polled (see the type's
    /// documentation). Its output is returned only when what went before it
    /// succeeded: after a failure the server answers every later statement
    /// only with "the transaction is aborted", so the first error is the one
    /// worth reporting, and `statements` must report its own errors in the
    /// order it sent them for the same reason.
    pub(super) async fn send<F: Future>(&mut self, statements: F) -> Result<F::Output, StoreError> {
        let client = self.client;
        let begin = match self.state {
            TxnState::Unbegun(Mode::Optimistic) => Some(BEGIN),
            TxnState::Unbegun(Mode::Serial) => Some(BEGIN_SERIAL),
            TxnState::Open { .. } | TxnState::Member | TxnState::Finished => None,
        };
        // Set before anything is sent, so that a future dropped from here on
        // still rolls the transaction back.
        if let TxnState::Unbegun(mode) = self.state {
            self.state = TxnState::Open {
                locked: mode == Mode::Serial,
            };
        }
        let held = std::mem::take(&mut self.held);
        let opening = async {
            match begin {
                Some(begin) => client.batch_execute(begin).await,
                None => Ok(()),
            }
        };
        let (opened, written, output) = tokio::join!(opening, held.send(client), statements);
        opened.map_err(pg_error)?;
        written.map_err(pg_error)?;
        Ok(output)
    }

    /// Sends what the transaction owes the server, and waits: for the
    /// statements that are not sent through [`PgTxn::send`].
    async fn flush(&mut self) -> Result<(), StoreError> {
        self.send(async {}).await
    }

    /// Commits, in one round trip with the writes held back and the change
    /// signals, and fails if any of them failed: events or a command record
    /// that a concurrent transaction inserted first fail here, and the
    /// server then answers `COMMIT` by rolling back. A transaction that sent
    /// nothing has nothing to commit.
    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        if matches!(self.state, TxnState::Unbegun(_)) && self.held.is_empty() {
            return Ok(());
        }
        let client = self.client;
        let added = self.added;
        let committed = self
            .send(async {
                let notifying = async {
                    match outbox::signal_for(added) {
                        Some(signal) => client.batch_execute(signal).await,
                        None => Ok(()),
                    }
                };
                let (notified, committed) = tokio::join!(notifying, client.batch_execute("COMMIT"));
                notified.and(committed).map_err(pg_error)
            })
            .await;
        // Answered, so the transaction is over, committed or not.
        self.state = TxnState::Finished;
        committed?
    }

    /// Takes `append_lock` unless the transaction holds it already, then
    /// sends `statements`, in one round trip with what the transaction owes
    /// the server (see [`PgTxn::send`]).
    async fn with_lock<F: Future>(&mut self, statements: F) -> Result<F::Output, StoreError> {
        let client = self.client;
        let locked = self.state.locked();
        let lock = async {
            if locked {
                Ok(())
            } else {
                client.batch_execute(LOCK_APPENDS).await
            }
        };
        let (locked, output) = self.send(async { tokio::join!(lock, statements) }).await?;
        locked.map_err(pg_error)?;
        if let TxnState::Open { locked } = &mut self.state {
            *locked = true;
        }
        Ok(output)
    }

    /// Takes `append_lock` unless the transaction holds it already, and
    /// sends what the transaction owes the server: for the statements that
    /// need the lock and are not sent through [`PgTxn::send`].
    async fn lock_appends(&mut self) -> Result<(), StoreError> {
        self.with_lock(async {}).await
    }

    /// Takes `append_lock` unless the transaction holds it already, and
    /// reads the last position handed out, in one round trip: for
    /// [`PgTxn::insert_events`] in a transaction that took no lock before
    /// its reads.
    async fn read_last_position(&mut self) -> Result<(), StoreError> {
        let select = self.prepare(SELECT_LAST_POSITION).await?;
        let client = self.client;
        let row = self.with_lock(client.query_one(&select, &[])).await?;
        self.positions.seen(last_position(&row.map_err(pg_error)?)?);
        Ok(())
    }

    async fn prepare(&self, sql: &str) -> Result<Statement, StoreError> {
        self.client.prepare_cached(sql).await.map_err(pg_error)
    }
}

impl Drop for PgTxn<'_> {
    /// Rolls back a transaction that was begun and not committed (a refusal,
    /// an error, or a caller that stopped waiting), before the connection
    /// goes back to the pool.
    ///
    /// `ROLLBACK` cannot be awaited here, but polling its future once queues
    /// it on the connection, ahead of anything the connection's next user
    /// sends; its answer is read and dropped by the connection. This is what
    /// tokio-postgres's own `Transaction` does when dropped. After `COMMIT`
    /// was sent but not answered it only draws a warning.
    fn drop(&mut self) {
        if let TxnState::Open { .. } = self.state {
            let rollback = pin!(self.client.batch_execute("ROLLBACK"));
            let _ = rollback.poll(&mut Context::from_waker(Waker::noop()));
        }
    }
}

impl StoreTxn for PgTxn<'_> {
    async fn command_record(
        &mut self,
        command_id: &str,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let select = self.prepare(SELECT_COMMAND_RECORD).await?;
        let client = self.client;
        let row = self
            .send(client.query_opt(&select, &[&command_id]))
            .await?
            .map_err(pg_error)?;
        row.map(|row| command_record(&row)).transpose()
    }

    async fn find_event_ids(
        &mut self,
        stream: &StreamId,
        event_ids: &[Uuid],
    ) -> Result<Vec<Option<StoredEventId>>, StoreError> {
        let select = self.prepare(event_ids_statement(event_ids)).await?;
        let client = self.client;
        let rows = self
            .send(query_event_ids(client, &select, event_ids))
            .await?
            .map_err(pg_error)?;
        stored_event_ids(stream, event_ids, &rows)
    }

    async fn stream_sequence(&mut self, stream: &StreamId) -> Result<u64, StoreError> {
        let select = self.prepare(SELECT_STREAM_SEQUENCE).await?;
        let client = self.client;
        let params: [&(dyn ToSql + Sync); 3] = [
            &stream.domain().as_str(),
            &stream.entity_type().as_str(),
            &stream.instance_key().as_str(),
        ];
        let row = self
            .send(client.query_opt(&select, &params))
            .await?
            .map_err(pg_error)?;
        stream_sequence(row)
    }

    /// The three reads in one round trip, with `BEGIN` (and in serial mode
    /// the append lock, which the server takes before it runs them, and the
    /// last position handed out, which the lock makes final).
    async fn append_reads(
        &mut self,
        command_id: Option<&str>,
        stream: &StreamId,
        event_ids: &[Uuid],
    ) -> Result<AppendReads, StoreError> {
        // Prepared first: one prepared on the spot would be sent late.
        let (select_command, select_ids, select_sequence, select_position) = tokio::join!(
            self.prepare(SELECT_COMMAND_RECORD),
            self.prepare(event_ids_statement(event_ids)),
            self.prepare(SELECT_STREAM_SEQUENCE),
            self.prepare(SELECT_LAST_POSITION),
        );
        let (select_command, select_ids, select_sequence, select_position) = (
            select_command?,
            select_ids?,
            select_sequence?,
            select_position?,
        );
        let client = self.client;
        let command = async {
            match command_id {
                Some(command_id) => client.query_opt(&select_command, &[&command_id]).await,
                None => Ok(None),
            }
        };
        let ids = query_event_ids(client, &select_ids, event_ids);
        let sequence_params: [&(dyn ToSql + Sync); 3] = [
            &stream.domain().as_str(),
            &stream.entity_type().as_str(),
            &stream.instance_key().as_str(),
        ];
        let sequence = client.query_opt(&select_sequence, &sequence_params);
        let locked = self.state.locked();
        let position = async {
            if locked {
                client.query_one(&select_position, &[]).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (command, ids, sequence, position) = self
            .send(async { tokio::join!(command, ids, sequence, position) })
            .await?;
        let (command, ids, sequence, position) = (
            command.map_err(pg_error)?,
            ids.map_err(pg_error)?,
            sequence.map_err(pg_error)?,
            position.map_err(pg_error)?,
        );
        if let Some(row) = position {
            self.positions.seen(last_position(&row)?);
        }
        Ok(AppendReads {
            command: command.map(|row| command_record(&row)).transpose()?,
            event_ids: stored_event_ids(stream, event_ids, &ids)?,
            stream_sequence: stream_sequence(sequence)?,
        })
    }

    /// Numbers the events and hands out their positions here, and holds
    /// them back: they are sent with the next statement, which for the
    /// rules is `COMMIT`. The positions are final because the transaction
    /// holds the append lock and read the last one handed out under it (with
    /// its reads, or here, in a round trip of its own, if it took the lock
    /// late). Events whose stream sequence or id a concurrent transaction
    /// took first then fail the commit, a lost race like any other.
    async fn insert_events(
        &mut self,
        stream: &StreamId,
        first_sequence: u64,
        events: &[NewEvent],
        context: &EventContext,
        written_at: OffsetDateTime,
    ) -> Result<Vec<AppendedEvent>, StoreError> {
        // The rules never insert an empty batch; were one to come, there is
        // nothing to number and no stream to move.
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let count = events.len() as u64;
        first_sequence
            .checked_add(count - 1)
            .ok_or_else(|| StoreError::backend("the stream's sequence would overflow"))?;
        if !self.positions.known() {
            self.read_last_position().await?;
        }
        let first_position = self.positions.take(count)?;
        let context = to_json("event context", context)?;
        let insert = self.prepare(INSERT_EVENTS).await?;
        let held = self
            .held
            .events
            .get_or_insert_with(|| HeldEvents::new(insert));
        let appended = events
            .iter()
            .zip(first_sequence..)
            .zip(first_position..)
            .map(|((event, sequence), position)| {
                held.push(stream, sequence, position, event, written_at, &context)?;
                Ok(AppendedEvent {
                    event_id: event.event_id,
                    event_type: event.event_type.clone(),
                    sequence,
                    position,
                    written_at,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.added.events = true;
        Ok(appended)
    }

    /// Held back and sent with the next statement, which for the rules is
    /// `COMMIT`: a record is the last write of an append or a rejection. A
    /// record of the same id that a concurrent transaction committed first
    /// then fails the commit, a lost race like any other (see
    /// [`PgTxn::commit`]).
    async fn insert_command(&mut self, record: &CommandRecord) -> Result<(), StoreError> {
        let json = to_json("command record", record)?;
        let insert = self.prepare(INSERT_COMMANDS).await?;
        self.held
            .records
            .get_or_insert_with(|| HeldPairs::new(insert))
            .push(record.command_id().to_string(), json);
        Ok(())
    }

    /// Held back like events (which take the append lock first), and sent
    /// after them.
    async fn insert_event_rows(
        &mut self,
        rows: &[(NotificationKind, u64)],
    ) -> Result<(), StoreError> {
        if !self.state.locked() {
            self.lock_appends().await?;
        }
        let insert = self.prepare(outbox::INSERT_EVENT_ROWS).await?;
        let held = self.held.rows.get_or_insert_with(|| HeldPairs::new(insert));
        for &(kind, position) in rows {
            held.push(kind.as_str(), to_sql_int(position)?);
        }
        self.added.outbox_rows = true;
        Ok(())
    }

    async fn insert_documents(&mut self, documents: &[Document]) -> Result<usize, StoreError> {
        self.lock_appends().await?;
        let added = outbox::insert_documents(self.client, documents).await?;
        self.added.outbox_rows |= added > 0;
        Ok(added)
    }

    async fn set_checkpoint(&mut self, destination: &str, next: u64) -> Result<(), StoreError> {
        self.flush().await?;
        outbox::set_checkpoint(self.client, destination, next).await
    }

    async fn put_dead_letters(&mut self, letters: &[DeadLetter]) -> Result<(), StoreError> {
        self.flush().await?;
        outbox::put_dead_letters(self.client, letters).await
    }

    async fn delete_dead_letter(
        &mut self,
        destination: &str,
        notification_id: Uuid,
    ) -> Result<bool, StoreError> {
        let delete = self
            .prepare("DELETE FROM dead_letters WHERE destination = $1 AND notification_id = $2")
            .await?;
        let client = self.client;
        let deleted = self
            .send(client.execute(&delete, &[&destination, &notification_id]))
            .await?
            .map_err(pg_error)?;
        Ok(deleted > 0)
    }

    async fn insert_completions(
        &mut self,
        completions: &[(String, String)],
    ) -> Result<(), StoreError> {
        let insert = self
            .prepare(
                "INSERT INTO completions (handler, notification_id)
                 SELECT * FROM unnest($1::text[], $2::text[])
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        let (handlers, ids): (Vec<&str>, Vec<&str>) = completions
            .iter()
            .map(|(handler, id)| (handler.as_str(), id.as_str()))
            .unzip();
        let client = self.client;
        self.send(client.execute(&insert, &[&handlers, &ids]))
            .await?
            .map_err(pg_error)?;
        Ok(())
    }

    async fn delete_dead_letters(&mut self, destination: &str) -> Result<usize, StoreError> {
        let delete = self
            .prepare("DELETE FROM dead_letters WHERE destination = $1")
            .await?;
        let client = self.client;
        let deleted = self
            .send(client.execute(&delete, &[&destination]))
            .await?
            .map_err(pg_error)?;
        usize::try_from(deleted).map_err(StoreError::backend)
    }

    async fn prune_outbox(&mut self, below: u64, retain: Duration) -> Result<Pruned, StoreError> {
        let rows = self.prepare(outbox::PRUNE_ROWS).await?;
        let completions = self.prepare(outbox::PRUNE_COMPLETIONS).await?;
        let below = sql_bound(below);
        let retain = sql_bound(retain.as_micros());
        let client = self.client;
        let params: [&(dyn ToSql + Sync); 2] = [&below, &retain];
        let (rows, completions) = self
            .send(async {
                tokio::join!(
                    client.execute(&rows, &params),
                    client.execute(&completions, &params),
                )
            })
            .await?;
        Ok(Pruned {
            rows: rows.map_err(pg_error)?,
            completions: completions.map_err(pg_error)?,
        })
    }
}

const SELECT_EVENT_IDS: &str = select_event_ids!("event_id = ANY($1)");

/// [`SELECT_EVENT_IDS`] for one id, an append of one event. The server
/// plans `= ANY($1)` anew on every execution, as a generic plan assumes ten
/// ids and so never looks cheaper than a custom plan for one, and that
/// planning cost every append (and every append of a batch) its share of
/// server time: see BENCHMARKS.md, "Targets missed", the PostgreSQL target
/// (the event-id read). `= $1` it plans once.
const SELECT_EVENT_ID: &str = select_event_ids!("event_id = $1");

/// The statement that finds `event_ids`: [`query_event_ids`] runs it.
fn event_ids_statement(event_ids: &[Uuid]) -> &'static str {
    match event_ids {
        [_] => SELECT_EVENT_ID,
        _ => SELECT_EVENT_IDS,
    }
}

/// Finds `event_ids` with `select`, prepared from [`event_ids_statement`].
/// The request goes out when the future is first polled.
async fn query_event_ids(
    client: &ClientWrapper,
    select: &Statement,
    event_ids: &[Uuid],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    match event_ids {
        [] => Ok(Vec::new()),
        [id] => client.query(select, &[id]).await,
        ids => client.query(select, &[&ids]).await,
    }
}

/// Maps the rows of [`query_event_ids`] to where each of `event_ids` was
/// appended, in their order; `stream` is the stream of the append being
/// checked.
fn stored_event_ids(
    stream: &StreamId,
    event_ids: &[Uuid],
    rows: &[Row],
) -> Result<Vec<Option<StoredEventId>>, StoreError> {
    let mut found = rows
        .iter()
        .map(|row| stored_event_id(row, stream))
        .collect::<Result<HashMap<_, _>, _>>()?;
    Ok(event_ids.iter().map(|id| found.remove(id)).collect())
}
