//! Conventions shared by the SQL backends (SQLite, PostgreSQL): how the
//! store's unsigned numbers map to SQL's signed 64-bit integers, and how the
//! records they keep as JSON text convert.
//!
//! Only conversions live here; each backend owns its own schema and queries.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::StoreError;
use crate::model::{NotificationKind, UnknownNotificationKind};

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

/// The kind of the outbox row at `position`, from its stored name.
pub(super) fn row_kind(position: u64, stored: &str) -> Result<NotificationKind, StoreError> {
    stored
        .parse()
        .map_err(|source| StoreError::backend(UnknownRowKind { position, source }))
}

/// An outbox row of a kind this code does not know: the store holds what
/// no version of this code wrote.
#[derive(Debug, thiserror::Error)]
#[error("outbox row {position} is corrupt: {source}")]
struct UnknownRowKind {
    position: u64,
    #[source]
    source: UnknownNotificationKind,
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
