//! The embedded [`EventStore`]: one SQLite file in WAL mode.
//!
//! This module owns the file's schema and its migrations, the single writer
//! thread that group-commits appends, and the pool of read-only connections.
//! It must not decide any append rule itself (those live in
//! [`super::rules`]), and it must never acknowledge a write before the
//! transaction holding it has committed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::outbox::{EventRow, Feeds, LocalClaims};
use super::rules::{self, Done, Op, StoreTxn, StoredEventId};
use super::sql::{from_sql_int, sql_bound, to_sql_int};
use super::{
    AppendOutcome, AppendRequest, AppendedEvent, Claim, CommandKey, CommandRecord, DeadLetter,
    Document, EventStore, InstancePage, Outbox, OutboxEntry, OutboxRecord, StoreError,
};
use crate::model::{EventContext, NewEvent, RecordedEvent, StreamId};

/// Schema migrations, oldest first. Migration `i` takes the file from schema
/// version `i` to `i + 1` (kept in `PRAGMA user_version`); a new version is
/// one more entry here, never an edit of an old one.
const MIGRATIONS: &[&str] = &[
    // Version 1. `streams` holds each stream's last sequence, and only for
    // streams with events, which makes listing instances an index range
    // scan. `position` aliases the rowid: with one writer it grows in commit
    // order.
    "CREATE TABLE events (
         position     INTEGER PRIMARY KEY,
         domain       TEXT    NOT NULL,
         entity_type  TEXT    NOT NULL,
         instance_key TEXT    NOT NULL,
         sequence     INTEGER NOT NULL,
         event_id     TEXT    NOT NULL UNIQUE,
         event_type   TEXT    NOT NULL,
         payload      TEXT    NOT NULL,
         written_at   INTEGER NOT NULL, -- microseconds since the Unix epoch, UTC
         context      TEXT    NOT NULL, -- EventContext as JSON
         UNIQUE (domain, entity_type, instance_key, sequence)
     ) STRICT;
     CREATE TABLE streams (
         domain       TEXT    NOT NULL,
         entity_type  TEXT    NOT NULL,
         instance_key TEXT    NOT NULL,
         sequence     INTEGER NOT NULL,
         PRIMARY KEY (domain, entity_type, instance_key)
     ) STRICT, WITHOUT ROWID;
     CREATE TABLE commands (
         command_id TEXT NOT NULL PRIMARY KEY,
         record     TEXT NOT NULL -- CommandRecord as JSON
     ) STRICT, WITHOUT ROWID;",
    // Version 2: the outbox. A row points at an event (`event_position`) or
    // holds a document (`notification_id`, `topic`, `body`); `position`
    // aliases the rowid and, with one writer, grows in commit order.
    "CREATE TABLE outbox (
         position        INTEGER PRIMARY KEY,
         kind            TEXT    NOT NULL,
         event_position  INTEGER REFERENCES events (position),
         notification_id TEXT    UNIQUE,
         topic           TEXT,
         body            TEXT
     ) STRICT;
     CREATE TABLE outbox_checkpoints (
         destination   TEXT    NOT NULL PRIMARY KEY,
         next_position INTEGER NOT NULL
     ) STRICT, WITHOUT ROWID;
     CREATE TABLE dead_letters (
         destination     TEXT    NOT NULL,
         notification_id TEXT    NOT NULL,
         position        INTEGER NOT NULL,
         letter          TEXT    NOT NULL, -- DeadLetter as JSON
         PRIMARY KEY (destination, notification_id)
     ) STRICT, WITHOUT ROWID;
     CREATE TABLE completions (
         handler         TEXT NOT NULL,
         notification_id TEXT NOT NULL,
         PRIMARY KEY (handler, notification_id)
     ) STRICT, WITHOUT ROWID;",
];

/// The most jobs committed in one transaction: enough to absorb a burst of
/// concurrent callers in one fsync, small enough to keep each one's wait
/// short.
const MAX_BATCH: usize = 256;

/// Jobs that may wait for the writer before callers wait to enqueue.
const QUEUE_CAPACITY: usize = 1024;

/// How long a connection waits for a lock held by another process (a backup
/// tool, a second host on the same file by mistake) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Room for every statement this module prepares, so none is re-parsed.
const STATEMENT_CACHE: usize = 64;

/// Prefixes a `FROM events` clause with the columns [`recorded_event`]
/// reads, in its order.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT domain, entity_type, instance_key, sequence, position, event_id, \
             event_type, written_at, payload, context FROM events ",
            $rest
        )
    };
}

/// Outbox rows from `?1`, at most `?2`: the row's own columns, then (for a
/// row that points at an event) the event's, in [`recorded_event`]'s order.
const SELECT_OUTBOX: &str = "
    SELECT o.position, o.kind, o.notification_id, o.topic, o.body,
           e.domain, e.entity_type, e.instance_key, e.sequence, e.position, e.event_id,
           e.event_type, e.written_at, e.payload, e.context
    FROM outbox o LEFT JOIN events e ON e.position = o.event_position
    WHERE o.position >= ?1 ORDER BY o.position LIMIT ?2";

/// How a [`SqliteStore`] trades safety for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Whether every acknowledged append is on disk (`synchronous=FULL`: the
    /// log is fsynced at each commit). When `false` (`synchronous=NORMAL`),
    /// the file is never corrupted, but a power loss or OS crash may drop the
    /// last appends acknowledged before it. Default `true`.
    pub durable: bool,
    /// How many idle read-only connections are kept for reuse. Reads beyond
    /// that open a connection of their own; with 0, every read does. Default 4.
    pub read_connections: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
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
/// writes already queued and waits for the writer thread to close the file.
pub struct SqliteStore {
    path: PathBuf,
    options: SqliteOptions,
    reads: Arc<ReadPool>,
    /// `None` only once the store is being dropped.
    writer: Option<Writer>,
    claims: LocalClaims,
    feeds: Feeds,
}

struct Writer {
    jobs: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
}

impl SqliteStore {
    /// Opens the store in the file at `path`, creating the file (not its
    /// directory) and its schema when missing, and migrating an older schema.
    ///
    /// Fails with [`StoreError::SchemaTooNew`] when the file was written by a
    /// newer version of this code, and with [`StoreError::Backend`] naming
    /// the path when the file cannot be opened as a SQLite database.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut connection = open_writer(&path, options)?;
        migrate(&mut connection).map_err(|error| match error {
            StoreError::Backend(source) => StoreError::backend(OpenError {
                path: path.clone(),
                source,
            }),
            other => other,
        })?;
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || run_writer(connection, queue))
            .map_err(StoreError::backend)?;
        Ok(SqliteStore {
            reads: Arc::new(ReadPool {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
                keep: options.read_connections,
            }),
            path,
            options,
            writer: Some(Writer { jobs, thread }),
            claims: LocalClaims::default(),
            feeds: Feeds::default(),
        })
    }

    /// Hands `op` to the writer thread and waits for its answer, which comes
    /// only after the transaction holding it has committed.
    ///
    /// If the caller stops waiting, the job still runs: an append that was
    /// handed over may land even though nobody hears of it.
    async fn write(&self, op: Op) -> Result<Done, StoreError> {
        let writer = self.writer.as_ref().ok_or_else(writer_stopped)?;
        let adds = op.adds();
        let (reply, answer) = oneshot::channel();
        writer
            .jobs
            .send(Job { op, reply })
            .await
            .map_err(|_| writer_stopped())?;
        let done = answer.await.map_err(|_| writer_stopped())?;
        if done.is_ok() {
            self.feeds.bump(adds);
        }
        done
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
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The file could not be opened, configured or migrated.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the SQLite store at {}: {source}", path.display())]
struct OpenError {
    path: PathBuf,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn open_error(path: &Path) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |source| {
        StoreError::backend(OpenError {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }
}

fn writer_stopped() -> StoreError {
    StoreError::backend("the SQLite writer thread has stopped; nothing more can be written")
}

/// Opens the one read-write connection and sets the pragmas it depends on.
fn open_writer(path: &Path, options: SqliteOptions) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags).map_err(open_error(path))?;
    let configure = || -> rusqlite::Result<(String, i64)> {
        connection.busy_timeout(BUSY_TIMEOUT)?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // In WAL mode FULL fsyncs the log at every commit; NORMAL only at
        // checkpoints, which can lose recent commits but never corrupts.
        let synchronous = if options.durable { "FULL" } else { "NORMAL" };
        connection.pragma_update(None, "synchronous", synchronous)?;
        let journal_mode =
            connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        let synchronous = connection.pragma_query_value(None, "synchronous", |row| row.get(0))?;
        Ok((journal_mode, synchronous))
    };
    let (journal_mode, synchronous) = configure().map_err(open_error(path))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::backend(OpenError {
            path: path.to_path_buf(),
            source: format!("the file cannot use WAL mode (journal mode is {journal_mode:?})")
                .into(),
        }));
    }
    // Read back from the connection that commits (the setting is the
    // connection's, not the file's), for operators and for the crash test,
    // which cannot observe an fsync.
    let synchronous = match synchronous {
        0 => "OFF",
        1 => "NORMAL",
        2 => "FULL",
        _ => "EXTRA",
    };
    tracing::info!(path = %path.display(), %synchronous, "event store opened");
    Ok(connection)
}

/// Brings the schema to the newest version this code knows, in one
/// transaction, so that a second process opening the same file at the same
/// moment either sees the migrated schema or waits for it.
fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let supported = MIGRATIONS.len();
    let tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::backend)?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(StoreError::backend)?;
    let found = usize::try_from(found).map_err(|_| {
        StoreError::backend(format!(
            "the schema version {found} is not one this code wrote"
        ))
    })?;
    if found > supported {
        return Err(StoreError::SchemaTooNew {
            found: u32::try_from(found).unwrap_or(u32::MAX),
            supported: u32::try_from(supported).unwrap_or(u32::MAX),
        });
    }
    if found == supported {
        return Ok(());
    }
    for migration in &MIGRATIONS[found..] {
        tx.execute_batch(migration).map_err(StoreError::backend)?;
    }
    tx.pragma_update(None, "user_version", supported as i64)
        .map_err(StoreError::backend)?;
    tx.commit().map_err(StoreError::backend)?;
    tracing::info!(
        from = found,
        to = supported,
        "migrated the SQLite store's schema"
    );
    Ok(())
}

// ------------------------------------------------------------------ writer

/// One write, and where its caller waits for the answer.
struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// The writer thread: takes every job already waiting, commits them together,
/// and answers, until the store closes the queue.
fn run_writer(mut connection: Connection, mut queue: mpsc::Receiver<Job>) {
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
fn write_batch(connection: &mut Connection, jobs: impl Iterator<Item = Job>) {
    let (ops, replies): (Vec<Op>, Vec<_>) = jobs.map(|job| (job.op, job.reply)).unzip();
    match run_batch(connection, &ops) {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                // A caller that stopped waiting needs no answer.
                let _ = reply.send(result);
            }
        }
        Err(error) => {
            tracing::error!(%error, jobs = ops.len(), "an SQLite write transaction failed");
            let error = Arc::new(error);
            for reply in replies {
                let _ = reply.send(Err(StoreError::backend(BatchFailed(Arc::clone(&error)))));
            }
        }
    }
}

/// The transaction of a batch failed; no job of it may be acknowledged.
#[derive(Debug, thiserror::Error)]
#[error("the write transaction failed: {0}")]
struct BatchFailed(#[source] Arc<rusqlite::Error>);

/// Runs each op in its own savepoint, so that one that fails is undone alone
/// and gets its own error, then commits once for all.
///
/// `Err` means the transaction itself failed (it could not begin, a
/// savepoint could not be undone, or COMMIT failed) and is rolled back.
fn run_batch(
    connection: &mut Connection,
    ops: &[Op],
) -> rusqlite::Result<Vec<Result<Done, StoreError>>> {
    // One clock reading for the batch: its events are written together.
    let written_at = rules::now_micros();
    let mut tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let savepoint = tx.savepoint()?;
        let result = rules::run_ready(op.run(
            &mut SqliteTxn {
                connection: &savepoint,
            },
            written_at,
        ));
        if result.is_ok() {
            savepoint.commit()?;
        } else {
            // Rolls back to the savepoint and releases it. If SQLite already
            // rolled back the whole transaction (a disk error, say), the
            // savepoint is gone, this fails, and so does the batch.
            savepoint.finish()?;
        }
        results.push(result);
    }
    tx.commit()?;
    Ok(results)
}

/// The write primitives of [`rules`] on the open transaction of a batch.
/// SQLite calls never wait on anything but the disk, so no method awaits,
/// and the rules run with [`rules::run_ready`] on the writer thread.
struct SqliteTxn<'c> {
    connection: &'c Connection,
}

impl StoreTxn for SqliteTxn<'_> {
    async fn command_record(
        &mut self,
        command_id: &str,
    ) -> Result<Option<CommandRecord>, StoreError> {
        load_command(self.connection, command_id)
    }

    async fn find_event_ids(
        &mut self,
        stream: &StreamId,
        event_ids: &[Uuid],
    ) -> Result<Vec<Option<StoredEventId>>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT domain, entity_type, instance_key, sequence, position, event_type,
                        written_at
                 FROM events WHERE event_id = ?1",
            )
            .map_err(StoreError::backend)?;
        let mut stored = Vec::with_capacity(event_ids.len());
        for &event_id in event_ids {
            let found = statement
                .query_row([event_id.to_string()], |row| {
                    Ok((
                        row.get::<_, String>(0)? == stream.domain()
                            && row.get::<_, String>(1)? == stream.entity_type()
                            && row.get::<_, String>(2)? == stream.instance_key(),
                        row.get::<_, i64>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, String>(5)?,
                        row.get::<_, i64>(6)?,
                    ))
                })
                .optional()
                .map_err(StoreError::backend)?;
            let found = match found {
                Some((same_stream, sequence, position, event_type, written_at)) => {
                    Some(StoredEventId {
                        same_stream,
                        event: AppendedEvent {
                            event_id,
                            event_type,
                            sequence: from_sql_int(sequence)?,
                            position: from_sql_int(position)?,
                            written_at: Some(from_micros(written_at)?),
                        },
                    })
                }
                None => None,
            };
            stored.push(found);
        }
        Ok(stored)
    }

    async fn stream_sequence(&mut self, stream: &StreamId) -> Result<u64, StoreError> {
        load_stream_sequence(self.connection, stream)
    }

    async fn insert_events(
        &mut self,
        stream: &StreamId,
        first_sequence: u64,
        events: &[NewEvent],
        context: &EventContext,
        written_at: OffsetDateTime,
    ) -> Result<Vec<AppendedEvent>, StoreError> {
        let context = serde_json::to_string(context).map_err(StoreError::backend)?;
        let micros = i64::try_from(written_at.unix_timestamp_nanos() / 1_000)
            .map_err(StoreError::backend)?;
        let mut insert = self
            .connection
            .prepare_cached(
                "INSERT INTO events (domain, entity_type, instance_key, sequence, event_id,
                                     event_type, payload, written_at, context)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(StoreError::backend)?;
        let mut appended = Vec::with_capacity(events.len());
        for (sequence, event) in (first_sequence..).zip(events) {
            insert
                .execute(params![
                    stream.domain(),
                    stream.entity_type(),
                    stream.instance_key(),
                    to_sql_int(sequence)?,
                    event.event_id.to_string(),
                    event.event_type,
                    event.payload.get(),
                    micros,
                    context,
                ])
                .map_err(StoreError::backend)?;
            appended.push(AppendedEvent {
                event_id: event.event_id,
                event_type: event.event_type.clone(),
                sequence,
                position: from_sql_int(self.connection.last_insert_rowid())?,
                written_at: Some(written_at),
            });
        }
        // The rules never insert an empty batch; were one to come, there is
        // no stream to move.
        if let Some(last) = appended.last() {
            let last_sequence = to_sql_int(last.sequence)?;
            self.connection
                .prepare_cached(
                    "INSERT INTO streams (domain, entity_type, instance_key, sequence)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (domain, entity_type, instance_key)
                     DO UPDATE SET sequence = excluded.sequence",
                )
                .and_then(|mut upsert| {
                    upsert.execute(params![
                        stream.domain(),
                        stream.entity_type(),
                        stream.instance_key(),
                        last_sequence,
                    ])
                })
                .map_err(StoreError::backend)?;
        }
        Ok(appended)
    }

    async fn insert_command(&mut self, record: &CommandRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(StoreError::backend)?;
        self.connection
            .prepare_cached("INSERT INTO commands (command_id, record) VALUES (?1, ?2)")
            .and_then(|mut insert| insert.execute(params![record.command_id(), json]))
            .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn insert_event_rows(&mut self, rows: &[(EventRow, u64)]) -> Result<(), StoreError> {
        let mut insert = self
            .connection
            .prepare_cached("INSERT INTO outbox (kind, event_position) VALUES (?1, ?2)")
            .map_err(StoreError::backend)?;
        for &(kind, position) in rows {
            insert
                .execute(params![kind.as_str(), to_sql_int(position)?])
                .map_err(StoreError::backend)?;
        }
        Ok(())
    }

    async fn insert_documents(&mut self, documents: &[Document]) -> Result<usize, StoreError> {
        let mut insert = self
            .connection
            .prepare_cached(
                "INSERT INTO outbox (kind, notification_id, topic, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (notification_id) DO NOTHING",
            )
            .map_err(StoreError::backend)?;
        let mut added = 0;
        for document in documents {
            added += insert
                .execute(params![
                    document.kind,
                    document.id.to_string(),
                    document.topic,
                    document.body.get(),
                ])
                .map_err(StoreError::backend)?;
        }
        Ok(added)
    }

    async fn set_checkpoint(&mut self, destination: &str, next: u64) -> Result<(), StoreError> {
        self.connection
            .prepare_cached(
                "INSERT INTO outbox_checkpoints (destination, next_position) VALUES (?1, ?2)
                 ON CONFLICT (destination)
                 DO UPDATE SET next_position = max(next_position, excluded.next_position)",
            )
            .and_then(|mut upsert| upsert.execute(params![destination, sql_bound(next)]))
            .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn put_dead_letters(&mut self, letters: &[DeadLetter]) -> Result<(), StoreError> {
        let mut upsert = self
            .connection
            .prepare_cached(
                "INSERT OR REPLACE INTO dead_letters (destination, notification_id, position, letter)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(StoreError::backend)?;
        for letter in letters {
            let json = serde_json::to_string(letter).map_err(StoreError::backend)?;
            upsert
                .execute(params![
                    letter.destination,
                    letter.notification_id.to_string(),
                    to_sql_int(letter.position)?,
                    json,
                ])
                .map_err(StoreError::backend)?;
        }
        Ok(())
    }

    async fn delete_dead_letter(
        &mut self,
        destination: &str,
        notification_id: Uuid,
    ) -> Result<bool, StoreError> {
        let deleted = self
            .connection
            .prepare_cached(
                "DELETE FROM dead_letters WHERE destination = ?1 AND notification_id = ?2",
            )
            .and_then(|mut delete| {
                delete.execute(params![destination, notification_id.to_string()])
            })
            .map_err(StoreError::backend)?;
        Ok(deleted > 0)
    }

    async fn insert_completions(
        &mut self,
        completions: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut insert = self
            .connection
            .prepare_cached(
                "INSERT INTO completions (handler, notification_id) VALUES (?1, ?2)
                 ON CONFLICT DO NOTHING",
            )
            .map_err(StoreError::backend)?;
        for (handler, notification_id) in completions {
            insert
                .execute(params![handler, notification_id])
                .map_err(StoreError::backend)?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------- reads

/// Read-only connections, reused so that a read does not pay for opening
/// the file. WAL lets them read committed data while the writer writes.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// How many idle connections to keep.
    keep: usize,
}

impl ReadPool {
    fn run<T>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let reused = self.lock().pop();
        let connection = match reused {
            Some(connection) => connection,
            None => self.open()?,
        };
        let result = query(&connection);
        let mut idle = self.lock();
        if idle.len() < self.keep {
            idle.push(connection);
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A list of idle connections cannot be left inconsistent by a panic.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(&self.path, flags)
            .and_then(|connection| {
                connection.busy_timeout(BUSY_TIMEOUT)?;
                Ok(connection)
            })
            .map_err(open_error(&self.path))?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(connection)
    }
}

/// A time stored as microseconds since the Unix epoch.
fn from_micros(micros: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .map_err(StoreError::backend)
}

/// Maps a row selected with [`select_events!`].
fn recorded_event(row: &Row<'_>) -> Result<RecordedEvent, StoreError> {
    recorded_event_at(row, 0)
}

/// Maps the columns of [`select_events!`] that start at column `first`.
fn recorded_event_at(row: &Row<'_>, first: usize) -> Result<RecordedEvent, StoreError> {
    let text = |index: usize| {
        row.get::<_, String>(first + index)
            .map_err(StoreError::backend)
    };
    let int = |index: usize| {
        row.get::<_, i64>(first + index)
            .map_err(StoreError::backend)
    };
    let stream = StreamId::new(text(0)?, text(1)?, text(2)?).map_err(StoreError::backend)?;
    let written_at = from_micros(int(7)?)?;
    Ok(RecordedEvent {
        stream,
        sequence: from_sql_int(int(3)?)?,
        position: from_sql_int(int(4)?)?,
        event_id: Uuid::parse_str(&text(5)?).map_err(StoreError::backend)?,
        event_type: text(6)?,
        written_at,
        // Trusted: it is the text of a `RawValue` this module wrote.
        payload: RawValue::from_string(text(8)?).map_err(StoreError::backend)?,
        context: serde_json::from_str(&text(9)?).map_err(StoreError::backend)?,
    })
}

fn query_events(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut statement = connection
        .prepare_cached(sql)
        .map_err(StoreError::backend)?;
    let mut rows = statement.query(params).map_err(StoreError::backend)?;
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(StoreError::backend)? {
        events.push(recorded_event(row)?);
    }
    Ok(events)
}

/// Maps a row selected with [`SELECT_OUTBOX`].
fn outbox_record(row: &Row<'_>) -> Result<OutboxRecord, StoreError> {
    let position = from_sql_int(row.get(0).map_err(StoreError::backend)?)?;
    let kind: String = row.get(1).map_err(StoreError::backend)?;
    let entry = match EventRow::parse(&kind) {
        Some(EventRow::NewEntity) => OutboxEntry::NewEntity(recorded_event_at(row, 5)?),
        Some(EventRow::EventAppended) => OutboxEntry::EventAppended(recorded_event_at(row, 5)?),
        None => {
            let id: String = row.get(2).map_err(StoreError::backend)?;
            let body: String = row.get(4).map_err(StoreError::backend)?;
            OutboxEntry::Document(Document {
                id: Uuid::parse_str(&id).map_err(StoreError::backend)?,
                kind,
                topic: row.get(3).map_err(StoreError::backend)?,
                // Trusted: it is the text of a `RawValue` this module wrote.
                body: RawValue::from_string(body)
                    .map_err(StoreError::backend)?
                    .into(),
            })
        }
    };
    Ok(OutboxRecord { position, entry })
}

fn load_command(
    connection: &Connection,
    command_id: &str,
) -> Result<Option<CommandRecord>, StoreError> {
    let json: Option<String> = connection
        .prepare_cached("SELECT record FROM commands WHERE command_id = ?1")
        .and_then(|mut select| select.query_row([command_id], |row| row.get(0)).optional())
        .map_err(StoreError::backend)?;
    json.map(|json| serde_json::from_str(&json).map_err(StoreError::backend))
        .transpose()
}

fn load_stream_sequence(connection: &Connection, stream: &StreamId) -> Result<u64, StoreError> {
    let sequence: Option<i64> = connection
        .prepare_cached(
            "SELECT sequence FROM streams
             WHERE domain = ?1 AND entity_type = ?2 AND instance_key = ?3",
        )
        .and_then(|mut select| {
            select
                .query_row(
                    params![stream.domain(), stream.entity_type(), stream.instance_key()],
                    |row| row.get(0),
                )
                .optional()
        })
        .map_err(StoreError::backend)?;
    sequence.map_or(Ok(0), from_sql_int)
}

#[async_trait::async_trait]
impl EventStore for SqliteStore {
    fn event_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.feeds.events.subscribe()
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.write(Op::Append(request)).await?.appended()
    }

    async fn record_rejection(
        &self,
        stream: &StreamId,
        command: &CommandKey,
        message: &str,
    ) -> Result<CommandRecord, StoreError> {
        let op = Op::Reject {
            stream: stream.clone(),
            command: command.clone(),
            message: message.to_owned(),
        };
        self.write(op).await?.recorded()
    }

    async fn command_record(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let command_id = command_id.to_owned();
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
            query_events(
                connection,
                select_events!(
                    "WHERE domain = ?1 AND entity_type = ?2 AND instance_key = ?3
                     AND sequence >= ?4 ORDER BY sequence LIMIT ?5"
                ),
                params![
                    stream.domain(),
                    stream.entity_type(),
                    stream.instance_key(),
                    sql_bound(from),
                    sql_bound(max_count),
                ],
            )
        })
        .await
    }

    async fn stream_sequence(&self, stream: &StreamId) -> Result<u64, StoreError> {
        let stream = stream.clone();
        self.read(move |connection| load_stream_sequence(connection, &stream))
            .await
    }

    async fn list_instances(
        &self,
        domain: &str,
        entity_type: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage, StoreError> {
        let (domain, entity_type) = (domain.to_owned(), entity_type.to_owned());
        // Every valid key sorts after "", so no cursor is the cursor "".
        let after = cursor.unwrap_or_default().to_owned();
        let keys = self
            .read(move |connection| {
                let mut select = connection
                    .prepare_cached(
                        "SELECT instance_key FROM streams
                         WHERE domain = ?1 AND entity_type = ?2 AND instance_key > ?3
                         ORDER BY instance_key LIMIT ?4",
                    )
                    .map_err(StoreError::backend)?;
                let keys = select
                    .query_map(
                        params![
                            domain,
                            entity_type,
                            after,
                            sql_bound(limit.saturating_add(1))
                        ],
                        |row| row.get(0),
                    )
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
                    .map_err(StoreError::backend)?;
                Ok(keys)
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
            query_events(
                connection,
                select_events!("WHERE position >= ?1 ORDER BY position LIMIT ?2"),
                params![sql_bound(from), sql_bound(max_count)],
            )
        })
        .await
    }
}

#[async_trait::async_trait]
impl Outbox for SqliteStore {
    async fn add_documents(&self, documents: Vec<Document>) -> Result<usize, StoreError> {
        self.write(Op::AddDocuments(documents)).await?.added()
    }

    async fn read_outbox(
        &self,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(SELECT_OUTBOX)
                .map_err(StoreError::backend)?;
            let mut rows = statement
                .query(params![sql_bound(from), sql_bound(max_count)])
                .map_err(StoreError::backend)?;
            let mut records = Vec::new();
            while let Some(row) = rows.next().map_err(StoreError::backend)? {
                records.push(outbox_record(row)?);
            }
            Ok(records)
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

    async fn release(&self, claim: Claim, next: u64) -> Result<(), StoreError> {
        // An idle round moves nothing, and costs no write (and no fsync).
        if next <= claim.next_position() {
            return Ok(());
        }
        self.write(Op::SetCheckpoint {
            destination: claim.destination().to_owned(),
            next,
        })
        .await?
        .done()
    }

    async fn checkpoints(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|connection| {
            let mut select = connection
                .prepare_cached(
                    "SELECT destination, next_position FROM outbox_checkpoints ORDER BY destination",
                )
                .map_err(StoreError::backend)?;
            let rows = select
                .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)?)))
                .map_err(StoreError::backend)?;
            rows.map(|row| {
                let (destination, next) = row.map_err(StoreError::backend)?;
                Ok((destination, from_sql_int(next)?))
            })
            .collect()
        })
        .await
    }

    async fn add_dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), StoreError> {
        self.write(Op::PutDeadLetters(letters)).await?.done()
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(|connection| {
            let mut select = connection
                .prepare_cached("SELECT letter FROM dead_letters ORDER BY destination, position")
                .map_err(StoreError::backend)?;
            let rows = select
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(StoreError::backend)?;
            rows.map(|json| {
                serde_json::from_str(&json.map_err(StoreError::backend)?)
                    .map_err(StoreError::backend)
            })
            .collect()
        })
        .await
    }

    async fn remove_dead_letter(
        &self,
        destination: &str,
        notification_id: Uuid,
    ) -> Result<bool, StoreError> {
        self.write(Op::DeleteDeadLetter {
            destination: destination.to_owned(),
            notification_id,
        })
        .await?
        .flag()
    }

    async fn record_completions(
        &self,
        completions: Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        self.write(Op::Complete(completions)).await?.done()
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tempfile::TempDir;
    use tokio::task::JoinSet;

    use super::*;
    use crate::model::Expectation;
    use crate::store::conformance::{
        Fixture, append_n, assert_conflict, command, conformance_tests, events, request, stream,
    };

    fn temp_dir() -> TempDir {
        tempfile::tempdir().expect("a temporary directory")
    }

    fn open_in(dir: &TempDir, options: SqliteOptions) -> SqliteStore {
        SqliteStore::open(dir.path().join("events.db"), options).expect("the store opens")
    }

    async fn fixture() -> Option<Fixture> {
        let dir = temp_dir();
        Some(Fixture {
            store: Arc::new(open_in(&dir, SqliteOptions::default())),
            guard: Box::new(dir),
        })
    }

    conformance_tests!(fixture);

    /// The same suite without fsync and without pooled connections, where
    /// every read opens its own connection.
    mod relaxed {
        use super::*;

        async fn fixture() -> Option<Fixture> {
            let dir = temp_dir();
            let options = SqliteOptions {
                durable: false,
                read_connections: 0,
            };
            Some(Fixture {
                store: Arc::new(open_in(&dir, options)),
                guard: Box::new(dir),
            })
        }

        conformance_tests!(fixture);
    }

    #[tokio::test]
    async fn streams_sequences_and_command_records_survive_reopening() {
        let dir = temp_dir();
        let (a, b) = (stream("a"), stream("b"));
        let (written, record) = {
            let store = open_in(&dir, SqliteOptions::default());
            append_n(&store, &a, 3).await;
            let mut with_command = request(&b, Expectation::NoStream, events(2));
            with_command.command = Some(command("cmd-1"));
            store.append(with_command).await.unwrap();
            store
                .record_rejection(&a, &command("cmd-2"), "refused")
                .await
                .unwrap();
            let record = store.command_record("cmd-1").await.unwrap();
            (store.read_all(0, 100).await.unwrap(), record)
        };

        let store = open_in(&dir, SqliteOptions::default());
        let read = store.read_all(0, 100).await.unwrap();
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            serde_json::to_string(&written).unwrap()
        );
        assert_eq!(store.stream_sequence(&a).await.unwrap(), 3);
        assert_eq!(store.stream_sequence(&b).await.unwrap(), 2);
        assert_eq!(store.command_record("cmd-1").await.unwrap(), record);
        assert!(matches!(
            store.command_record("cmd-2").await.unwrap(),
            Some(CommandRecord::Rejected { .. })
        ));
        let page = store
            .list_instances("Bank", "Account", None, 10)
            .await
            .unwrap();
        assert_eq!(page.instance_keys, ["a", "b"]);
        // Numbering goes on where it stopped.
        let next = append_n(&store, &a, 1).await;
        assert_eq!(next.events[0].sequence, 4);
        assert_eq!(next.events[0].position, 6);
    }

    /// Pins the stored JSON: records outlive the code that wrote them.
    #[tokio::test]
    async fn command_records_are_stored_as_camel_case_json() {
        let dir = temp_dir();
        let store = open_in(&dir, SqliteOptions::default());
        let s = stream("json");
        let mut append = request(&s, Expectation::Any, Vec::new());
        append.command = Some(command("cmd-1"));
        store.append(append).await.unwrap();
        store
            .record_rejection(&s, &command("cmd-2"), "no")
            .await
            .unwrap();
        drop(store);

        let connection = Connection::open(dir.path().join("events.db")).unwrap();
        let stored = |id: &str| -> serde_json::Value {
            let json: String = connection
                .query_row(
                    "SELECT record FROM commands WHERE command_id = ?1",
                    [id],
                    |row| row.get(0),
                )
                .unwrap();
            serde_json::from_str(&json).unwrap()
        };
        let stream_json = serde_json::json!({
            "domain": "Bank", "entityType": "Account", "instanceKey": "json"
        });
        assert_eq!(
            stored("cmd-1"),
            serde_json::json!({
                "kind": "appended",
                "commandId": "cmd-1",
                "stream": stream_json,
                "commandType": "Deposit",
                "outcome": { "events": [], "streamSequence": 0 },
            })
        );
        assert_eq!(
            stored("cmd-2"),
            serde_json::json!({
                "kind": "rejected",
                "commandId": "cmd-2",
                "stream": stream_json,
                "commandType": "Deposit",
                "message": "no",
            })
        );
    }

    #[test]
    fn a_schema_newer_than_the_code_is_refused() {
        let dir = temp_dir();
        drop(open_in(&dir, SqliteOptions::default()));
        let path = dir.path().join("events.db");
        let connection = Connection::open(&path).unwrap();
        connection
            .pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1)
            .unwrap();
        drop(connection);

        match SqliteStore::open(&path, SqliteOptions::default()) {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!(found as usize, MIGRATIONS.len() + 1);
                assert_eq!(supported as usize, MIGRATIONS.len());
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    #[test]
    fn a_new_file_gets_the_newest_schema_version() {
        let dir = temp_dir();
        drop(open_in(&dir, SqliteOptions::default()));
        let connection = Connection::open(dir.path().join("events.db")).unwrap();
        let version: i64 = connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        let mode: String = connection
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn an_unopenable_path_is_an_error_that_names_it() {
        let dir = temp_dir();
        let missing = dir.path().join("no-such-directory").join("events.db");
        let error = SqliteStore::open(&missing, SqliteOptions::default()).unwrap_err();
        assert!(matches!(error, StoreError::Backend(_)), "{error:?}");
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );

        let not_sqlite = dir.path().join("not-sqlite.db");
        std::fs::write(&not_sqlite, vec![b'x'; 4096]).unwrap();
        let error = SqliteStore::open(&not_sqlite, SqliteOptions::default()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&not_sqlite.display().to_string()),
            "{error}"
        );
    }

    /// Runs jobs through `write_batch` as one batch, deterministically.
    #[test]
    fn a_failed_job_in_a_batch_is_undone_alone() {
        let dir = temp_dir();
        let path = dir.path().join("events.db");
        let mut connection = open_writer(&path, SqliteOptions::default()).unwrap();
        migrate(&mut connection).unwrap();
        let s = stream("batch");

        let mut ops = Vec::new();
        for n in 0..10u64 {
            // Good and bad interleaved; the bad ones would have inserted
            // events had they got that far.
            ops.push(Op::Append(request(&s, Expectation::Exact(n), events(1))));
            ops.push(Op::Append(request(
                &s,
                Expectation::Exact(100 + n),
                events(2),
            )));
        }
        let reused = events(1);
        ops.push(Op::Append(request(
            &stream("other"),
            Expectation::Any,
            reused.clone(),
        )));
        ops.push(Op::Append(request(
            &stream("third"),
            Expectation::Any,
            reused,
        )));
        let (jobs, answers): (Vec<Job>, Vec<_>) = ops
            .into_iter()
            .map(|op| {
                let (reply, answer) = oneshot::channel();
                (Job { op, reply }, answer)
            })
            .unzip();
        write_batch(&mut connection, jobs.into_iter());

        let results: Vec<Result<Done, StoreError>> = answers
            .into_iter()
            .map(|answer| answer.blocking_recv().expect("every job is answered"))
            .collect();
        for (n, pair) in results[..20].chunks(2).enumerate() {
            match &pair[0] {
                Ok(Done::Appended(outcome)) => {
                    assert_eq!(outcome.events[0].sequence, n as u64 + 1)
                }
                _ => panic!("good append {n} failed"),
            }
            match &pair[1] {
                Err(StoreError::Conflict { actual, .. }) => assert_eq!(*actual, n as u64 + 1),
                _ => panic!("bad append {n} did not conflict"),
            }
        }
        assert!(matches!(results[20], Ok(Done::Appended(_))));
        assert!(matches!(results[21], Err(StoreError::EventIdReused { .. })));

        let count: i64 = connection
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
            .unwrap();
        assert_eq!(count, 11);
        let positions: Vec<i64> = connection
            .prepare("SELECT position FROM events ORDER BY position")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            positions,
            (1..=11).collect::<Vec<i64>>(),
            "no gaps left by undone jobs"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_with_wrong_expectations_fail_alone() {
        let dir = temp_dir();
        let store = Arc::new(open_in(&dir, SqliteOptions::default()));
        let s = stream("mixed");
        let mut appends = JoinSet::new();
        for n in 0..20 {
            let (store, s) = (Arc::clone(&store), s.clone());
            appends.spawn(async move {
                let expectation = if n % 2 == 0 {
                    Expectation::Any
                } else {
                    Expectation::Exact(1_000)
                };
                (n, store.append(request(&s, expectation, events(1))).await)
            });
        }
        let mut landed = Vec::new();
        for (n, result) in appends.join_all().await {
            if n % 2 == 0 {
                landed.push(result.expect("a good append lands").events[0].sequence);
            } else {
                let actual = match &result {
                    Err(StoreError::Conflict { actual, .. }) => *actual,
                    other => panic!("expected a conflict, got {other:?}"),
                };
                assert!(actual <= 10);
                assert_conflict(result, &s, Expectation::Exact(1_000), actual);
            }
        }
        landed.sort_unstable();
        assert_eq!(landed, (1..=10).collect::<Vec<u64>>());
        assert_eq!(store.read_all(0, 100).await.unwrap().len(), 10);
    }

    #[tokio::test]
    async fn writes_after_the_writer_stopped_fail_with_a_backend_error() {
        let dir = temp_dir();
        let mut store = open_in(&dir, SqliteOptions::default());
        append_n(&store, &stream("a"), 1).await;
        let writer = store.writer.take().unwrap();
        drop(writer.jobs);
        writer.thread.join().unwrap();

        let result = store
            .append(request(&stream("a"), Expectation::Any, events(1)))
            .await;
        match result {
            Err(StoreError::Backend(error)) => {
                assert!(error.to_string().contains("writer"), "{error}")
            }
            other => panic!("expected a backend error, got {other:?}"),
        }
        // Reads do not need the writer.
        assert_eq!(store.stream_sequence(&stream("a")).await.unwrap(), 1);
    }
}
