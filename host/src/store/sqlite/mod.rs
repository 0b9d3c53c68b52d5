//! The embedded [`EventStore`]: one SQLite file in WAL mode.
//!
//! This module owns the file's schema and its migrations, the single writer
//! thread that group-commits appends, and the pool of read-only connections.
//! It must not decide any append rule itself (those live in
//! [`super::rules`]), and it must never acknowledge a write before the
//! transaction holding it has committed.
//!
//! Its parts:
//!
//! - [`schema`]: the tables and their migrations, and opening the file;
//! - [`writer`]: the writer thread and its queue of writes, each with its
//!   own typed answer;
//! - [`transaction`]: the rules' primitives on the writer's transaction;
//! - [`reads`]: the read-only connections and what the reads share.

mod reads;
mod schema;
#[cfg(test)]
mod tests;
mod transaction;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use self::reads::{ReadPool, load_command, load_stream_sequence, query_rows};
use self::schema::open_migrated;
use self::writer::{QUEUE_CAPACITY, Request, queued, run_writer};
use super::outbox::{Feeds, LocalClaims};
use super::rules::{
    self, AddDocuments, Append, Complete, DeleteDeadLetter, Prune, PurgeDeadLetters,
    PutDeadLetters, Reject, SetCheckpoint, Write,
};
use super::sql::{
    SqlRow, from_json, from_sql_int, outbox_record, recorded_event_at, select_events,
    select_outbox, sql_bound,
};
use super::{
    AppendOutcome, AppendRequest, Claim, CommandKey, CommandRecord, DeadLetter, Document,
    EventStore, InstancePage, Outage, Outbox, OutboxRecord, Pruned, StoreError,
};
use crate::model::{CommandId, Domain, EntityType, RecordedEvent, StreamId};

/// How long a connection waits for a lock held by another process (a backup
/// tool, a second host on the same file by mistake) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Room for every statement this module prepares, so none is re-parsed.
const STATEMENT_CACHE: usize = 64;

/// How a [`SqliteStore`] trades safety for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteConfig {
    /// Whether every acknowledged append is on disk (`synchronous=FULL`: the
    /// log is fsynced at each commit). When `false` (`synchronous=NORMAL`),
    /// the file is never corrupted, but a power loss or OS crash may drop the
    /// last appends acknowledged before it. Default `true`.
    pub durable: bool,
    /// How many idle read-only connections are kept for reuse. Reads beyond
    /// that open a connection of their own; with 0, every read does. Default 4.
    pub read_connections: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            durable: true,
            read_connections: 4,
        }
    }
}

/// An event store in one SQLite file.
///
/// All writes go through one writer thread that commits whatever appends are
/// waiting in one transaction, so concurrent appends share an fsync; reads
/// run beside it on read-only connections. Dropping the store finishes the
/// writes already queued and waits for the writer thread to close the file;
/// [`EventStore::close`] does the same, checkpointing the log into the
/// database file first, and without waiting for the last `Arc` to go.
pub struct SqliteStore {
    path: PathBuf,
    config: SqliteConfig,
    reads: Arc<ReadPool>,
    /// `None` only once the store is being dropped.
    writer: Option<Writer>,
    claims: LocalClaims,
    feeds: Feeds,
    /// Set by [`EventStore::close`]: the writer stopped because it was
    /// told to.
    closed: AtomicBool,
}

struct Writer {
    jobs: mpsc::Sender<Request>,
    thread: JoinHandle<()>,
}

impl SqliteStore {
    /// Opens the store in the file at `path`, creating the file (not its
    /// directory) and its schema when missing, and migrating an older schema.
    ///
    /// Fails with [`StoreError::SchemaTooNew`] when the file was written by a
    /// newer version of this code, and with [`StoreError::Backend`] naming
    /// the path when the file cannot be opened as a SQLite database.
    pub fn open(path: impl AsRef<Path>, config: SqliteConfig) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let connection = open_migrated(&path, config)?;
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || run_writer(connection, queue))
            .map_err(StoreError::backend)?;
        Ok(SqliteStore {
            reads: Arc::new(ReadPool::new(path.clone(), config.read_connections)),
            path,
            config,
            writer: Some(Writer { jobs, thread }),
            claims: LocalClaims::default(),
            feeds: Feeds::default(),
            closed: AtomicBool::new(false),
        })
    }

    /// Hands `write` to the writer thread and waits for its answer, which
    /// comes only after the transaction holding it has committed.
    ///
    /// If the caller stops waiting, the job still runs: an append that was
    /// handed over may land even though nobody hears of it.
    async fn write<W: Write>(&self, write: W) -> Result<W::Output, StoreError> {
        let writer = self.writer.as_ref().ok_or_else(writer_stopped)?;
        let adds = write.adds();
        let (job, answer) = queued(write);
        writer
            .jobs
            .send(Request::Write(job))
            .await
            .map_err(|_| self.stopped())?;
        let done = answer.await.map_err(|_| self.stopped())?;
        if done.is_ok() {
            self.feeds.bump(adds);
        }
        done
    }

    /// Why the writer takes no more writes.
    fn stopped(&self) -> StoreError {
        if self.closed.load(Ordering::Acquire) {
            store_closed()
        } else {
            writer_stopped()
        }
    }

    /// Runs `query` on a pooled read-only connection, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = Arc::clone(&self.reads);
        tokio::task::spawn_blocking(move || pool.run(query))
            .await
            .map_err(StoreError::backend)?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(Writer { jobs, thread }) = self.writer.take() {
            // Closing the queue lets the writer finish what is queued and
            // return; joining makes sure the file is closed when drop returns,
            // so the same file can be opened again right away.
            drop(jobs);
            if thread.join().is_err() {
                tracing::error!(path = %self.path.display(), "the SQLite writer thread panicked");
            }
        }
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn writer_stopped() -> StoreError {
    StoreError::backend("the SQLite writer thread has stopped; nothing more can be written")
}

fn store_closed() -> StoreError {
    StoreError::unavailable(Outage::Closed, "the SQLite store was closed")
}

/// The outage an SQLite error means, if it means one: a full disk (or a
/// database at its `max_page_count`) passes once space is freed, and the
/// writer's next transaction then succeeds.
fn outage_of(error: &rusqlite::Error) -> Option<Outage> {
    (error.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)).then_some(Outage::DiskFull)
}

/// An SQLite error as the store reports it: an outage, or a failure.
fn store_error(error: rusqlite::Error) -> StoreError {
    match outage_of(&error) {
        Some(outage) => StoreError::unavailable(outage, error),
        None => StoreError::backend(error),
    }
}

#[async_trait::async_trait]
impl EventStore for SqliteStore {
    fn event_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.feeds.events.subscribe()
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.write(Append(request)).await
    }

    async fn record_rejection(
        &self,
        stream: &StreamId,
        command: &CommandKey,
        message: &str,
    ) -> Result<CommandRecord, StoreError> {
        self.write(Reject::new(stream, command, message)).await
    }

    async fn command_record(
        &self,
        command_id: &CommandId,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let command_id = command_id.to_string();
        self.read(move |connection| load_command(connection, &command_id))
            .await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream = stream.clone();
        self.read(move |connection| {
            query_rows(
                connection,
                select_events!(
                    "",
                    "WHERE domain = ?1 AND entity_type = ?2 AND instance_key = ?3
                     AND sequence >= ?4 ORDER BY sequence LIMIT ?5"
                ),
                params![
                    stream.domain().as_str(),
                    stream.entity_type().as_str(),
                    stream.instance_key().as_str(),
                    sql_bound(from),
                    sql_bound(max_count),
                ],
                |row| recorded_event_at(row, 0),
            )
        })
        .await
    }

    async fn stream_sequence(&self, stream: &StreamId) -> Result<u64, StoreError> {
        let stream = stream.clone();
        self.read(move |connection| load_stream_sequence(connection, &stream))
            .await
    }

    async fn close(&self) -> Result<(), StoreError> {
        let Some(writer) = &self.writer else {
            return Ok(());
        };
        self.closed.store(true, Ordering::Release);
        let (reply, closed) = oneshot::channel();
        if writer.jobs.send(Request::Close(reply)).await.is_err() {
            // Closed before.
            return Ok(());
        }
        closed
            .await
            .map_err(|_| writer_stopped())?
            .map_err(StoreError::backend)?;
        tracing::info!(path = %self.path.display(), "event store closed");
        Ok(())
    }

    async fn list_instances(
        &self,
        domain: &Domain,
        entity_type: &EntityType,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage, StoreError> {
        let (domain, entity_type) = (domain.to_string(), entity_type.to_string());
        // Every valid key sorts after "", so no cursor is the cursor "".
        let after = cursor.unwrap_or_default().to_owned();
        let keys = self
            .read(move |connection| {
                query_rows(
                    connection,
                    "SELECT instance_key FROM streams
                     WHERE domain = ?1 AND entity_type = ?2 AND instance_key > ?3
                     ORDER BY instance_key LIMIT ?4",
                    params![
                        domain,
                        entity_type,
                        after,
                        sql_bound(limit.saturating_add(1))
                    ],
                    |row| row.text(0),
                )
            })
            .await?;
        Ok(rules::instance_page(keys, cursor, limit))
    }

    async fn read_all(
        &self,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read(move |connection| {
            query_rows(
                connection,
                select_events!("", "WHERE position >= ?1 ORDER BY position LIMIT ?2"),
                params![sql_bound(from), sql_bound(max_count)],
                |row| recorded_event_at(row, 0),
            )
        })
        .await
    }
}

#[async_trait::async_trait]
impl Outbox for SqliteStore {
    async fn add_documents(&self, documents: Vec<Document>) -> Result<usize, StoreError> {
        self.write(AddDocuments(documents)).await
    }

    async fn read_outbox(
        &self,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.read(move |connection| {
            query_rows(
                connection,
                select_outbox!("", "WHERE o.position >= ?1 ORDER BY o.position LIMIT ?2"),
                params![sql_bound(from), sql_bound(max_count)],
                |row| outbox_record(row),
            )
        })
        .await
    }

    async fn outbox_head(&self) -> Result<u64, StoreError> {
        self.read(|connection| {
            let head: i64 = connection
                .query_row("SELECT coalesce(max(position), 0) FROM outbox", [], |row| {
                    row.get(0)
                })
                .map_err(StoreError::backend)?;
            from_sql_int(head)
        })
        .await
    }

    fn outbox_changes(&self) -> watch::Receiver<u64> {
        self.feeds.outbox.subscribe()
    }

    async fn claim(&self, destination: &str) -> Result<Option<Claim>, StoreError> {
        let Some(hold) = self.claims.try_hold(destination) else {
            return Ok(None);
        };
        let name = destination.to_owned();
        let next = self
            .read(move |connection| {
                let next: Option<i64> = connection
                    .prepare_cached(
                        "SELECT next_position FROM outbox_checkpoints WHERE destination = ?1",
                    )
                    .and_then(|mut select| select.query_row([name], |row| row.get(0)).optional())
                    .map_err(StoreError::backend)?;
                next.map_or(Ok(1), from_sql_int)
            })
            .await?;
        Ok(Some(Claim::new(destination, next, hold)))
    }

    async fn advance(&self, claim: &mut Claim, next: u64) -> Result<bool, StoreError> {
        // The lock in `claims` stays held: only this store claims here.
        if let Some(write) = SetCheckpoint::ending(claim, next) {
            self.write(write).await?;
            claim.moved_to(next);
        }
        Ok(true)
    }

    async fn release(&self, claim: Claim, next: u64) -> Result<(), StoreError> {
        // An idle round moves nothing, and costs no write (and no fsync).
        match SetCheckpoint::ending(&claim, next) {
            Some(write) => self.write(write).await,
            None => Ok(()),
        }
    }

    async fn checkpoints(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|connection| {
            query_rows(
                connection,
                "SELECT destination, next_position FROM outbox_checkpoints ORDER BY destination",
                [],
                |row| Ok((row.text(0)?, from_sql_int(row.int(1)?)?)),
            )
        })
        .await
    }

    async fn add_dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), StoreError> {
        self.write(PutDeadLetters(letters)).await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(|connection| {
            query_rows(
                connection,
                "SELECT letter FROM dead_letters ORDER BY destination, position",
                [],
                |row| from_json("dead letter", &row.text(0)?),
            )
        })
        .await
    }

    async fn remove_dead_letter(
        &self,
        destination: &str,
        notification_id: Uuid,
    ) -> Result<bool, StoreError> {
        self.write(DeleteDeadLetter::new(destination, notification_id))
            .await
    }

    async fn register_destination(&self, destination: &str) -> Result<(), StoreError> {
        self.write(SetCheckpoint::registering(destination)).await
    }

    async fn prune_outbox(&self, below: u64, retain: Duration) -> Result<Pruned, StoreError> {
        self.write(Prune { below, retain }).await
    }

    async fn purge_dead_letters(&self, destination: &str) -> Result<usize, StoreError> {
        self.write(PurgeDeadLetters(destination.to_owned())).await
    }

    async fn record_completions(
        &self,
        completions: Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        self.write(Complete(completions)).await
    }

    async fn is_completed(&self, handler: &str, notification_id: &str) -> Result<bool, StoreError> {
        let (handler, notification_id) = (handler.to_owned(), notification_id.to_owned());
        self.read(move |connection| {
            connection
                .prepare_cached(
                    "SELECT 1 FROM completions WHERE handler = ?1 AND notification_id = ?2",
                )
                .and_then(|mut select| select.exists(params![handler, notification_id]))
                .map_err(StoreError::backend)
        })
        .await
    }
}
