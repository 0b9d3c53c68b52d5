//! The store's tables, in the PostgreSQL schema the store is opened in, and
//! their migrations.
//!
//! A migration is never edited once released: a new version of the schema
//! is one more entry of [`MIGRATIONS`]. Hosts opening one schema at once
//! take turns under an advisory lock, so each migration runs once. The
//! statements the open store runs live with the parts that run them.
//!
//! The migrations' own comments were written when this was one module:
//! "the module documentation" there is the parent module's parts, here
//! [`super::positions`] for `append_lock` and `event_position`.

use deadpool_postgres::Transaction;
use sha2::{Digest, Sha256};

use super::PostgresStore;
use super::error::pg_error;
use crate::store::StoreError;
use crate::store::sql::pending_migrations;

/// Schema migrations, oldest first. Migration `i` takes the schema from
/// version `i` to `i + 1` (recorded in `schema_migrations`); a new version
/// is one more entry here, never an edit of an old one.
///
/// Each runs with `search_path` set to the store's schema alone, so names
/// are unqualified.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // Version 3: a command record's appended events say when they were
    // written (`writtenAt`, RFC 3339 UTC); records written before kept only
    // their positions, so each gets its events' times from `events`. An
    // event missing there (a damaged store) gets a null that fails the
    // record's read with a reason, rather than a record that lost an event.
    r#"UPDATE commands SET record = jsonb_set(record::jsonb, '{outcome,events}', (
           SELECT coalesce(jsonb_agg(item.value || jsonb_build_object('writtenAt',
                      to_char(events.written_at AT TIME ZONE 'UTC',
                              'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                      ORDER BY item.ordinality), '[]'::jsonb)
           FROM jsonb_array_elements(record::jsonb -> 'outcome' -> 'events')
                WITH ORDINALITY AS item (value, ordinality)
           LEFT JOIN events ON events.position = (item.value ->> 'position')::bigint))::json
       WHERE record ->> 'kind' = 'appended'
         AND EXISTS (SELECT FROM json_array_elements(record -> 'outcome' -> 'events') AS item
                     WHERE item ->> 'writtenAt' IS NULL);"#,
    // Version 4: outbox retention. A row and a completion record say when
    // they were added, by the server's clock, so that pruning keeps them
    // for the retention. Rows already there take their event's time,
    // documents and completions the migration's: a retention counts from
    // no later than the upgrade.
    r#"ALTER TABLE outbox ADD COLUMN added_at timestamptz NOT NULL DEFAULT now();
       UPDATE outbox SET added_at = events.written_at
       FROM events WHERE events.position = outbox.event_position;
       ALTER TABLE completions ADD COLUMN completed_at timestamptz NOT NULL DEFAULT now();
       CREATE INDEX completions_by_time ON completions (completed_at);"#,
];

impl PostgresStore {
    /// Brings the schema to the newest version this code knows, in one
    /// transaction, under a lock that makes hosts opening the same schema at
    /// once take turns (so that the second sees the first's work).
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
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
    let (found, pending) = pending_migrations(MIGRATIONS, found.into())?;
    if pending.is_empty() {
        return Ok(None);
    }
    for (version, migration) in (found + 1..).zip(pending) {
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
pub(super) fn validate_schema_name(name: &str) -> Result<(), String> {
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
