//! The errors of the PostgreSQL client and its pool as the store reports
//! them, and which of them mean that a transaction lost a race.
//!
//! An error keeps the client's error as its source, so that its SQLSTATE
//! stays reachable ([`lost_race`]); its message quotes the chain, since the
//! client's own says little. This module does not decide what to do about
//! an error: the transaction that met it does.

use tokio_postgres::error::SqlState;

use crate::error_chain::error_chain;
use crate::store::{Outage, StoreError};

/// The store could not be opened: connected to, created or migrated. The
/// message ends with the chain of its source, which is often an error of
/// the client, whose own message says little.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot open the PostgreSQL store in schema {schema:?} at {target}: {}",
    error_chain(.source.as_ref())
)]
pub(super) struct OpenError {
    pub(super) schema: String,
    pub(super) target: String,
    #[source]
    pub(super) source: Box<dyn std::error::Error + Send + Sync>,
}

/// Whether `error` means the transaction lost a race with a concurrent one
/// and running it again will decide differently.
pub(super) fn lost_race(error: &StoreError) -> bool {
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
pub(super) enum PgError {
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

pub(super) fn pg_error(error: tokio_postgres::Error) -> StoreError {
    if unreachable(&error) {
        StoreError::unavailable(Outage::Unreachable, PgError::Client(error))
    } else {
        StoreError::backend(PgError::Client(error))
    }
}

pub(super) fn pool_error(error: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    let outage = match &error {
        PoolError::Backend(error) => unreachable(error).then_some(Outage::Unreachable),
        // No connection could be made, or none came free, in time.
        PoolError::Timeout(_) => Some(Outage::Unreachable),
        PoolError::Closed => Some(Outage::Closed),
        _ => None,
    };
    match outage {
        Some(outage) => StoreError::unavailable(outage, PgError::Pool(error)),
        None => StoreError::backend(PgError::Pool(error)),
    }
}

/// Whether `error` means the server cannot be reached for now: the
/// connection failed or was lost, or the server is shutting down or
/// starting up. The pool replaces a lost connection by itself (it checks
/// that a connection is open before handing it out), so the next call
/// connects again.
fn unreachable(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    if let Some(code) = error.code() {
        // Class 08, connection exceptions, and the server going away.
        return code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(code);
    }
    // No answer from the server at all: the socket failed.
    std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>())
}
