//! The SQLite file: opening it with the pragmas the store depends on, its
//! tables, and their migrations.
//!
//! A migration is never edited once released: a new version of the schema
//! is one more entry of [`MIGRATIONS`], kept in `PRAGMA user_version`.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{BUSY_TIMEOUT, STATEMENT_CACHE, SqliteConfig};
use crate::store::StoreError;
use crate::store::sql::pending_migrations;

/// Schema migrations, oldest first. Migration `i` takes the file from schema
/// version `i` to `i + 1` (kept in `PRAGMA user_version`); a new version is
/// one more entry here, never an edit of an old one.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // Version 3: a command record's appended events say when they were
    // written (`writtenAt`, RFC 3339 UTC); records written before kept only
    // their positions, so each gets its events' times from `events`. An
    // event missing there (a damaged file) gets a null that fails the
    // record's read with a reason, rather than a record that lost an event.
    // A subquery's result loses its JSON subtype, so `json()` marks it as
    // JSON again (json_set would store it as a string).
    "UPDATE commands SET record = json_set(record, '$.outcome.events', json((
         SELECT json_group_array(json_set(item.value, '$.writtenAt',
                    strftime('%Y-%m-%dT%H:%M:%S', events.written_at / 1000000, 'unixepoch')
                    || printf('.%06dZ', events.written_at % 1000000))
                    ORDER BY item.key)
         FROM json_each(commands.record, '$.outcome.events') AS item
         LEFT JOIN events ON events.position = json_extract(item.value, '$.position'))))
     WHERE json_extract(record, '$.kind') = 'appended'
       AND EXISTS (SELECT 1 FROM json_each(commands.record, '$.outcome.events') AS item
                   WHERE json_type(item.value, '$.writtenAt') IS NULL);",
    // Version 4: outbox retention. A row and a completion record say when
    // they were added (microseconds since the Unix epoch, UTC), so that
    // pruning keeps them for the retention. Rows already there take their
    // event's time, documents and completions the migration's: a retention
    // counts from no later than the upgrade. ADD COLUMN takes only a
    // constant default, hence the UPDATEs.
    "ALTER TABLE outbox ADD COLUMN added_at INTEGER NOT NULL DEFAULT 0;
     UPDATE outbox SET added_at = coalesce(
         (SELECT written_at FROM events WHERE events.position = outbox.event_position),
         CAST(strftime('%s', 'now') AS INTEGER) * 1000000);
     ALTER TABLE completions ADD COLUMN completed_at INTEGER NOT NULL DEFAULT 0;
     UPDATE completions SET completed_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000000;
     CREATE INDEX completions_by_time ON completions (completed_at);",
];

/// The file could not be opened, configured or migrated.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the SQLite store at {}: {source}", path.display())]
struct OpenError {
    path: PathBuf,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

pub(super) fn open_error(path: &Path) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |source| {
        StoreError::backend(OpenError {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }
}

/// Opens the one read-write connection, on a file whose schema is the
/// newest this code knows.
pub(super) fn open_migrated(path: &Path, config: SqliteConfig) -> Result<Connection, StoreError> {
    let mut connection = open_writer(path, config)?;
    migrate(&mut connection).map_err(|error| match error {
        StoreError::Backend(source) => StoreError::backend(OpenError {
            path: path.to_path_buf(),
            source,
        }),
        other => other,
    })?;
    Ok(connection)
}

/// Opens the one read-write connection and sets the pragmas it depends on.
pub(super) fn open_writer(path: &Path, config: SqliteConfig) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags).map_err(open_error(path))?;
    let configure = || -> rusqlite::Result<(String, i64)> {
        connection.busy_timeout(BUSY_TIMEOUT)?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // In WAL mode FULL fsyncs the log at every commit; NORMAL only at
        // checkpoints, which can lose recent commits but never corrupts.
        let synchronous = if config.durable { "FULL" } else { "NORMAL" };
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
pub(super) fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let supported = MIGRATIONS.len();
    let tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::backend)?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(StoreError::backend)?;
    let (found, pending) = pending_migrations(MIGRATIONS, found)?;
    if pending.is_empty() {
        return Ok(());
    }
    for migration in pending {
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
