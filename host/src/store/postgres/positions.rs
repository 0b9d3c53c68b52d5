//! Event positions: why they follow commit order, and how a transaction
//! hands them out ([`Positions`]).
//!
//! Positions are handed out after the last one in the `event_position`
//! sequence, but only by a transaction that holds `append_lock` (an empty
//! table locked `EXCLUSIVE`, which only appends of events and outbox writes
//! take), and the lock is held until `COMMIT` completes. So position `p + 1`
//! is handed out only after the transaction holding `p` has committed or
//! rolled back, and a reader that sees `p + 1` also sees `p` (or `p` never
//! existed): following [`EventStore::read_all`](crate::store::EventStore::read_all)
//! from the position after the
//! last event seen never skips one.
//!
//! The price is that commits of events are serial across the whole store:
//! from taking positions to the end of `COMMIT` with its WAL flush, no
//! other append of events can commit. Group commit is what makes up for it:
//! the appends that queue meanwhile share the next transaction. The
//! alternative, a visibility horizon (reading only rows of transactions
//! older than the oldest one in flight), keeps commits concurrent but
//! orders events by transaction id rather than by a position handed out at
//! commit, which the `u64` position of the
//! [`EventStore`](crate::store::EventStore) contract cannot express.
//!
//! Positions are not contiguous: a transaction that rolls back after its
//! events were sent (one that lost a race on a stream, an event id or a
//! command id, or lost its connection) may leave a gap, which a reader
//! simply passes.

use tokio_postgres::Row;

use super::error::pg_error;
use crate::store::StoreError;
use crate::store::sql::from_sql_int;

/// The last event position a transaction, with the members of its batch,
/// has handed out. It starts from the store's, read under the append lock
/// ([`SELECT_LAST_POSITION`]). Held events go to the server only with the
/// next statement, which for an append is `COMMIT`, so every member reads
/// the same one (or a later one, were a member to send its events early),
/// and the larger wins.
#[derive(Debug, Default)]
pub(super) struct Positions(std::sync::Mutex<Option<u64>>);

impl Positions {
    fn last(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the store's last position was read.
    pub(super) fn known(&self) -> bool {
        self.last().is_some()
    }

    /// The store had handed out positions up to `last` when read.
    pub(super) fn seen(&self, last: u64) {
        let mut mine = self.last();
        *mine = Some(mine.map_or(last, |mine| mine.max(last)));
    }

    /// Hands out `count` positions; returns the first.
    pub(super) fn take(&self, count: u64) -> Result<u64, StoreError> {
        let mut last = self.last();
        let first = last
            .ok_or_else(|| StoreError::backend("positions handed out before the last was read"))?
            + 1;
        *last = Some(first + count - 1);
        Ok(first)
    }
}

/// The last position handed out; final only under `append_lock`.
pub(super) const SELECT_LAST_POSITION: &str =
    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM event_position";

/// Maps the row of [`SELECT_LAST_POSITION`].
pub(super) fn last_position(row: &Row) -> Result<u64, StoreError> {
    from_sql_int(row.try_get(0).map_err(pg_error)?)
}
