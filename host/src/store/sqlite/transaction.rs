//! The rules' primitives on the writer's transaction (a savepoint of the
//! batch's transaction, one per write).

use std::time::Duration;

use rusqlite::{Connection, params};
use time::OffsetDateTime;
use uuid::Uuid;

use super::reads::{load_command, load_stream_sequence};
use super::store_error;
use crate::model::{EventContext, NewEvent, NotificationKind, StreamId};
use crate::store::rules::{StoreTxn, StoredEventId};
use crate::store::sql::{
    from_sql_int, select_event_ids, sql_bound, stored_event_id, to_json, to_sql_int,
};
use crate::store::{AppendedEvent, CommandRecord, DeadLetter, Document, Pruned, StoreError};

/// The write primitives of [`rules`](crate::store::rules) on the open
/// transaction of a batch. SQLite calls never wait on anything but the
/// disk, so no method awaits, and the rules run with
/// [`rules::run_ready`](crate::store::rules::run_ready) on the writer
/// thread.
pub(super) struct SqliteTxn<'c> {
    pub(super) connection: &'c Connection,
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
            .prepare_cached(select_event_ids!("event_id = ?1"))
            .map_err(store_error)?;
        let mut stored = Vec::with_capacity(event_ids.len());
        for &event_id in event_ids {
            let mut rows = statement
                .query([event_id.to_string()])
                .map_err(store_error)?;
            let found = match rows.next().map_err(store_error)? {
                Some(row) => Some(stored_event_id(row, stream)?.1),
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
        let context = to_json("event context", context)?;
        let micros = micros(written_at)?;
        let mut insert = self
            .connection
            .prepare_cached(
                "INSERT INTO events (domain, entity_type, instance_key, sequence, event_id,
                                     event_type, payload, written_at, context)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(store_error)?;
        let mut appended = Vec::with_capacity(events.len());
        for (sequence, event) in (first_sequence..).zip(events) {
            insert
                .execute(params![
                    stream.domain().as_str(),
                    stream.entity_type().as_str(),
                    stream.instance_key().as_str(),
                    to_sql_int(sequence)?,
                    event.event_id.to_string(),
                    event.event_type.as_str(),
                    event.payload.get(),
                    micros,
                    context,
                ])
                .map_err(store_error)?;
            appended.push(AppendedEvent {
                event_id: event.event_id,
                event_type: event.event_type.clone(),
                sequence,
                position: from_sql_int(self.connection.last_insert_rowid())?,
                written_at,
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
                        stream.domain().as_str(),
                        stream.entity_type().as_str(),
                        stream.instance_key().as_str(),
                        last_sequence,
                    ])
                })
                .map_err(store_error)?;
        }
        Ok(appended)
    }

    async fn insert_command(&mut self, record: &CommandRecord) -> Result<(), StoreError> {
        let json = to_json("command record", record)?;
        self.connection
            .prepare_cached("INSERT INTO commands (command_id, record) VALUES (?1, ?2)")
            .and_then(|mut insert| insert.execute(params![record.command_id().as_str(), json]))
            .map_err(store_error)?;
        Ok(())
    }

    async fn insert_event_rows(
        &mut self,
        rows: &[(NotificationKind, u64)],
    ) -> Result<(), StoreError> {
        let added_at = now_micros()?;
        let mut insert = self
            .connection
            .prepare_cached(
                "INSERT INTO outbox (kind, event_position, added_at) VALUES (?1, ?2, ?3)",
            )
            .map_err(store_error)?;
        for &(kind, position) in rows {
            insert
                .execute(params![kind.as_str(), to_sql_int(position)?, added_at])
                .map_err(store_error)?;
        }
        Ok(())
    }

    async fn insert_documents(&mut self, documents: &[Document]) -> Result<usize, StoreError> {
        let mut insert = self
            .connection
            .prepare_cached(
                "INSERT INTO outbox (kind, notification_id, topic, body, added_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (notification_id) DO NOTHING",
            )
            .map_err(store_error)?;
        let added_at = now_micros()?;
        let mut added = 0;
        for document in documents {
            added += insert
                .execute(params![
                    document.kind.as_str(),
                    document.id.to_string(),
                    document.topic,
                    document.body.get(),
                    added_at,
                ])
                .map_err(store_error)?;
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
            .map_err(store_error)?;
        Ok(())
    }

    async fn put_dead_letters(&mut self, letters: &[DeadLetter]) -> Result<(), StoreError> {
        let mut upsert = self
            .connection
            .prepare_cached(
                "INSERT OR REPLACE INTO dead_letters (destination, notification_id, position, letter)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(store_error)?;
        for letter in letters {
            let json = to_json("dead letter", letter)?;
            upsert
                .execute(params![
                    letter.destination,
                    letter.notification_id.to_string(),
                    to_sql_int(letter.position)?,
                    json,
                ])
                .map_err(store_error)?;
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
            .map_err(store_error)?;
        Ok(deleted > 0)
    }

    async fn insert_completions(
        &mut self,
        completions: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut insert = self
            .connection
            .prepare_cached(
                "INSERT INTO completions (handler, notification_id, completed_at)
                 VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )
            .map_err(store_error)?;
        let completed_at = now_micros()?;
        for (handler, notification_id) in completions {
            insert
                .execute(params![handler, notification_id, completed_at])
                .map_err(store_error)?;
        }
        Ok(())
    }

    async fn delete_dead_letters(&mut self, destination: &str) -> Result<usize, StoreError> {
        self.connection
            .prepare_cached("DELETE FROM dead_letters WHERE destination = ?1")
            .and_then(|mut delete| delete.execute([destination]))
            .map_err(store_error)
    }

    async fn prune_outbox(&mut self, below: u64, retain: Duration) -> Result<Pruned, StoreError> {
        let cutoff = micros(OffsetDateTime::now_utc() - retain)?;
        let below = sql_bound(below);
        // The last row stays: without AUTOINCREMENT, SQLite numbers a new
        // row after the largest rowid left, so removing it would hand its
        // position out again.
        let rows = self
            .connection
            .prepare_cached(
                "DELETE FROM outbox
                 WHERE position < min(?1, (SELECT max(position) FROM outbox))
                   AND added_at < ?2
                   AND position NOT IN (SELECT position FROM dead_letters)",
            )
            .and_then(|mut delete| delete.execute(params![below, cutoff]))
            .map_err(store_error)?;
        // Older than the retention, and than every row still deliverable;
        // a multi-argument min() is null if any argument is, hence the
        // coalesces.
        let completions = self
            .connection
            .prepare_cached(
                "DELETE FROM completions
                 WHERE completed_at < min(?2,
                     coalesce((SELECT min(added_at) FROM outbox WHERE position >= ?1), ?2),
                     coalesce((SELECT min(outbox.added_at) FROM outbox
                               JOIN dead_letters ON dead_letters.position = outbox.position), ?2))",
            )
            .and_then(|mut delete| delete.execute(params![below, cutoff]))
            .map_err(store_error)?;
        Ok(Pruned {
            rows: rows as u64,
            completions: completions as u64,
        })
    }
}

/// Microseconds since the Unix epoch, how the file keeps times.
fn micros(at: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).map_err(StoreError::backend)
}

/// Now, as the file keeps times.
fn now_micros() -> Result<i64, StoreError> {
    micros(OffsetDateTime::now_utc())
}
