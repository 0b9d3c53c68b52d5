//! The shared [`EventStore`]: PostgreSQL, for several hosts on one store.
//!
//! This module owns the store's schema inside one PostgreSQL schema (named by
//! [`PostgresConfig::schema`]) and its migrations, the connection pool, and
//! the transaction protocol that keeps appends from several hosts correct. It
//! must not decide any append rule itself (those live in [`super::rules`]),
//! must never acknowledge a write before its transaction has committed, and
//! must never let a reader see a position while a lower one can still commit.
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
//! A write that appends events takes the append lock (below) *before* its
//! snapshot, so no other append can commit between its reads and its
//! writes: it cannot lose to an append, only to a concurrent record of the
//! same command id, after which the record exists and the next attempt
//! returns it. Other writes (rejections, documents, checkpoints) are
//! optimistic: they take the lock only if they write outbox rows, and a
//! repeat attempt takes it first. So no write loses more than one attempt
//! to the same race, never a livelock.
//!
//! # Group commit
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
//!
//! # Positions follow commit order
//!
//! Positions are handed out after the last one in the `event_position`
//! sequence, but only by a transaction that holds `append_lock` (an empty
//! table locked `EXCLUSIVE`, which only appends of events and outbox writes
//! take), and the lock is held until `COMMIT` completes. So position `p + 1`
//! is handed out only after the transaction holding `p` has committed or
//! rolled back, and a reader that sees `p + 1` also sees `p` (or `p` never
//! existed): following [`EventStore::read_all`] from the position after the
//! last event seen never skips one.
//!
//! The price is that commits of events are serial across the whole store:
//! from taking positions to the end of `COMMIT` with its WAL flush, no
//! other append of events can commit. Group commit is what makes up for it:
//! the appends that queue meanwhile share the next transaction. The
//! alternative, a visibility horizon (reading only rows of transactions
//! older than the oldest one in flight), keeps commits concurrent but
//! orders events by transaction id rather than by a position handed out at
//! commit, which the `u64` position of the [`EventStore`] contract cannot
//! express.
//!
//! # The outbox
//!
//! Outbox rows take their positions from `outbox_position` under the same
//! lock, so they follow commit order with the same guarantee. A transaction
//! that adds outbox rows also sends `NOTIFY cqrs_wasi_outbox`, and one that
//! adds events `NOTIFY cqrs_wasi_events` (each with the schema as payload),
//! delivered at its commit to every host that `LISTEN`s, so dispatchers and
//! projection propagation wake on work instead of polling, and an append
//! that raises no notification wakes no dispatcher. Each destination's
//! checkpoint row is claimed `FOR UPDATE SKIP LOCKED` for a round of
//! dispatch: whichever host gets it drains the destination, the others skip
//! it. See [`outbox`].
//!
//! Positions are not contiguous: a transaction that rolls back after its
//! events were sent (one that lost a race on a stream, an event id or a
//! command id, or lost its connection) may leave a gap, which a reader
//! simply passes.

mod outbox;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use deadpool_postgres::{
    ClientWrapper, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction,
};
use futures_util::future::join_all;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Statement};
use uuid::Uuid;

use super::outbox::{Added, DeadLetter, Document, Feeds};
use super::rules::{self, Append, AppendReads, Reject, StoreTxn, StoredEventId, Write};
use super::sql::{
    SqlRow, from_json, from_sql_int, recorded_event_at, select_event_ids, select_events, sql_bound,
    stored_event_id, to_json, to_sql_int,
};
use super::{
    AppendOutcome, AppendRequest, AppendedEvent, CommandKey, CommandRecord, EventStore,
    InstancePage, StoreError,
};
use crate::error_chain::error_chain;
use crate::model::{EventContext, NewEvent, NotificationKind, RecordedEvent, StreamId};

/// Schema migrations, oldest first. Migration `i` takes the schema from
/// version `i` to `i + 1` (recorded in `schema_migrations`); a new version
/// is one more entry here, never an edit of an old one.
///
/// Each runs with `search_path` set to the store's schema alone, so names
/// are unqualified.
const MIGRATIONS: &[&str] = &[
    // Version 1. Keys compare byte by byte (`COLLATE "C"`), like every other
    // backend. `payload`, `context` and `record` are `json`, not `jsonb`: it
    // keeps the exact text (a payload reads back as written) and accepts
    // every string JSON can hold. `streams` holds each stream's last
    // sequence, and only for streams with events, which makes listing
    // instances an index range scan.
    r#"CREATE TABLE events (
           position     bigint      PRIMARY KEY,
           domain       text        COLLATE "C" NOT NULL,
           entity_type  text        COLLATE "C" NOT NULL,
           instance_key text        COLLATE "C" NOT NULL,
           sequence     bigint      NOT NULL,
           event_id     uuid        NOT NULL UNIQUE,
           event_type   text        NOT NULL,
           payload      json        NOT NULL,
           written_at   timestamptz NOT NULL,
           context      json        NOT NULL,
           UNIQUE (domain, entity_type, instance_key, sequence)
       );
       CREATE TABLE streams (
           domain       text   COLLATE "C" NOT NULL,
           entity_type  text   COLLATE "C" NOT NULL,
           instance_key text   COLLATE "C" NOT NULL,
           sequence     bigint NOT NULL,
           PRIMARY KEY (domain, entity_type, instance_key)
       );
       CREATE TABLE commands (
           command_id text COLLATE "C" PRIMARY KEY,
           record     json NOT NULL
       );
       -- The last position handed out. Read and moved only by a transaction
       -- holding append_lock.
       CREATE SEQUENCE event_position AS bigint;
       -- Holds no rows: locking it is what serialises position assignment
       -- (see the module documentation).
       CREATE TABLE append_lock ();"#,
    // Version 2: the outbox. A row points at an event (`event_position`) or
    // holds a document (`notification_id`, `topic`, `body`). Positions come
    // from `outbox_position` under append_lock, like events'.
    r#"CREATE TABLE outbox (
           position        bigint PRIMARY KEY,
           kind            text   NOT NULL,
           event_position  bigint REFERENCES events (position),
           notification_id uuid   UNIQUE,
           topic           text,
           body            json
       );
       CREATE SEQUENCE outbox_position AS bigint;
       CREATE TABLE outbox_checkpoints (
           destination   text   COLLATE "C" PRIMARY KEY,
           next_position bigint NOT NULL
       );
       CREATE TABLE dead_letters (
           destination     text   COLLATE "C" NOT NULL,
           notification_id uuid   NOT NULL,
           position        bigint NOT NULL,
           letter          json   NOT NULL,
           PRIMARY KEY (destination, notification_id)
       );
       CREATE TABLE completions (
           handler         text COLLATE "C" NOT NULL,
           notification_id text COLLATE "C" NOT NULL,
           PRIMARY KEY (handler, notification_id)
       );"#,
];

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

const SELECT_COMMAND_RECORD: &str = "SELECT record::text FROM commands WHERE command_id = $1";

const SELECT_EVENT_IDS: &str = select_event_ids!("event_id = ANY($1)");

/// [`SELECT_EVENT_IDS`] for one id, an append of one event. The server
/// plans `= ANY($1)` anew on every execution, as a generic plan assumes ten
/// ids and so never looks cheaper than a custom plan for one: 65 µs of
/// server time per append, measured, and once per append of a batch.
/// `= $1` it plans once.
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

const INSERT_COMMANDS: &str = "INSERT INTO commands (command_id, record)
     SELECT command_id, record::json FROM unnest($1::text[], $2::text[]) AS r(command_id, record)";

/// How many times a write runs before a lost race is reported as a backend
/// error. The second attempt holds the append lock throughout (see the
/// module documentation), so more than three means something else is wrong.
const WRITE_ATTEMPTS: u32 = 4;

/// How long connecting may take, unless the URL says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a call waits for a pooled connection before failing.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// How a [`PostgresStore`] connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// The PostgreSQL schema that holds the store's tables, created when
    /// missing. Hosts sharing a store name the same schema; a database can
    /// hold several stores in different schemas. Lowercase ASCII letters,
    /// digits and `_`, not starting with a digit, at most 63 bytes. Default
    /// `cqrs_wasi`.
    pub schema: String,
    /// The most connections open at once. Default 16.
    pub pool_size: usize,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            schema: "cqrs_wasi".to_owned(),
            pool_size: 16,
        }
    }
}

/// An event store in a PostgreSQL schema, which several hosts may share.
///
/// Cheap to share behind an `Arc`; every call takes a connection from the
/// pool for its duration. Connections are not encrypted (no TLS): use it on
/// loopback or a trusted network.
pub struct PostgresStore {
    pool: Pool,
    schema: String,
    /// Where the database is, without credentials, for messages.
    target: String,
    feeds: Arc<Feeds>,
    dropped_claims: Arc<outbox::DroppedClaims>,
    /// Where appends queue for [`commit_appends`], which ends when this
    /// sender is dropped with the store.
    appends: mpsc::Sender<Job>,
    /// Turns the server's notifications into `feeds`; stopped
    /// when the store is dropped.
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Where a database URL points, without credentials: `host:port/database`.
fn describe_url(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => describe(&config),
        Err(_) => "<an unparsable PostgreSQL URL>".to_owned(),
    }
}

fn describe(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let host = match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            // One port for all hosts, or one each; 5432 when none is given.
            let port = ports.get(index).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    };
    format!("{hosts}/{}", config.get_dbname().unwrap_or_default())
}

/// The store could not be opened: connected to, created or migrated. The
/// message ends with the chain of its source, which is often an error of
/// the client, whose own message says little.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot open the PostgreSQL store in schema {schema:?} at {target}: {}",
    error_chain(.source.as_ref())
)]
struct OpenError {
    schema: String,
    target: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`,
    /// or the key-value form) and opens the store in the schema `config`
    /// names, creating the schema and its tables when missing and migrating an
    /// older version. Hosts opening the same schema at once take turns.
    ///
    /// Fails with [`StoreError::SchemaTooNew`] when the schema was written by
    /// a newer version of this code, and with [`StoreError::Backend`] naming
    /// the schema and the server (never the password) when the URL or the
    /// settings are invalid or the server cannot be reached.
    ///
    /// The store's tasks (the one that commits appends, the one that
    /// listens for other hosts' changes) run on the runtime this is called
    /// on, so use the store while that runtime runs: once it has shut down,
    /// appends fail.
    pub async fn open(url: &str, config: PostgresConfig) -> Result<PostgresStore, StoreError> {
        let open_error = |target: &str, source: Box<dyn std::error::Error + Send + Sync>| {
            StoreError::backend(OpenError {
                schema: config.schema.clone(),
                target: target.to_owned(),
                source,
            })
        };
        let mut client_config: tokio_postgres::Config = url
            .parse()
            .map_err(|error| open_error(&describe_url(url), Box::new(error)))?;
        let target = describe(&client_config);
        validate_schema_name(&config.schema).map_err(|error| open_error(&target, error.into()))?;
        if config.pool_size == 0 {
            return Err(open_error(
                &target,
                "the pool size must be at least 1".into(),
            ));
        }
        // Every connection resolves the store's tables, and nothing else, in
        // its schema. The name was validated, so it needs no quoting.
        let search_path = format!("-c search_path={}", config.schema);
        let startup_options = match client_config.get_options() {
            Some(given) => format!("{given} {search_path}"),
            None => search_path,
        };
        client_config.options(&startup_options);
        if client_config.get_application_name().is_none() {
            client_config.application_name("cqrs-wasi");
        }
        if client_config.get_connect_timeout().is_none() {
            client_config.connect_timeout(CONNECT_TIMEOUT);
        }
        let listen_config = client_config.clone();
        let manager = Manager::from_config(
            client_config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|error| open_error(&target, error.into()))?;
        let feeds = Arc::new(Feeds::default());
        let (appends, queued) = mpsc::channel(MAX_BATCH);
        tokio::spawn(commit_appends(pool.clone(), queued));
        let store = PostgresStore {
            appends,
            pool,
            schema: config.schema.clone(),
            target,
            listener: outbox::listen(listen_config, config.schema.clone(), feeds.clone()),
            feeds,
            dropped_claims: Default::default(),
        };
        store.migrate().await.map_err(|error| match error {
            StoreError::Backend(source) => open_error(&store.target, source),
            other => other,
        })?;
        Ok(store)
    }

    /// Brings the schema to the newest version this code knows, in one
    /// transaction, under a lock that makes hosts opening the same schema at
    /// once take turns (so that the second sees the first's work).
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        match migrate_in(&tx, &self.schema).await {
            Ok(migrated) => {
                tx.commit().await.map_err(pg_error)?;
                if let Some((from, to)) = migrated {
                    tracing::info!(schema = %self.schema, from, to, "migrated the PostgreSQL store's schema");
                }
                Ok(())
            }
            Err(error) => {
                // Rolled back now rather than when the connection is next
                // used: the pool is about to be dropped with the store.
                let _ = tx.rollback().await;
                Err(error)
            }
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        connection(&self.pool).await
    }

    /// Runs `append` through the queue that commits appends of events in
    /// batches; an append of no events, which only records its command, in a
    /// transaction of its own.
    async fn append_grouped(&self, append: Append) -> Result<AppendOutcome, StoreError> {
        if !append.adds().events {
            return transact(&self.pool, &append).await;
        }
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::backend("the store's append queue is gone");
        self.appends
            .send(Job { append, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Runs `write` in a transaction of its own.
    async fn write<W: Write>(&self, write: W) -> Result<W::Output, StoreError> {
        transact(&self.pool, &write).await
    }

    /// Queries events with one of the [`select_events!`] statements.
    async fn query_events(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(pg_error)?;
        client
            .query(&statement, params)
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| recorded_event_at(row, 0))
            .collect()
    }
}

async fn connection(pool: &Pool) -> Result<deadpool_postgres::Client, StoreError> {
    pool.get().await.map_err(pool_error)
}

/// Runs `write` in a transaction of its own until it does not lose a race,
/// at most [`WRITE_ATTEMPTS`] times; every attempt is serial but the first
/// of a write that appends no events, which is optimistic. A write that
/// appends events takes the append lock before its reads, to hand out
/// positions itself.
async fn transact<W: Write>(pool: &Pool, write: &W) -> Result<W::Output, StoreError> {
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

// ------------------------------------------------------------ group commit

/// The most appends one transaction commits together.
const MAX_BATCH: usize = 64;

/// An append waiting for its batch, and where its caller waits for the
/// answer.
struct Job {
    append: Append,
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// Commits the appends queued on `jobs`, every one already waiting
/// together, a batch at a time, until the store closes the queue.
///
/// A batch takes one append per stream, in the order they came: two would
/// read the same head, and the later would fail the batch. The others wait
/// for the next batch. A batch whose transaction fails as a whole (see
/// [`write_batch`]) has committed nothing; each of its appends then runs on
/// its own, so that each gets its own outcome.
async fn commit_appends(pool: Pool, mut jobs: mpsc::Receiver<Job>) {
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
    let failed = results
        .iter()
        .position(|result| matches!(result, Err(StoreError::Backend(_))));
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

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .field("schema", &self.schema)
            .field("pool", &self.pool.status())
            .finish()
    }
}

/// The migration itself, in `tx`: `Some((from, to))` when it changed the
/// schema, `None` when it was already at the newest version.
async fn migrate_in(
    tx: &Transaction<'_>,
    schema: &str,
) -> Result<Option<(usize, usize)>, StoreError> {
    let supported = MIGRATIONS.len();
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&migration_lock_key(schema)],
    )
    .await
    .map_err(pg_error)?;
    // Checked first, so that a role without the right to create schemas can
    // use one an administrator created.
    let exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
            .await
            .map_err(pg_error)?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer     PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(pg_error)?;
    let found: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
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
        return Ok(None);
    }
    for (version, migration) in (found + 1..).zip(&MIGRATIONS[found..]) {
        tx.batch_execute(migration).await.map_err(pg_error)?;
        let version = i32::try_from(version).map_err(StoreError::backend)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(pg_error)?;
    }
    Ok(Some((found, supported)))
}

/// A schema name is spliced into SQL and into the connection's startup
/// options, so it is restricted to what needs no quoting anywhere.
fn validate_schema_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let valid = name.len() <= 63
        && bytes
            .next()
            .is_some_and(|first| first.is_ascii_lowercase() || first == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid schema name {name:?}: use 1 to 63 lowercase ASCII letters, digits and `_`, \
             not starting with a digit"
        ))
    }
}

/// The advisory lock that serialises migrations of one schema: derived from
/// its name (there may be no table yet to lock), the same in every version
/// of this code.
fn migration_lock_key(schema: &str) -> i64 {
    let digest = Sha256::digest(format!("cqrs-wasi migrations of {schema}"));
    let mut key = [0; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

/// Whether `error` means the transaction lost a race with a concurrent one
/// and running it again will decide differently.
fn lost_race(error: &StoreError) -> bool {
    let StoreError::Backend(source) = error else {
        return false;
    };
    source
        .downcast_ref::<PgError>()
        .and_then(PgError::code)
        .is_some_and(|code| {
            [
                SqlState::UNIQUE_VIOLATION,
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
            ]
            .contains(code)
        })
}

/// An error of the PostgreSQL client or its pool. Its message quotes its
/// causes: the client's own message is only "db error" or "error connecting
/// to server", and the part worth reading (the server's message, the
/// refused connection) is a cause.
#[derive(Debug, thiserror::Error)]
enum PgError {
    /// A statement, or the connection it went on, failed.
    #[error("{}", error_chain(.0))]
    Client(#[source] tokio_postgres::Error),
    /// No pooled connection could be had.
    #[error("{}", error_chain(.0))]
    Pool(#[source] deadpool_postgres::PoolError),
}

impl PgError {
    /// The server's SQLSTATE, if the server answered with an error.
    fn code(&self) -> Option<&SqlState> {
        match self {
            PgError::Client(error)
            | PgError::Pool(deadpool_postgres::PoolError::Backend(error)) => error.code(),
            PgError::Pool(_) => None,
        }
    }
}

fn pg_error(error: tokio_postgres::Error) -> StoreError {
    StoreError::backend(PgError::Client(error))
}

fn pool_error(error: deadpool_postgres::PoolError) -> StoreError {
    StoreError::backend(PgError::Pool(error))
}

/// How a write transaction takes the append lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// When it first writes outbox rows, if it does: for writes that append
    /// no events, whose reads then run concurrently with appends.
    Optimistic,
    /// Before its snapshot: no other append commits while it runs.
    Serial,
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
struct PgTxn<'c> {
    client: &'c ClientWrapper,
    mode: Mode,
    /// Whether `BEGIN` was sent: from then on, the transaction must end.
    begun: bool,
    /// Whether `COMMIT` was answered, so that nothing is left to roll back.
    finished: bool,
    /// Whether the transaction holds `append_lock` (or will, once what it
    /// sent has run).
    locked: bool,
    /// Whether it added events or outbox rows, which projection
    /// propagation and dispatchers must hear of.
    added: Added,
    /// The event positions it hands out (shared with the batch it is a
    /// member of).
    positions: Arc<Positions>,
    /// Writes not sent yet, sent with the next statement.
    held: Held,
    /// Whether this value ends the transaction (commits it, or rolls it
    /// back when dropped), or runs one append in a batch's transaction and
    /// hands what it holds to the batch ([`PgTxn::adopt`]).
    ends: bool,
}

impl<'c> PgTxn<'c> {
    /// A transaction on `client`, begun with its first statement.
    fn new(client: &'c ClientWrapper, mode: Mode) -> Self {
        PgTxn {
            client,
            mode,
            begun: false,
            finished: false,
            locked: mode == Mode::Serial,
            added: Added::default(),
            positions: Arc::default(),
            held: Held::default(),
            ends: true,
        }
    }

    /// A transaction for one append of `batch`: it sends no `BEGIN` (the batch
    /// has), holds the append lock (the batch is serial), and leaves the
    /// end of the transaction to the batch.
    fn member_of(batch: &PgTxn<'c>) -> Self {
        let mut member = PgTxn::new(batch.client, Mode::Serial);
        member.begun = true;
        member.ends = false;
        member.positions = Arc::clone(&batch.positions);
        member
    }

    /// Takes over what `member` holds for the end of the transaction: the
    /// writes it held back, and what it added.
    fn adopt(&mut self, mut member: PgTxn<'c>) {
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
    async fn send<F: Future>(&mut self, statements: F) -> Result<F::Output, StoreError> {
        let client = self.client;
        let begin = (!self.begun).then_some(match self.mode {
            Mode::Optimistic => BEGIN,
            Mode::Serial => BEGIN_SERIAL,
        });
        // Set before anything is sent, so that a future dropped from here on
        // still rolls the transaction back.
        self.begun = true;
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
    async fn commit(mut self) -> Result<(), StoreError> {
        if !self.begun && self.held.is_empty() {
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
        self.finished = true;
        committed?
    }

    /// Takes `append_lock` unless the transaction holds it already, then
    /// sends `statements`, in one round trip with what the transaction owes
    /// the server (see [`PgTxn::send`]).
    async fn with_lock<F: Future>(&mut self, statements: F) -> Result<F::Output, StoreError> {
        let client = self.client;
        let locked = self.locked;
        let lock = async {
            if locked {
                Ok(())
            } else {
                client.batch_execute(LOCK_APPENDS).await
            }
        };
        let (locked, output) = self.send(async { tokio::join!(lock, statements) }).await?;
        locked.map_err(pg_error)?;
        self.locked = true;
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

/// The last event position a transaction, with the members of its batch,
/// has handed out. It starts from the store's, read under the append lock
/// ([`SELECT_LAST_POSITION`]). Held events go to the server only with the
/// next statement, which for an append is `COMMIT`, so every member reads
/// the same one (or a later one, were a member to send its events early),
/// and the larger wins.
#[derive(Debug, Default)]
struct Positions(std::sync::Mutex<Option<u64>>);

impl Positions {
    fn last(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the store's last position was read.
    fn known(&self) -> bool {
        self.last().is_some()
    }

    /// The store had handed out positions up to `last` when read.
    fn seen(&self, last: u64) {
        let mut mine = self.last();
        *mine = Some(mine.map_or(last, |mine| mine.max(last)));
    }

    /// Hands out `count` positions; returns the first.
    fn take(&self, count: u64) -> Result<u64, StoreError> {
        let mut last = self.last();
        let first = last
            .ok_or_else(|| StoreError::backend("positions handed out before the last was read"))?
            + 1;
        *last = Some(first + count - 1);
        Ok(first)
    }
}

/// The writes a [`PgTxn`] holds back to send with its next statement, one
/// statement each: events, their outbox rows (which point at them), command
/// records.
#[derive(Default)]
struct Held {
    events: Option<HeldEvents>,
    /// Outbox rows for events: kind and event position
    /// ([`outbox::INSERT_EVENT_ROWS`]).
    rows: Option<HeldPairs<&'static str, i64>>,
    /// Command records: command id and record ([`INSERT_COMMANDS`]).
    records: Option<HeldPairs<String, String>>,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.events.is_none() && self.rows.is_none() && self.records.is_none()
    }

    /// Adds `other`'s writes after these.
    fn extend(&mut self, other: Held) {
        fn merge<T: HeldStatement>(mine: &mut Option<T>, theirs: Option<T>) {
            match (mine.as_mut(), theirs) {
                (Some(mine), Some(theirs)) => mine.extend(theirs),
                (None, theirs) => *mine = theirs,
                (Some(_), None) => {}
            }
        }
        merge(&mut self.events, other.events);
        merge(&mut self.rows, other.rows);
        merge(&mut self.records, other.records);
    }

    /// Sends the statements, in order, when first polled, and returns the
    /// first error.
    async fn send(&self, client: &ClientWrapper) -> Result<(), tokio_postgres::Error> {
        async fn execute(
            client: &ClientWrapper,
            held: Option<&impl HeldStatement>,
        ) -> Result<(), tokio_postgres::Error> {
            match held {
                Some(held) => client
                    .execute(held.statement(), &held.params())
                    .await
                    .map(drop),
                None => Ok(()),
            }
        }
        let (events, rows, records) = tokio::join!(
            execute(client, self.events.as_ref()),
            execute(client, self.rows.as_ref()),
            execute(client, self.records.as_ref()),
        );
        events.and(rows).and(records)
    }
}

/// One statement of [`Held`]: its rows, as arrays, grow with every write it
/// holds, and one execution inserts them all.
trait HeldStatement {
    fn statement(&self) -> &Statement;
    fn params(&self) -> Vec<&(dyn ToSql + Sync)>;
    /// Adds `other`'s rows after these.
    fn extend(&mut self, other: Self);
}

/// A statement of [`Held`] that inserts pairs, as two arrays.
struct HeldPairs<A, B> {
    insert: Statement,
    firsts: Vec<A>,
    seconds: Vec<B>,
}

impl<A, B> HeldPairs<A, B> {
    fn new(insert: Statement) -> Self {
        HeldPairs {
            insert,
            firsts: Vec::new(),
            seconds: Vec::new(),
        }
    }

    fn push(&mut self, first: A, second: B) {
        self.firsts.push(first);
        self.seconds.push(second);
    }
}

impl<A: ToSql + Sync, B: ToSql + Sync> HeldStatement for HeldPairs<A, B> {
    fn statement(&self) -> &Statement {
        &self.insert
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![&self.firsts, &self.seconds]
    }

    fn extend(&mut self, other: Self) {
        self.firsts.extend(other.firsts);
        self.seconds.extend(other.seconds);
    }
}

/// Events held back by a [`PgTxn`], inserted with the moves of their
/// streams by one statement, [`INSERT_EVENTS`].
struct HeldEvents {
    insert: Statement,
    positions: Vec<i64>,
    domains: Vec<String>,
    entity_types: Vec<String>,
    instance_keys: Vec<String>,
    sequences: Vec<i64>,
    event_ids: Vec<Uuid>,
    event_types: Vec<String>,
    payloads: Vec<String>,
    written_at: Vec<OffsetDateTime>,
    contexts: Vec<String>,
}

impl HeldEvents {
    fn new(insert: Statement) -> Self {
        HeldEvents {
            insert,
            positions: Vec::new(),
            domains: Vec::new(),
            entity_types: Vec::new(),
            instance_keys: Vec::new(),
            sequences: Vec::new(),
            event_ids: Vec::new(),
            event_types: Vec::new(),
            payloads: Vec::new(),
            written_at: Vec::new(),
            contexts: Vec::new(),
        }
    }

    fn push(
        &mut self,
        stream: &StreamId,
        sequence: u64,
        position: u64,
        event: &NewEvent,
        written_at: OffsetDateTime,
        context: &str,
    ) -> Result<(), StoreError> {
        self.positions.push(to_sql_int(position)?);
        self.sequences.push(to_sql_int(sequence)?);
        self.domains.push(stream.domain().to_owned());
        self.entity_types.push(stream.entity_type().to_owned());
        self.instance_keys.push(stream.instance_key().to_owned());
        self.event_ids.push(event.event_id);
        self.event_types.push(event.event_type.clone());
        self.payloads.push(event.payload.get().to_owned());
        self.written_at.push(written_at);
        self.contexts.push(context.to_owned());
        Ok(())
    }
}

impl HeldStatement for HeldEvents {
    fn statement(&self) -> &Statement {
        &self.insert
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.positions,
            &self.domains,
            &self.entity_types,
            &self.instance_keys,
            &self.sequences,
            &self.event_ids,
            &self.event_types,
            &self.payloads,
            &self.written_at,
            &self.contexts,
        ]
    }

    fn extend(&mut self, other: Self) {
        self.positions.extend(other.positions);
        self.domains.extend(other.domains);
        self.entity_types.extend(other.entity_types);
        self.instance_keys.extend(other.instance_keys);
        self.sequences.extend(other.sequences);
        self.event_ids.extend(other.event_ids);
        self.event_types.extend(other.event_types);
        self.payloads.extend(other.payloads);
        self.written_at.extend(other.written_at);
        self.contexts.extend(other.contexts);
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
        if self.ends && self.begun && !self.finished {
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
            &stream.domain(),
            &stream.entity_type(),
            &stream.instance_key(),
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
            &stream.domain(),
            &stream.entity_type(),
            &stream.instance_key(),
        ];
        let sequence = client.query_opt(&select_sequence, &sequence_params);
        let locked = self.locked;
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
                    written_at: Some(written_at),
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
            .push(record.command_id().to_owned(), json);
        Ok(())
    }

    /// Held back like events (which take the append lock first), and sent
    /// after them.
    async fn insert_event_rows(
        &mut self,
        rows: &[(NotificationKind, u64)],
    ) -> Result<(), StoreError> {
        if !self.locked {
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
}

/// Inserts events, numbered and placed by the caller, moves their streams'
/// sequences to their last events, and moves the position sequence past
/// them (never back: a batch whose member sent its events early may send a
/// lower last position after a higher one). Run only under `append_lock`,
/// with positions after [`SELECT_LAST_POSITION`]'s. A stream row moved by a
/// concurrent transaction makes the transaction fail, as do two moves of
/// one stream in one statement.
const INSERT_EVENTS: &str = "
    WITH batch AS MATERIALIZED (
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                             $6::uuid[], $7::text[], $8::text[], $9::timestamptz[], $10::text[])
            AS e (position, domain, entity_type, instance_key, sequence, event_id, event_type,
                  payload, written_at, context)
    ), inserted AS (
        INSERT INTO events (position, domain, entity_type, instance_key, sequence, event_id,
                            event_type, payload, written_at, context)
        SELECT position, domain, entity_type, instance_key, sequence, event_id, event_type,
               payload::json, written_at, context::json
        FROM batch
    ), moved AS (
        INSERT INTO streams (domain, entity_type, instance_key, sequence)
        SELECT domain, entity_type, instance_key, max(sequence) FROM batch
        GROUP BY domain, entity_type, instance_key
        ON CONFLICT (domain, entity_type, instance_key) DO UPDATE SET sequence = excluded.sequence
    )
    SELECT setval('event_position', greatest(
        (SELECT max(position) FROM batch),
        (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM event_position)))";

/// The last position handed out; final only under `append_lock`.
const SELECT_LAST_POSITION: &str =
    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM event_position";

const SELECT_STREAM_SEQUENCE: &str =
    "SELECT sequence FROM streams WHERE domain = $1 AND entity_type = $2 AND instance_key = $3";

/// Maps the row of [`SELECT_LAST_POSITION`].
fn last_position(row: &Row) -> Result<u64, StoreError> {
    from_sql_int(row.try_get(0).map_err(pg_error)?)
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

impl SqlRow for Row {
    fn text(&self, index: usize) -> Result<String, StoreError> {
        self.try_get(index).map_err(pg_error)
    }

    fn optional_text(&self, index: usize) -> Result<Option<String>, StoreError> {
        self.try_get(index).map_err(pg_error)
    }

    fn int(&self, index: usize) -> Result<i64, StoreError> {
        self.try_get(index).map_err(pg_error)
    }

    fn uuid(&self, index: usize) -> Result<Uuid, StoreError> {
        self.try_get(index).map_err(pg_error)
    }

    fn time(&self, index: usize) -> Result<OffsetDateTime, StoreError> {
        self.try_get(index).map_err(pg_error)
    }
}

fn command_record(row: &Row) -> Result<CommandRecord, StoreError> {
    from_json("command record", row.try_get(0).map_err(pg_error)?)
}

fn stream_sequence(row: Option<Row>) -> Result<u64, StoreError> {
    match row {
        Some(row) => from_sql_int(row.try_get(0).map_err(pg_error)?),
        None => Ok(0),
    }
}

#[async_trait::async_trait]
impl EventStore for PostgresStore {
    fn event_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.feeds.events.subscribe()
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.append_grouped(Append(request)).await
    }

    async fn record_rejection(
        &self,
        stream: &StreamId,
        command: &CommandKey,
        message: &str,
    ) -> Result<CommandRecord, StoreError> {
        self.write(Reject {
            stream: stream.clone(),
            command: command.clone(),
            message: message.to_owned(),
        })
        .await
    }

    async fn command_record(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(SELECT_COMMAND_RECORD)
            .await
            .map_err(pg_error)?;
        let row = client
            .query_opt(&select, &[&command_id])
            .await
            .map_err(pg_error)?;
        row.map(|row| command_record(&row)).transpose()
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.query_events(
            select_events!(
                "::text",
                "WHERE domain = $1 AND entity_type = $2 AND instance_key = $3
                 AND sequence >= $4 ORDER BY sequence LIMIT $5"
            ),
            &[
                &stream.domain(),
                &stream.entity_type(),
                &stream.instance_key(),
                &sql_bound(from),
                &sql_bound(max_count),
            ],
        )
        .await
    }

    async fn stream_sequence(&self, stream: &StreamId) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(SELECT_STREAM_SEQUENCE)
            .await
            .map_err(pg_error)?;
        let row = client
            .query_opt(
                &select,
                &[
                    &stream.domain(),
                    &stream.entity_type(),
                    &stream.instance_key(),
                ],
            )
            .await
            .map_err(pg_error)?;
        stream_sequence(row)
    }

    async fn list_instances(
        &self,
        domain: &str,
        entity_type: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage, StoreError> {
        // Every valid key sorts after "", so no cursor is the cursor "".
        let after = cursor.unwrap_or_default();
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT instance_key FROM streams
                 WHERE domain = $1 AND entity_type = $2 AND instance_key > $3
                 ORDER BY instance_key LIMIT $4",
            )
            .await
            .map_err(pg_error)?;
        let keys = client
            .query(
                &select,
                &[
                    &domain,
                    &entity_type,
                    &after,
                    &sql_bound(limit.saturating_add(1)),
                ],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| row.try_get(0).map_err(pg_error))
            .collect::<Result<Vec<String>, _>>()?;
        Ok(rules::instance_page(keys, cursor, limit))
    }

    /// Positions are handed out in commit order (see the module
    /// documentation), so every event below the highest position this
    /// statement's snapshot sees is committed, or will never be.
    async fn read_all(
        &self,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.query_events(
            select_events!("::text", "WHERE position >= $1 ORDER BY position LIMIT $2"),
            &[&sql_bound(from), &sql_bound(max_count)],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use tokio::task::JoinSet;

    use super::testing::ScratchSchema;
    use super::*;
    use crate::model::Expectation;
    use crate::store::Outbox;
    use crate::store::conformance::{
        Fixture, append_n, command, conformance_tests, events, request, stream,
    };

    async fn fixture() -> Option<Fixture> {
        let schema = ScratchSchema::new().await?;
        Some(Fixture {
            store: Arc::new(schema.open().await),
            guard: Box::new(schema),
        })
    }

    conformance_tests!(fixture);

    #[tokio::test]
    async fn a_schema_written_by_a_newer_version_is_refused() {
        let Some(schema) = ScratchSchema::new().await else {
            return;
        };
        drop(schema.open().await);
        let newer = MIGRATIONS.len() + 1;
        schema
            .execute(&format!(
                "INSERT INTO schema_migrations (version) VALUES ({newer})"
            ))
            .await;
        match PostgresStore::open(schema.url(), schema.config()).await {
            Err(error @ StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!(found as usize, newer);
                assert_eq!(supported as usize, MIGRATIONS.len());
                assert!(error.to_string().contains("upgrade the host"), "{error}");
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn hosts_opening_a_new_schema_at_once_create_it_once() {
        let Some(schema) = ScratchSchema::new().await else {
            return;
        };
        let mut opening = JoinSet::new();
        for _ in 0..4 {
            let (url, options) = (schema.url().to_owned(), schema.config());
            opening.spawn(async move { PostgresStore::open(&url, options).await });
        }
        let stores: Vec<PostgresStore> = opening
            .join_all()
            .await
            .into_iter()
            .map(|opened| opened.expect("every host opens the store"))
            .collect();
        let client = stores[0].client().await.unwrap();
        let versions: Vec<i32> = client
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let expected: Vec<i32> = (1..=MIGRATIONS.len() as i32).collect();
        assert_eq!(versions, expected, "each migration ran once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn stores_sharing_a_schema_share_streams_commands_and_positions() {
        let Some(schema) = ScratchSchema::new().await else {
            return;
        };
        let (one, two) = (Arc::new(schema.open().await), Arc::new(schema.open().await));
        let s = stream("shared");
        let mut appends = JoinSet::new();
        for n in 0..40 {
            let store = if n % 2 == 0 { &one } else { &two };
            let (store, s) = (Arc::clone(store), s.clone());
            appends.spawn(async move { append_n(&*store, &s, 1 + n % 3).await });
        }
        appends.join_all().await;
        let mut with_command = request(&s, Expectation::Any, events(1));
        with_command.command = Some(command("cmd-shared"));
        one.append(with_command).await.unwrap();

        let read = two.read_stream(&s, 1, usize::MAX).await.unwrap();
        let sequences: Vec<u64> = read.iter().map(|event| event.sequence).collect();
        let total = (0..40).map(|n| 1 + n % 3).sum::<usize>() as u64 + 1;
        assert_eq!(sequences, (1..=total).collect::<Vec<_>>());
        assert!(
            read.windows(2)
                .all(|pair| pair[0].position < pair[1].position),
            "positions increase with sequences"
        );
        assert!(two.command_record("cmd-shared").await.unwrap().is_some());
        assert_eq!(
            one.read_all(0, usize::MAX).await.unwrap().len() as u64,
            total
        );
    }

    #[tokio::test]
    async fn invalid_options_are_refused_with_a_message_that_keeps_the_password() {
        let url = "postgres://someone:s3cret@127.0.0.1:1/nowhere";
        let refusals = [
            (
                PostgresConfig {
                    schema: "Has-Capitals".to_owned(),
                    ..PostgresConfig::default()
                },
                "invalid schema name",
            ),
            (
                PostgresConfig {
                    schema: "1st".to_owned(),
                    ..PostgresConfig::default()
                },
                "invalid schema name",
            ),
            (
                PostgresConfig {
                    pool_size: 0,
                    ..PostgresConfig::default()
                },
                "pool size",
            ),
        ];
        for (options, expected) in refusals {
            let error = PostgresStore::open(url, options).await.unwrap_err();
            let message = error_chain(&error);
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("127.0.0.1:1/nowhere"), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
        let error =
            PostgresStore::open("postgres://someone:s3cret@[::1", PostgresConfig::default())
                .await
                .unwrap_err();
        assert!(!error_chain(&error).contains("s3cret"), "{error}");
    }

    /// Appends `request` the way [`PostgresStore::append`] does, but pauses
    /// for `pause` between taking positions and `COMMIT`: a deliberately slow
    /// transaction.
    async fn append_slowly(
        store: &PostgresStore,
        request: &AppendRequest,
        pause: Duration,
    ) -> AppendOutcome {
        let client = store.client().await.unwrap();
        let mut txn = PgTxn::new(&client, Mode::Optimistic);
        let outcome = rules::append(&mut txn, request, rules::now_micros())
            .await
            .unwrap();
        tokio::time::sleep(pause).await;
        txn.commit().await.unwrap();
        outcome
    }

    /// Waits until a transaction waits for the schema's `append_lock`.
    async fn a_transaction_waits_for_the_append_lock(store: &PostgresStore) {
        let client = store.client().await.unwrap();
        for _ in 0..1000 {
            let waiting: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_locks
                     WHERE relation = 'append_lock'::regclass AND NOT granted",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no transaction waited for the append lock");
    }

    /// Two appends of one command id (to different streams) that both read
    /// no record for it: the second decides on its snapshot and inserts its
    /// events once the first commits, and its record, sent with `COMMIT`,
    /// fails the commit as a lost race. Nothing of it is kept, and run again
    /// it returns the first's record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_command_record_that_loses_at_commit_is_a_lost_race() {
        let Some(schema) = ScratchSchema::new().await else {
            return;
        };
        let store = Arc::new(schema.open().await);
        let mut first = request(&stream("first"), Expectation::Any, events(1));
        first.command = Some(command("cmd-late"));
        let mut second = request(&stream("second"), Expectation::Any, events(1));
        second.command = Some(command("cmd-late"));

        // The first takes its positions and holds the append lock until it
        // commits.
        let client = store.client().await.unwrap();
        let mut first_txn = PgTxn::new(&client, Mode::Optimistic);
        let first_outcome = rules::append(&mut first_txn, &first, rules::now_micros())
            .await
            .unwrap();
        // The second reads (no record yet), then waits for the lock.
        let racing = {
            let (store, second) = (Arc::clone(&store), second.clone());
            tokio::spawn(async move {
                let client = store.client().await.unwrap();
                let mut txn = PgTxn::new(&client, Mode::Optimistic);
                let decided = rules::append(&mut txn, &second, rules::now_micros()).await;
                (decided, txn.commit().await)
            })
        };
        a_transaction_waits_for_the_append_lock(&store).await;
        first_txn.commit().await.unwrap();

        let (decided, committed) = racing.await.unwrap();
        assert!(decided.is_ok(), "the rules accept the second: {decided:?}");
        let error = committed.expect_err("the second's record fails its commit");
        assert!(lost_race(&error), "not a lost race: {error}");
        assert_eq!(store.stream_sequence(&stream("second")).await.unwrap(), 0);
        let record = store.command_record("cmd-late").await.unwrap();
        assert!(
            matches!(&record, Some(CommandRecord::Appended { outcome, .. }) if *outcome == first_outcome),
            "{record:?}"
        );
        match store.append(second).await {
            Err(StoreError::CommandAlreadyExecuted { record: stands }) => {
                assert_eq!(Some(*stands), record);
            }
            other => panic!("expected CommandAlreadyExecuted, got {other:?}"),
        }
        assert_eq!(store.stream_sequence(&stream("second")).await.unwrap(), 0);
    }

    /// A transaction dropped before it ends (a refusal, or a caller that
    /// stopped waiting) is rolled back before its connection serves again.
    #[tokio::test]
    async fn a_dropped_transaction_is_rolled_back_before_its_connection_serves_again() {
        let Some(schema) = ScratchSchema::new().await else {
            return;
        };
        let store = PostgresStore::open(
            schema.url(),
            PostgresConfig {
                pool_size: 1,
                ..schema.config()
            },
        )
        .await
        .unwrap();
        {
            let client = store.client().await.unwrap();
            let mut txn = PgTxn::new(&client, Mode::Optimistic);
            let request = request(&stream("dropped"), Expectation::Any, events(1));
            rules::append(&mut txn, &request, rules::now_micros())
                .await
                .unwrap();
        }
        // The pool's one connection, which the dropped transaction used.
        let client = store.client().await.unwrap();
        let isolation: String = client
            .query_one("SHOW transaction_isolation", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(isolation, "read committed", "no transaction is open");
        drop(client);
        assert!(store.read_all(0, usize::MAX).await.unwrap().is_empty());
    }

    /// Appends that queue while a batch commits are committed together:
    /// several appends to one transaction (one `COMMIT`, one WAL flush),
    /// each with its own outcome.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn appends_that_wait_together_commit_in_one_transaction() {
        let Some(schema) = ScratchSchema::new().await else {
            return;
        };
        let store = Arc::new(schema.open().await);
        let mut appends = JoinSet::new();
        for n in 0..64 {
            let store = Arc::clone(&store);
            appends
                .spawn(async move { append_n(&*store, &stream(&format!("grouped-{n}")), 2).await });
        }
        let outcomes = appends.join_all().await;
        let mut positions: Vec<u64> = outcomes
            .iter()
            .flat_map(|outcome| outcome.events.iter().map(|event| event.position))
            .collect();
        positions.sort_unstable();
        positions.dedup();
        assert_eq!(
            positions.len(),
            128,
            "every event has a position of its own"
        );
        let row = store
            .client()
            .await
            .unwrap()
            .query_one(
                "SELECT count(*), count(DISTINCT xmin::text) FROM events",
                &[],
            )
            .await
            .unwrap();
        let (events, transactions): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(events, 128);
        assert!(
            transactions < 64,
            "64 appends waiting together took {transactions} transactions"
        );
    }

    /// A claim dropped without release (a dispatcher round cut short) is
    /// rolled back, not closed: its connection serves again with no
    /// transaction open, and the destination is free at once, for this
    /// store and for another host's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_claim_is_rolled_back_and_its_connection_serves_again() {
        let Some(schema) = ScratchSchema::new().await else {
            return;
        };
        let options = PostgresConfig {
            pool_size: 1,
            ..schema.config()
        };
        let store = PostgresStore::open(schema.url(), options.clone())
            .await
            .unwrap();
        let other_host = PostgresStore::open(schema.url(), options).await.unwrap();
        // The pool's one connection: its backend, and whether it is inside a
        // transaction that took a row lock (which assigns a transaction id).
        let backend = async || {
            let row = store
                .client()
                .await
                .unwrap()
                .query_one(
                    "SELECT pg_backend_pid(), txid_current_if_assigned() IS NOT NULL",
                    &[],
                )
                .await
                .unwrap();
            (row.get::<_, i32>(0), row.get::<_, bool>(1))
        };
        let (first, _) = backend().await;
        for round in 0..20 {
            let claim = store.claim("topic").await.unwrap();
            drop(claim.unwrap_or_else(|| panic!("round {round}: the dropped claim is free")));
            assert_eq!(backend().await, (first, false), "round {round}");
            let claim = other_host.claim("topic").await.unwrap();
            let claim = claim.unwrap_or_else(|| panic!("round {round}: free for another host"));
            other_host.release(claim, 1).await.unwrap();
        }
    }

    /// A reader that follows `read_all` from the position after the last
    /// event it saw, while fast appends keep committing and slow
    /// transactions hold positions they have not committed yet, sees every
    /// event exactly once, in position order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_position_following_reader_never_skips_an_event_of_a_slow_transaction() {
        let Some(schema) = ScratchSchema::new().await else {
            return;
        };
        let store = Arc::new(
            PostgresStore::open(
                schema.url(),
                PostgresConfig {
                    pool_size: 24,
                    ..schema.config()
                },
            )
            .await
            .unwrap(),
        );
        let writing = Arc::new(AtomicBool::new(true));

        let reader = {
            let (store, writing) = (Arc::clone(&store), Arc::clone(&writing));
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut next = 1;
                loop {
                    // Read before checking the flag, so that the last read
                    // starts after every writer has finished.
                    let finished = !writing.load(Ordering::SeqCst);
                    let batch = store.read_all(next, 7).await.unwrap();
                    if batch.is_empty() {
                        if finished {
                            return seen;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    for event in batch {
                        assert!(event.position >= next, "read_all went backwards");
                        next = event.position + 1;
                        seen.push((event.position, event.event_id));
                    }
                }
            })
        };

        let started = Instant::now();
        let mut writers = JoinSet::new();
        // Fast appends, some to one shared stream, so that they also race.
        for writer in 0..6 {
            let store = Arc::clone(&store);
            writers.spawn(async move {
                for n in 0..30 {
                    let s = if n % 3 == 0 {
                        stream("shared")
                    } else {
                        stream(&format!("fast-{writer}"))
                    };
                    append_n(&*store, &s, 1 + n % 2).await;
                }
            });
        }
        // Slow transactions, started while the fast ones run: each takes its
        // positions, then holds them uncommitted for a while.
        for slow in 0..5 {
            let store = Arc::clone(&store);
            writers.spawn(async move {
                tokio::time::sleep(Duration::from_millis(10 + 40 * slow)).await;
                let request = request(
                    &stream(&format!("slow-{slow}")),
                    Expectation::Any,
                    events(3),
                );
                append_slowly(&store, &request, Duration::from_millis(100)).await;
            });
        }
        writers.join_all().await;
        writing.store(false, Ordering::SeqCst);
        let seen = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the reader catches up")
            .unwrap();

        let all: Vec<(u64, Uuid)> = store
            .read_all(0, usize::MAX)
            .await
            .unwrap()
            .iter()
            .map(|event| (event.position, event.event_id))
            .collect();
        let fast: usize = (0..30).map(|n| 1 + n % 2).sum();
        assert_eq!(all.len(), 6 * fast + 5 * 3);
        let seen_positions: HashSet<u64> = seen.iter().map(|&(position, _)| position).collect();
        let skipped: Vec<u64> = all
            .iter()
            .map(|&(position, _)| position)
            .filter(|position| !seen_positions.contains(position))
            .collect();
        assert!(
            skipped.is_empty(),
            "the reader skipped positions {skipped:?}"
        );
        assert_eq!(seen.len(), all.len(), "the reader saw no event twice");
        assert!(seen == all, "the reader saw the events in position order");
        let ids: HashSet<Uuid> = all.iter().map(|&(_, id)| id).collect();
        assert_eq!(ids.len(), all.len());
        eprintln!(
            "{} events written and followed in {:?}",
            all.len(),
            started.elapsed()
        );
    }
}
