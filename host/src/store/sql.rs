//! What the SQL backends (SQLite, PostgreSQL) share: the columns an event
//! and an outbox row are read from and how such a row becomes a
//! [`RecordedEvent`] or an [`OutboxRecord`], how the store's unsigned
//! numbers map to SQL's signed 64-bit integers, how the records they keep
//! as JSON text convert, and which migrations a stored schema needs.
//!
//! Each backend owns its schema, its connections and the rest of its
//! statements, and gives its client's rows the [`SqlRow`] view, with its own
//! column types (SQLite keeps ids as text and times as microseconds). This
//! module must not run a query.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

use super::outbox::{Document, OutboxEntry, OutboxRecord};
use super::rules::StoredEventId;
use super::{AppendedEvent, StoreError};
use crate::model::{EventType, NotificationKind, RecordedEvent, StreamId};

/// The columns of an event, in the order [`recorded_event_at`] reads them,
/// each JSON column followed by `$json`, how the backend reads JSON as text
/// (`""` in SQLite, `"::text"` in PostgreSQL). Qualified, so that they
/// also read an event joined to an outbox row.
macro_rules! event_columns {
    ($json:literal) => {
        concat!(
            "events.domain, events.entity_type, events.instance_key, events.sequence, \
             events.position, events.event_id, events.event_type, events.written_at, \
             events.payload",
            $json,
            ", events.context",
            $json
        )
    };
}

/// Events, with their [`event_columns!`] from column 0, picked and ordered
/// by the clause `$rest`; `$json` as for [`event_columns!`].
macro_rules! select_events {
    ($json:literal, $rest:literal) => {
        concat!(
            "SELECT ",
            $crate::store::sql::event_columns!($json),
            " FROM events ",
            $rest
        )
    };
}

/// Outbox rows picked and ordered by the clause `$rest` (on `o`), as
/// [`outbox_record`] reads them: the row's own columns, then, for a row
/// that points at an event, the event's [`event_columns!`] from column 5;
/// `$json` as for [`event_columns!`].
macro_rules! select_outbox {
    ($json:literal, $rest:literal) => {
        concat!(
            "SELECT o.position, o.kind, o.notification_id, o.topic, o.body",
            $json,
            ", ",
            $crate::store::sql::event_columns!($json),
            " FROM outbox o LEFT JOIN events ON events.position = o.event_position ",
            $rest
        )
    };
}

/// Events picked by the clause `$condition`, with the columns
/// [`stored_event_id`] reads.
macro_rules! select_event_ids {
    ($condition:literal) => {
        concat!(
            "SELECT event_id, domain, entity_type, instance_key, sequence, position, event_type, \
             written_at FROM events WHERE ",
            $condition
        )
    };
}

pub(super) use {event_columns, select_event_ids, select_events, select_outbox};

/// A row of a query's result, as one of the SQL backends' clients gives it:
/// the column at `index` as one of the types the store's columns hold.
pub(super) trait SqlRow {
    /// A text column.
    fn text(&self, index: usize) -> Result<String, StoreError>;
    /// A text column that may be `NULL`.
    fn optional_text(&self, index: usize) -> Result<Option<String>, StoreError>;
    /// An integer column.
    fn int(&self, index: usize) -> Result<i64, StoreError>;
    /// An event or notification id.
    fn uuid(&self, index: usize) -> Result<Uuid, StoreError>;
    /// When an event was written.
    fn time(&self, index: usize) -> Result<OffsetDateTime, StoreError>;
}

/// Maps the [`event_columns!`] of `row` that start at column `first`.
pub(super) fn recorded_event_at(
    row: &impl SqlRow,
    first: usize,
) -> Result<RecordedEvent, StoreError> {
    let text = |index: usize| row.text(first + index);
    let int = |index: usize| row.int(first + index);
    let stream = StreamId::new(text(0)?, text(1)?, text(2)?).map_err(StoreError::backend)?;
    Ok(RecordedEvent {
        stream,
        sequence: from_sql_int(int(3)?)?,
        position: from_sql_int(int(4)?)?,
        event_id: row.uuid(first + 5)?,
        event_type: EventType::new(text(6)?).map_err(StoreError::backend)?,
        written_at: row.time(first + 7)?,
        // Trusted: it is the text of a `RawValue` the store wrote.
        payload: raw_json("event payload", text(8)?)?,
        context: from_json("event context", &text(9)?)?,
    })
}

/// Maps a row selected with [`select_outbox!`].
pub(super) fn outbox_record(row: &impl SqlRow) -> Result<OutboxRecord, StoreError> {
    let position = from_sql_int(row.int(0)?)?;
    let stored = row.text(1)?;
    let Ok(kind) = stored.parse::<NotificationKind>() else {
        let entry = OutboxEntry::Unknown { kind: stored };
        return Ok(OutboxRecord { position, entry });
    };
    let entry = match kind {
        NotificationKind::NewEntity => OutboxEntry::NewEntity(recorded_event_at(row, 5)?),
        NotificationKind::EventAppended => OutboxEntry::EventAppended(recorded_event_at(row, 5)?),
        NotificationKind::ProjectionCompleted | NotificationKind::Published => {
            OutboxEntry::Document(Document {
                id: row.uuid(2)?,
                kind,
                topic: row.optional_text(3)?,
                // Trusted: it is the text of a `RawValue` the store wrote.
                body: raw_json("document body", row.text(4)?)?.into(),
            })
        }
    };
    Ok(OutboxRecord { position, entry })
}

/// Maps a row selected with [`select_event_ids!`]: the event's id, and
/// where it was appended; `stream` is the stream of the append being
/// checked.
pub(super) fn stored_event_id(
    row: &impl SqlRow,
    stream: &StreamId,
) -> Result<(Uuid, StoredEventId), StoreError> {
    let event_id = row.uuid(0)?;
    let same_stream = row.text(1)? == stream.domain().as_str()
        && row.text(2)? == stream.entity_type().as_str()
        && row.text(3)? == stream.instance_key().as_str();
    let event = AppendedEvent {
        event_id,
        sequence: from_sql_int(row.int(4)?)?,
        position: from_sql_int(row.int(5)?)?,
        event_type: EventType::new(row.text(6)?).map_err(StoreError::backend)?,
        written_at: row.time(7)?,
    };
    Ok((event_id, StoredEventId { same_stream, event }))
}

/// A stored sequence or position; negative only in a corrupted store.
pub(super) fn from_sql_int(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(StoreError::backend)
}

/// A sequence or position to store; SQL integers are signed 64-bit.
pub(super) fn to_sql_int(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(StoreError::backend)
}

/// A bound (`from`, a count) for a query, where anything past `i64::MAX`
/// means the same as `i64::MAX`.
pub(super) fn sql_bound(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// Reads a `what` (a command record, a dead letter, an event's context) the
/// store keeps as JSON text.
pub(super) fn from_json<T: DeserializeOwned>(
    what: &'static str,
    json: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(json)
        .map_err(|source| StoreError::backend(JsonRecordError::Unreadable { what, source }))
}

/// The JSON text a `what` is kept as.
pub(super) fn to_json(what: &'static str, value: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|source| StoreError::backend(JsonRecordError::Unwritable { what, source }))
}

/// A `what` (an event's payload, a document's body) the store keeps as the
/// JSON text it was given, read back as it is.
pub(super) fn raw_json(what: &'static str, text: String) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(text)
        .map_err(|source| StoreError::backend(JsonRecordError::Unreadable { what, source }))
}

/// A record kept as JSON text that did not convert. Kept apart from the
/// database's own errors so that the message says which record, with the
/// serde error as its source; a caller has nothing else to do about it than
/// about any storage failure, so it is not a variant of [`StoreError`].
#[derive(Debug, thiserror::Error)]
enum JsonRecordError {
    /// The store holds what this code did not write: corrupt, or written
    /// by a newer host.
    #[error("a stored {what} does not read back: {source}")]
    Unreadable {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A value has no JSON form (it does not happen with the store's own
    /// types, whose keys are strings).
    #[error("a {what} cannot be stored as JSON: {source}")]
    Unwritable {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// The migrations a schema stored at version `found` still needs, of
/// `migrations` (oldest first: migration `i` takes the schema from version
/// `i` to `i + 1`), with `found` as a count of those it has had. None are
/// needed when it is at the newest version this code knows.
///
/// Fails with [`StoreError::SchemaTooNew`] when a newer version of this
/// code wrote the schema, and with a backend error on a version no version
/// of it writes.
pub(super) fn pending_migrations(
    migrations: &'static [&'static str],
    found: i64,
) -> Result<(usize, &'static [&'static str]), StoreError> {
    let found = usize::try_from(found).map_err(|_| {
        StoreError::backend(format!(
            "the schema version {found} is not one this code wrote"
        ))
    })?;
    match migrations.get(found..) {
        Some(pending) => Ok((found, pending)),
        None => Err(StoreError::SchemaTooNew {
            found: u32::try_from(found).unwrap_or(u32::MAX),
            supported: u32::try_from(migrations.len()).unwrap_or(u32::MAX),
        }),
    }
}
