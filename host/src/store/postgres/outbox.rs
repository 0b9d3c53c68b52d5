//! The outbox in PostgreSQL: its rows, the `LISTEN/NOTIFY` wake-up, and
//! destination claims with `FOR UPDATE SKIP LOCKED`.
//!
//! Outbox rows take their positions from `outbox_position`, and only under
//! `append_lock` (the caller takes it), as events do (see
//! [`super::positions`]), so they follow commit order with the same
//! guarantee: a reader following positions never skips a row of a slow
//! transaction. The write functions take a connection whose transaction the
//! caller has begun, and which the caller commits.
//!
//! A transaction that adds outbox rows also sends `NOTIFY cqrs_wasi_outbox`,
//! and one that adds events `NOTIFY cqrs_wasi_events` (each with the schema
//! as payload), delivered at its commit to every host that `LISTEN`s, so
//! dispatchers and projection propagation wake on work instead of polling,
//! and an append that raises no notification wakes no dispatcher. Each
//! destination's checkpoint row is claimed `FOR UPDATE SKIP LOCKED` for a
//! round of dispatch: whichever host gets it drains the destination, the
//! others skip it.

use std::any::Any;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Object};
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

use super::PostgresStore;
use super::error::pg_error;
use crate::error_chain::error_chain;
use crate::store::outbox::{Added, Feeds, Hold};
use crate::store::rules::{
    AddDocuments, Complete, DeleteDeadLetter, Prune, PurgeDeadLetters, PutDeadLetters,
    SetCheckpoint,
};
use crate::store::sql::{
    from_json, from_sql_int, outbox_record, select_outbox, sql_bound, to_json, to_sql_int,
};
use crate::store::{Claim, DeadLetter, Document, Outbox, OutboxRecord, Pruned, StoreError};

/// The names of [`OUTBOX_CHANNEL`] and [`EVENTS_CHANNEL`], for the
/// statements that must spell them out.
macro_rules! outbox_channel {
    () => {
        "cqrs_wasi_outbox"
    };
}
macro_rules! events_channel {
    () => {
        "cqrs_wasi_events"
    };
}

/// The channels every store's notifications go to: one when outbox rows
/// were added (dispatchers listen), one when events were (projection
/// propagation listens). The payload is the schema, so that stores in
/// different schemas of one database tell theirs apart.
const OUTBOX_CHANNEL: &str = outbox_channel!();
const EVENTS_CHANNEL: &str = events_channel!();

/// Notifies a channel, with the schema as payload. Literals, so that they go
/// as simple queries: nothing to prepare first.
macro_rules! notify {
    ($channel:expr) => {
        concat!("SELECT pg_notify('", $channel, "', current_schema())")
    };
}
const SIGNAL_OUTBOX: &str = notify!(outbox_channel!());
const SIGNAL_EVENTS: &str = notify!(events_channel!());
const SIGNAL_BOTH: &str = concat!(notify!(events_channel!()), "; ", notify!(outbox_channel!()));

/// How long the listener waits before connecting again after losing its
/// connection.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Outbox rows from `$1`, at most `$2`.
const SELECT_OUTBOX: &str = select_outbox!(
    "::text",
    "WHERE o.position >= $1 ORDER BY o.position LIMIT $2"
);

/// Numbers rows after the last position handed out, in the order of their
/// events (rows of one event in the order given), and moves the sequence
/// past them. Run only under `append_lock`.
pub(super) const INSERT_EVENT_ROWS: &str = "
    WITH last AS MATERIALIZED (
        SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS position FROM outbox_position
    ), inserted AS (
        INSERT INTO outbox (position, kind, event_position)
        SELECT last.position + row_number() OVER (ORDER BY row.event_position, row.n),
               row.kind, row.event_position
        FROM last, unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS row (kind, event_position, n)
        RETURNING position
    )
    SELECT setval('outbox_position', max(position)) FROM inserted";

/// The same for documents, skipping ids already there (which leaves a gap
/// in the numbering, as a rolled-back transaction does).
const INSERT_DOCUMENTS: &str = "
    WITH last AS MATERIALIZED (
        SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS position FROM outbox_position
    ), inserted AS (
        INSERT INTO outbox (position, kind, notification_id, topic, body)
        SELECT last.position + row.n, row.kind, row.id, row.topic, row.body::json
        FROM last, unnest($1::text[], $2::uuid[], $3::text[], $4::text[])
                       WITH ORDINALITY AS row (kind, id, topic, body, n)
        ON CONFLICT (notification_id) DO NOTHING
        RETURNING position
    )
    SELECT count(*), (SELECT setval('outbox_position', max(position)) FROM inserted) FROM inserted";

/// Removes the rows below `$1` added more than `$2` microseconds ago, but
/// never the last row (so that `outbox_head` stays right) nor one a dead
/// letter points at. Positions come from `outbox_position`, so no removal
/// could make one be handed out again.
pub(super) const PRUNE_ROWS: &str = "
    DELETE FROM outbox
    WHERE position < least($1, (SELECT max(position) FROM outbox))
      AND added_at < now() - $2::bigint * interval '1 microsecond'
      AND position NOT IN (SELECT position FROM dead_letters)";

/// Removes the completion records older than `$2` microseconds and than
/// every row that stays deliverable (from `$1` on, or dead-lettered), each
/// kind found by its own index. `least` passes over the null of an empty
/// `min`.
pub(super) const PRUNE_COMPLETIONS: &str = "
    DELETE FROM completions
    WHERE completed_at < least(
        now() - $2::bigint * interval '1 microsecond',
        (SELECT min(added_at) FROM outbox WHERE position >= $1),
        (SELECT min(outbox.added_at) FROM outbox
         JOIN dead_letters ON dead_letters.position = outbox.position))";

pub(super) async fn insert_documents(
    client: &ClientWrapper,
    documents: &[Document],
) -> Result<usize, StoreError> {
    if documents.is_empty() {
        return Ok(0);
    }
    let kinds: Vec<&str> = documents.iter().map(|d| d.kind.as_str()).collect();
    let ids: Vec<Uuid> = documents.iter().map(|d| d.id).collect();
    let topics: Vec<Option<&str>> = documents.iter().map(|d| d.topic.as_deref()).collect();
    let bodies: Vec<&str> = documents.iter().map(|d| d.body.get()).collect();
    let insert = client
        .prepare_cached(INSERT_DOCUMENTS)
        .await
        .map_err(pg_error)?;
    let added: i64 = client
        .query_one(&insert, &[&kinds, &ids, &topics, &bodies])
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
    usize::try_from(added).map_err(StoreError::backend)
}

pub(super) async fn set_checkpoint(
    client: &ClientWrapper,
    destination: &str,
    next: u64,
) -> Result<(), StoreError> {
    let upsert = client
        .prepare_cached(
            "INSERT INTO outbox_checkpoints (destination, next_position) VALUES ($1, $2)
             ON CONFLICT (destination)
             DO UPDATE SET next_position = greatest(outbox_checkpoints.next_position, excluded.next_position)",
        )
        .await
        .map_err(pg_error)?;
    client
        .execute(&upsert, &[&destination, &sql_bound(next)])
        .await
        .map_err(pg_error)?;
    Ok(())
}

pub(super) async fn put_dead_letters(
    client: &ClientWrapper,
    letters: &[DeadLetter],
) -> Result<(), StoreError> {
    let upsert = client
        .prepare_cached(
            "INSERT INTO dead_letters (destination, notification_id, position, letter)
             VALUES ($1, $2, $3, $4::text::json)
             ON CONFLICT (destination, notification_id)
             DO UPDATE SET position = excluded.position, letter = excluded.letter",
        )
        .await
        .map_err(pg_error)?;
    for letter in letters {
        let json = to_json("dead letter", letter)?;
        client
            .execute(
                &upsert,
                &[
                    &letter.destination,
                    &letter.notification_id,
                    &to_sql_int(letter.position)?,
                    &json,
                ],
            )
            .await
            .map_err(pg_error)?;
    }
    Ok(())
}

/// The statement that tells every listening host, at commit, what a
/// transaction added; `None` when it added nothing anyone follows.
///
/// A simple query, which tokio-postgres sends the moment the future is first
/// polled, with nothing to prepare before: the caller can send it in the same
/// round trip as `COMMIT`, and be sure it arrives first.
pub(super) fn signal_for(added: Added) -> Option<&'static str> {
    match (added.events, added.outbox_rows) {
        (true, true) => Some(SIGNAL_BOTH),
        (true, false) => Some(SIGNAL_EVENTS),
        (false, true) => Some(SIGNAL_OUTBOX),
        (false, false) => None,
    }
}

/// Listens on both channels on a connection of its own and bumps `feeds`
/// for every notification about `schema`, connecting again when the
/// connection is lost (and bumping then too: something may have been missed).
pub(super) fn listen(
    config: tokio_postgres::Config,
    schema: String,
    feeds: Arc<Feeds>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match listen_once(&config, &schema, &feeds).await {
                Ok(()) => tracing::warn!("the store listener's connection closed"),
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "the store listener's connection failed");
                }
            }
            feeds.bump(Added {
                events: true,
                outbox_rows: true,
            });
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    })
}

async fn listen_once(
    config: &tokio_postgres::Config,
    schema: &str,
    feeds: &Feeds,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    // Ends only if LISTEN fails; otherwise it keeps the client, and so the
    // connection, alive while the messages are read.
    let listen = async {
        client
            .batch_execute(&format!("LISTEN {EVENTS_CHANNEL}; LISTEN {OUTBOX_CHANNEL}"))
            .await?;
        std::future::pending::<Result<(), tokio_postgres::Error>>().await
    };
    // Reading the connection's messages is also what drives it, LISTEN
    // included.
    let messages = async {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    if notification.payload() == schema {
                        feeds.bump(Added {
                            events: notification.channel() == EVENTS_CHANNEL,
                            outbox_rows: notification.channel() == OUTBOX_CHANNEL,
                        });
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            }
        }
    };
    tokio::select! {
        result = listen => result,
        result = messages => result,
    }
}

/// The connection of a PostgreSQL [`Claim`]: in a transaction that holds the
/// destination's checkpoint row `FOR UPDATE`.
#[derive(Debug)]
struct ClaimConnection {
    client: InTransaction,
    dropped: Arc<DroppedClaims>,
}

impl Hold for ClaimConnection {}

impl ClaimConnection {
    fn client(&self) -> Result<&Object, StoreError> {
        self.client
            .0
            .as_ref()
            .ok_or_else(|| StoreError::backend("the claim's connection is gone"))
    }

    /// The transaction ended: the connection may go back to the pool.
    fn finished(mut self) {
        self.client.finished();
    }
}

impl Drop for ClaimConnection {
    /// Rolls the claim's transaction back on a task of its own (a drop
    /// cannot wait), which [`DroppedClaims`] tracks until the server has
    /// answered, and the connection then goes back to the pool. Outside a
    /// runtime the connection is closed instead, which the server rolls
    /// back once it notices.
    fn drop(&mut self) {
        let client = std::mem::take(&mut self.client);
        if client.0.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // `client`, dropped here, closes the connection.
            return;
        };
        let rolling_back = self.dropped.begin();
        runtime.spawn(async move {
            let _rolling_back = rolling_back;
            client.roll_back().await;
        });
    }
}

/// A pooled connection inside a transaction. Dropped before
/// [`InTransaction::finished`], it is taken out of the pool and closed, so
/// that its transaction can never reach the connection's next user.
#[derive(Debug, Default)]
struct InTransaction(Option<Object>);

impl InTransaction {
    fn finished(&mut self) {
        drop(self.0.take());
    }

    /// Ends the transaction with `ROLLBACK`; if that fails or the server
    /// does not answer within [`ROLLBACK_WAIT`], the connection is closed.
    async fn roll_back(mut self) {
        let Some(client) = &self.0 else { return };
        match tokio::time::timeout(ROLLBACK_WAIT, client.batch_execute("ROLLBACK")).await {
            Ok(Ok(())) => self.finished(),
            Ok(Err(error)) => {
                tracing::warn!(error = %error_chain(&error), "could not roll back a dropped claim; closing its connection");
            }
            Err(_) => {
                tracing::warn!(
                    "the rollback of a dropped claim took too long; closing its connection"
                );
            }
        }
    }
}

impl Drop for InTransaction {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(Object::take(client));
        }
    }
}

/// How long a dropped claim's `ROLLBACK` may take before its connection is
/// closed instead, and so the longest a claim waits on [`DroppedClaims`].
const ROLLBACK_WAIT: Duration = Duration::from_secs(5);

/// The rollbacks of this store's dropped claims that the server has not
/// answered yet. A claim waits for them first: until its rollback lands, a
/// dropped claim still holds its row, and `SKIP LOCKED` would pass over it
/// as if another dispatcher held the destination.
#[derive(Debug)]
pub(super) struct DroppedClaims(watch::Sender<usize>);

impl Default for DroppedClaims {
    fn default() -> Self {
        DroppedClaims(watch::Sender::new(0))
    }
}

impl DroppedClaims {
    /// Counts one rollback in, until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> RollingBack {
        self.0.send_modify(|pending| *pending += 1);
        RollingBack(Arc::clone(self))
    }

    /// Returns once no rollback is on its way.
    async fn settled(&self) {
        let mut pending = self.0.subscribe();
        // Cannot fail: `self` holds the sender.
        let _ = pending.wait_for(|pending| *pending == 0).await;
    }
}

/// One rollback of a dropped claim in flight.
struct RollingBack(Arc<DroppedClaims>);

impl Drop for RollingBack {
    fn drop(&mut self) {
        self.0.0.send_modify(|pending| *pending -= 1);
    }
}

#[async_trait::async_trait]
impl Outbox for PostgresStore {
    async fn add_documents(&self, documents: Vec<Document>) -> Result<usize, StoreError> {
        self.write(AddDocuments(documents)).await
    }

    async fn read_outbox(
        &self,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(SELECT_OUTBOX)
            .await
            .map_err(pg_error)?;
        client
            .query(&select, &[&sql_bound(from), &sql_bound(max_count)])
            .await
            .map_err(pg_error)?
            .iter()
            .map(outbox_record)
            .collect()
    }

    async fn outbox_head(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let head: i64 = client
            .query_one("SELECT coalesce(max(position), 0) FROM outbox", &[])
            .await
            .map_err(pg_error)?
            .try_get(0)
            .map_err(pg_error)?;
        from_sql_int(head)
    }

    fn outbox_changes(&self) -> watch::Receiver<u64> {
        self.feeds.outbox.subscribe()
    }

    async fn claim(&self, destination: &str) -> Result<Option<Claim>, StoreError> {
        self.dropped_claims.settled().await;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO outbox_checkpoints (destination, next_position) VALUES ($1, 1)
                 ON CONFLICT DO NOTHING",
                &[&destination],
            )
            .await
            .map_err(pg_error)?;
        client.batch_execute("BEGIN").await.map_err(pg_error)?;
        let connection = ClaimConnection {
            client: InTransaction(Some(client)),
            dropped: Arc::clone(&self.dropped_claims),
        };
        let row = connection
            .client()?
            .query_opt(
                "SELECT next_position FROM outbox_checkpoints WHERE destination = $1
                 FOR UPDATE SKIP LOCKED",
                &[&destination],
            )
            .await
            .map_err(pg_error)?;
        let Some(row) = row else {
            connection
                .client()?
                .batch_execute("ROLLBACK")
                .await
                .map_err(pg_error)?;
            connection.finished();
            return Ok(None);
        };
        let next = from_sql_int(row.try_get(0).map_err(pg_error)?)?;
        Ok(Some(Claim::new(destination, next, connection)))
    }

    async fn advance(&self, claim: &mut Claim, next: u64) -> Result<bool, StoreError> {
        if next <= claim.next_position() {
            return Ok(true);
        }
        let destination = claim.destination().to_owned();
        let Some(connection) = claim.hold_mut().downcast_mut::<ClaimConnection>() else {
            return Err(StoreError::backend(
                "a claim of another store was advanced here",
            ));
        };
        let client = connection.client()?;
        client
            .execute(
                "UPDATE outbox_checkpoints SET next_position = greatest(next_position, $2)
                 WHERE destination = $1",
                &[&destination, &sql_bound(next)],
            )
            .await
            .map_err(pg_error)?;
        // The move is for good only once committed, and the commit frees
        // the row: take it again at once. Another host that took it in
        // between holds it now, or has moved it on; either way this round
        // is over.
        client
            .batch_execute("COMMIT; BEGIN")
            .await
            .map_err(pg_error)?;
        let row = client
            .query_opt(
                "SELECT next_position FROM outbox_checkpoints WHERE destination = $1
                 FOR UPDATE SKIP LOCKED",
                &[&destination],
            )
            .await
            .map_err(pg_error)?;
        claim.moved_to(next);
        let now: Option<i64> = row
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(pg_error)?;
        Ok(now == Some(sql_bound(next)))
    }

    async fn release(&self, claim: Claim, next: u64) -> Result<(), StoreError> {
        let destination = claim.destination().to_owned();
        let from = claim.next_position();
        let hold: Box<dyn Any> = claim.into_hold();
        let Ok(connection) = hold.downcast::<ClaimConnection>() else {
            return Err(StoreError::backend(
                "a claim of another store was released here",
            ));
        };
        let client = connection.client()?;
        if next > from {
            client
                .execute(
                    "UPDATE outbox_checkpoints SET next_position = greatest(next_position, $2)
                     WHERE destination = $1",
                    &[&destination, &sql_bound(next)],
                )
                .await
                .map_err(pg_error)?;
        }
        client.batch_execute("COMMIT").await.map_err(pg_error)?;
        connection.finished();
        Ok(())
    }

    async fn checkpoints(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                "SELECT destination, next_position FROM outbox_checkpoints ORDER BY destination",
                &[],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| {
                let next: i64 = row.try_get(1).map_err(pg_error)?;
                Ok((row.try_get(0).map_err(pg_error)?, from_sql_int(next)?))
            })
            .collect()
    }

    async fn add_dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), StoreError> {
        self.write(PutDeadLetters(letters)).await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                "SELECT letter::text FROM dead_letters ORDER BY destination, position",
                &[],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| from_json("dead letter", row.try_get(0).map_err(pg_error)?))
            .collect()
    }

    async fn remove_dead_letter(
        &self,
        destination: &str,
        notification_id: Uuid,
    ) -> Result<bool, StoreError> {
        self.write(DeleteDeadLetter::new(destination, notification_id))
            .await
    }

    async fn register_destination(&self, destination: &str) -> Result<(), StoreError> {
        self.write(SetCheckpoint::registering(destination)).await
    }

    async fn prune_outbox(&self, below: u64, retain: Duration) -> Result<Pruned, StoreError> {
        self.write(Prune { below, retain }).await
    }

    async fn purge_dead_letters(&self, destination: &str) -> Result<usize, StoreError> {
        self.write(PurgeDeadLetters(destination.to_owned())).await
    }

    async fn record_completions(
        &self,
        completions: Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        self.write(Complete(completions)).await
    }

    async fn is_completed(&self, handler: &str, notification_id: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM completions WHERE handler = $1 AND notification_id = $2",
                &[&handler, &notification_id],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.is_some())
    }
}
