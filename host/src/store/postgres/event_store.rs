//! The [`EventStore`] impl: appends through group commit, other writes in
//! a transaction of their own, reads on a pooled connection of their own,
//! and the statements and row mappings that the reads share with the rules'
//! primitives.

use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::PostgresStore;
use super::error::pg_error;
use crate::model::{CommandId, Domain, EntityType, RecordedEvent, StreamId};
use crate::store::rules::{self, Append, Reject};
use crate::store::sql::{
    SqlRow, from_json, from_sql_int, recorded_event_at, select_events, sql_bound,
};
use crate::store::{
    AppendOutcome, AppendRequest, CommandKey, CommandRecord, EventStore, InstancePage, StoreError,
};

/// The record of a command id, as JSON text: [`command_record`] maps its
/// row.
pub(super) const SELECT_COMMAND_RECORD: &str =
    "SELECT record::text FROM commands WHERE command_id = $1";

/// A stream's last sequence: [`stream_sequence`] maps its row.
pub(super) const SELECT_STREAM_SEQUENCE: &str =
    "SELECT sequence FROM streams WHERE domain = $1 AND entity_type = $2 AND instance_key = $3";

/// Ids are `uuid` and times `timestamptz` in this schema.
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

/// Maps the row of [`SELECT_COMMAND_RECORD`].
pub(super) fn command_record(row: &Row) -> Result<CommandRecord, StoreError> {
    from_json("command record", row.try_get(0).map_err(pg_error)?)
}

/// Maps the row of [`SELECT_STREAM_SEQUENCE`]: a stream without one has no
/// events.
pub(super) fn stream_sequence(row: Option<Row>) -> Result<u64, StoreError> {
    match row {
        Some(row) => from_sql_int(row.try_get(0).map_err(pg_error)?),
        None => Ok(0),
    }
}

impl PostgresStore {
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

#[async_trait::async_trait]
impl EventStore for PostgresStore {
    fn event_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.feeds.events.subscribe()
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.append_grouped(Append(request)).await
    }

    /// Closes the pool's connections (a claim's open transaction, if one
    /// was abandoned, is rolled back by the server as its connection
    /// closes) and the listener's.
    async fn close(&self) -> Result<(), StoreError> {
        self.pool.close();
        self.listener.abort();
        tracing::info!(server = %self.target, schema = %self.schema, "event store closed");
        Ok(())
    }

    async fn record_rejection(
        &self,
        stream: &StreamId,
        command: &CommandKey,
        message: &str,
    ) -> Result<CommandRecord, StoreError> {
        self.write(Reject::new(stream, command, message)).await
    }

    async fn command_record(
        &self,
        command_id: &CommandId,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(SELECT_COMMAND_RECORD)
            .await
            .map_err(pg_error)?;
        let row = client
            .query_opt(&select, &[&command_id.as_str()])
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
                &stream.domain().as_str(),
                &stream.entity_type().as_str(),
                &stream.instance_key().as_str(),
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
                    &stream.domain().as_str(),
                    &stream.entity_type().as_str(),
                    &stream.instance_key().as_str(),
                ],
            )
            .await
            .map_err(pg_error)?;
        stream_sequence(row)
    }

    async fn list_instances(
        &self,
        domain: &Domain,
        entity_type: &EntityType,
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
                    &domain.as_str(),
                    &entity_type.as_str(),
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
