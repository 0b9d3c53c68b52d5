//! Conventions shared by the SQL backends (SQLite, PostgreSQL): how the
//! store's unsigned numbers map to SQL's signed 64-bit integers.
//!
//! Only conversions live here; each backend owns its own schema and queries.

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
