//! The writes a [`PgTxn`](super::transaction::PgTxn) holds back to send
//! with its next statement: events (with the moves of their streams), their
//! outbox rows and command records, one statement of each kind however many
//! appends of a batch add to it.
//!
//! Nothing here goes to the server on its own: [`Held::send`] runs only as
//! part of the transaction's next round trip (see [`super::transaction`]).

use deadpool_postgres::ClientWrapper;
use time::OffsetDateTime;
use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::model::{NewEvent, StreamId};
use crate::store::StoreError;
use crate::store::sql::to_sql_int;

/// The writes a [`PgTxn`](super::transaction::PgTxn) holds back to send
/// with its next statement, one statement each: events, their outbox rows
/// (which point at them), command records.
#[derive(Default)]
pub(super) struct Held {
    /// Events, with the moves of their streams ([`INSERT_EVENTS`]).
    pub(super) events: Option<HeldEvents>,
    /// Outbox rows for events: kind and event position
    /// ([`INSERT_EVENT_ROWS`](super::outbox::INSERT_EVENT_ROWS)).
    pub(super) rows: Option<HeldPairs<&'static str, i64>>,
    /// Command records: command id and record ([`INSERT_COMMANDS`]).
    pub(super) records: Option<HeldPairs<String, String>>,
}

impl Held {
    pub(super) fn is_empty(&self) -> bool {
        self.events.is_none() && self.rows.is_none() && self.records.is_none()
    }

    /// Adds `other`'s writes after these.
    pub(super) fn extend(&mut self, other: Held) {
        fn merge<T: HeldStatement>(mine: &mut Option<T>, theirs: Option<T>) {
            match (mine.as_mut(), theirs) {
                (Some(mine), Some(theirs)) => mine.extend(theirs),
                (None, theirs) => *mine = theirs,
                (Some(_), None) => {}
            }
        }
        merge(&mut self.events, other.events);
        merge(&mut self.rows, other.rows);
        merge(&mut self.records, other.records);
    }

    /// Sends the statements, in order, when first polled, and returns the
    /// first error.
    pub(super) async fn send(&self, client: &ClientWrapper) -> Result<(), tokio_postgres::Error> {
        async fn execute(
            client: &ClientWrapper,
            held: Option<&impl HeldStatement>,
        ) -> Result<(), tokio_postgres::Error> {
            match held {
                Some(held) => client
                    .execute(held.statement(), &held.params())
                    .await
                    .map(drop),
                None => Ok(()),
            }
        }
        let (events, rows, records) = tokio::join!(
            execute(client, self.events.as_ref()),
            execute(client, self.rows.as_ref()),
            execute(client, self.records.as_ref()),
        );
        events.and(rows).and(records)
    }
}

/// One statement of [`Held`]: its rows, as arrays, grow with every write it
/// holds, and one execution inserts them all.
trait HeldStatement {
    fn statement(&self) -> &Statement;
    fn params(&self) -> Vec<&(dyn ToSql + Sync)>;
    /// Adds `other`'s rows after these.
    fn extend(&mut self, other: Self);
}

/// A statement of [`Held`] that inserts pairs, as two arrays.
pub(super) struct HeldPairs<A, B> {
    insert: Statement,
    firsts: Vec<A>,
    seconds: Vec<B>,
}

impl<A, B> HeldPairs<A, B> {
    pub(super) fn new(insert: Statement) -> Self {
        HeldPairs {
            insert,
            firsts: Vec::new(),
            seconds: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, first: A, second: B) {
        self.firsts.push(first);
        self.seconds.push(second);
    }
}

impl<A: ToSql + Sync, B: ToSql + Sync> HeldStatement for HeldPairs<A, B> {
    fn statement(&self) -> &Statement {
        &self.insert
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![&self.firsts, &self.seconds]
    }

    fn extend(&mut self, other: Self) {
        self.firsts.extend(other.firsts);
        self.seconds.extend(other.seconds);
    }
}

/// Events held back by a [`PgTxn`](super::transaction::PgTxn), inserted
/// with the moves of their streams by one statement, [`INSERT_EVENTS`].
pub(super) struct HeldEvents {
    insert: Statement,
    positions: Vec<i64>,
    domains: Vec<String>,
    entity_types: Vec<String>,
    instance_keys: Vec<String>,
    sequences: Vec<i64>,
    event_ids: Vec<Uuid>,
    event_types: Vec<String>,
    payloads: Vec<String>,
    written_at: Vec<OffsetDateTime>,
    contexts: Vec<String>,
}

impl HeldEvents {
    pub(super) fn new(insert: Statement) -> Self {
        HeldEvents {
            insert,
            positions: Vec::new(),
            domains: Vec::new(),
            entity_types: Vec::new(),
            instance_keys: Vec::new(),
            sequences: Vec::new(),
            event_ids: Vec::new(),
            event_types: Vec::new(),
            payloads: Vec::new(),
            written_at: Vec::new(),
            contexts: Vec::new(),
        }
    }

    pub(super) fn push(
        &mut self,
        stream: &StreamId,
        sequence: u64,
        position: u64,
        event: &NewEvent,
        written_at: OffsetDateTime,
        context: &str,
    ) -> Result<(), StoreError> {
        self.positions.push(to_sql_int(position)?);
        self.sequences.push(to_sql_int(sequence)?);
        self.domains.push(stream.domain().to_string());
        self.entity_types.push(stream.entity_type().to_string());
        self.instance_keys.push(stream.instance_key().to_string());
        self.event_ids.push(event.event_id);
        self.event_types.push(event.event_type.to_string());
        self.payloads.push(event.payload.get().to_owned());
        self.written_at.push(written_at);
        self.contexts.push(context.to_owned());
        Ok(())
    }
}

impl HeldStatement for HeldEvents {
    fn statement(&self) -> &Statement {
        &self.insert
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.positions,
            &self.domains,
            &self.entity_types,
            &self.instance_keys,
            &self.sequences,
            &self.event_ids,
            &self.event_types,
            &self.payloads,
            &self.written_at,
            &self.contexts,
        ]
    }

    fn extend(&mut self, other: Self) {
        self.positions.extend(other.positions);
        self.domains.extend(other.domains);
        self.entity_types.extend(other.entity_types);
        self.instance_keys.extend(other.instance_keys);
        self.sequences.extend(other.sequences);
        self.event_ids.extend(other.event_ids);
        self.event_types.extend(other.event_types);
        self.payloads.extend(other.payloads);
        self.written_at.extend(other.written_at);
        self.contexts.extend(other.contexts);
    }
}

/// Inserts events, numbered and placed by the caller, moves their streams'
/// sequences to their last events, and moves the position sequence past
/// them (never back: a batch whose member sent its events early may send a
/// lower last position after a higher one). Run only under `append_lock`,
/// with positions after those of
/// [`SELECT_LAST_POSITION`](super::positions::SELECT_LAST_POSITION). A
/// stream row moved by a concurrent transaction makes the transaction fail,
/// as do two moves of one stream in one statement.
pub(super) const INSERT_EVENTS: &str = "
    WITH batch AS MATERIALIZED (
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                             $6::uuid[], $7::text[], $8::text[], $9::timestamptz[], $10::text[])
            AS e (position, domain, entity_type, instance_key, sequence, event_id, event_type,
                  payload, written_at, context)
    ), inserted AS (
        INSERT INTO events (position, domain, entity_type, instance_key, sequence, event_id,
                            event_type, payload, written_at, context)
        SELECT position, domain, entity_type, instance_key, sequence, event_id, event_type,
               payload::json, written_at, context::json
        FROM batch
    ), moved AS (
        INSERT INTO streams (domain, entity_type, instance_key, sequence)
        SELECT domain, entity_type, instance_key, max(sequence) FROM batch
        GROUP BY domain, entity_type, instance_key
        ON CONFLICT (domain, entity_type, instance_key) DO UPDATE SET sequence = excluded.sequence
    )
    SELECT setval('event_position', greatest(
        (SELECT max(position) FROM batch),
        (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM event_position)))";

pub(super) const INSERT_COMMANDS: &str = "INSERT INTO commands (command_id, record)
     SELECT command_id, record::json FROM unnest($1::text[], $2::text[]) AS r(command_id, record)";
