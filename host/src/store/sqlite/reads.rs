//! Reads: the pool of read-only connections they run on, beside the
//! writer, and what they share with the writer's transaction (row mapping,
//! the command record and stream sequence look-ups).

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use time::OffsetDateTime;
use uuid::Uuid;

use super::schema::open_error;
use super::{BUSY_TIMEOUT, STATEMENT_CACHE};
use crate::model::StreamId;
use crate::store::sql::{SqlRow, from_json, from_sql_int};
use crate::store::{CommandRecord, StoreError};

/// Read-only connections, reused so that a read does not pay for opening
/// the file. WAL lets them read committed data while the writer writes.
pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// How many idle connections to keep.
    keep: usize,
}

impl ReadPool {
    /// A pool of connections to the file at `path`, keeping up to `keep`
    /// idle ones.
    pub(super) fn new(path: PathBuf, keep: usize) -> ReadPool {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
            keep,
        }
    }

    pub(super) fn run<T>(
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
pub(super) fn from_micros(micros: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .map_err(StoreError::backend)
}

/// Runs `sql` and maps every row with `map`.
pub(super) fn query_rows<T>(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = connection
        .prepare_cached(sql)
        .map_err(StoreError::backend)?;
    let mut rows = statement.query(params).map_err(StoreError::backend)?;
    let mut mapped = Vec::new();
    while let Some(row) = rows.next().map_err(StoreError::backend)? {
        mapped.push(map(row)?);
    }
    Ok(mapped)
}

/// Ids are kept as text, and times as microseconds since the Unix epoch.
impl SqlRow for Row<'_> {
    fn text(&self, index: usize) -> Result<String, StoreError> {
        self.get(index).map_err(StoreError::backend)
    }

    fn optional_text(&self, index: usize) -> Result<Option<String>, StoreError> {
        self.get(index).map_err(StoreError::backend)
    }

    fn int(&self, index: usize) -> Result<i64, StoreError> {
        self.get(index).map_err(StoreError::backend)
    }

    fn uuid(&self, index: usize) -> Result<Uuid, StoreError> {
        Uuid::parse_str(&self.text(index)?).map_err(StoreError::backend)
    }

    fn time(&self, index: usize) -> Result<OffsetDateTime, StoreError> {
        from_micros(self.int(index)?)
    }
}

pub(super) fn load_command(
    connection: &Connection,
    command_id: &str,
) -> Result<Option<CommandRecord>, StoreError> {
    let json: Option<String> = connection
        .prepare_cached("SELECT record FROM commands WHERE command_id = ?1")
        .and_then(|mut select| select.query_row([command_id], |row| row.get(0)).optional())
        .map_err(StoreError::backend)?;
    json.map(|json| from_json("command record", &json))
        .transpose()
}

pub(super) fn load_stream_sequence(
    connection: &Connection,
    stream: &StreamId,
) -> Result<u64, StoreError> {
    let sequence: Option<i64> = connection
        .prepare_cached(
            "SELECT sequence FROM streams
             WHERE domain = ?1 AND entity_type = ?2 AND instance_key = ?3",
        )
        .and_then(|mut select| {
            select
                .query_row(
                    params![
                        stream.domain().as_str(),
                        stream.entity_type().as_str(),
                        stream.instance_key().as_str()
                    ],
                    |row| row.get(0),
                )
                .optional()
        })
        .map_err(StoreError::backend)?;
    sequence.map_or(Ok(0), from_sql_int)
}
