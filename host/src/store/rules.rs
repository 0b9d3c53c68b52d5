//! The rules of an append, written once for every backend.
//!
//! A backend supplies the primitive reads and writes of one open transaction
//! through [`StoreTxn`]; [`append`] and [`record_rejection`] decide, in one
//! place, what those primitives are asked to do and in which order. This is
//! what keeps the backends' semantics identical. This module must not touch
//! any storage itself, and it must not hold state between calls.

use std::collections::HashSet;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AppendOutcome, AppendRequest, AppendedEvent, CommandKey, CommandRecord, InstancePage,
    StoreError,
};
use crate::model::{EventContext, NameKind, NewEvent, StreamId, validate_name};

/// Where an event id that the store already holds was appended.
pub(super) struct StoredEventId {
    /// Whether it belongs to the stream of the append being checked.
    pub same_stream: bool,
    /// Where it landed.
    pub event: AppendedEvent,
}

/// The primitives of one open write transaction of a backend.
///
/// Nothing done through it is visible to others before the backend commits,
/// and none of it survives if the backend rolls back. Reads see the writes
/// made earlier in the same transaction.
pub(super) trait StoreTxn {
    /// What is recorded for a command id, if anything.
    fn command_record(&mut self, command_id: &str) -> Result<Option<CommandRecord>, StoreError>;

    /// Where `event_id` was appended, if it was; `stream` is the stream of the
    /// append being checked.
    fn find_event_id(
        &mut self,
        stream: &StreamId,
        event_id: Uuid,
    ) -> Result<Option<StoredEventId>, StoreError>;

    /// The stream's last sequence; 0 if it has no events.
    fn stream_sequence(&mut self, stream: &StreamId) -> Result<u64, StoreError>;

    /// Writes a non-empty batch with sequences `first_sequence..`, assigns
    /// store-wide positions and moves the stream's sequence to its last event.
    fn insert_events(
        &mut self,
        stream: &StreamId,
        first_sequence: u64,
        events: &[NewEvent],
        context: &EventContext,
        written_at: OffsetDateTime,
    ) -> Result<Vec<AppendedEvent>, StoreError>;

    /// Records what a command id did. The caller has checked that the id has
    /// no record yet.
    fn insert_command(&mut self, record: &CommandRecord) -> Result<(), StoreError>;
}

/// Appends `request` through `txn`, in the order the contract fixes: names,
/// command id, event-id idempotency, expectation, then the writes.
///
/// A refused append (conflict, reused id, executed command, bad name) has
/// written nothing through `txn`. After a backend error the backend must roll
/// back whatever this call wrote; after `Ok` it must commit for the outcome
/// to hold.
pub(super) fn append(
    txn: &mut impl StoreTxn,
    request: &AppendRequest,
    written_at: OffsetDateTime,
) -> Result<AppendOutcome, StoreError> {
    // Names are checked even though callers should have: an event type such
    // as `NewEntity` would corrupt notification subjects for good.
    for event in &request.events {
        validate_name(NameKind::EventType, &event.event_type)?;
    }
    if let Some(command) = &request.command {
        validate_command(command)?;
        if let Some(record) = txn.command_record(&command.command_id)? {
            return Err(StoreError::CommandAlreadyExecuted {
                record: Box::new(record),
            });
        }
    }
    if let Some(original) = earlier_append(txn, request)? {
        return Ok(original);
    }
    let current = txn.stream_sequence(&request.stream)?;
    if !request.expectation.is_met_by(current) {
        return Err(StoreError::Conflict {
            stream: request.stream.clone(),
            expected: request.expectation,
            actual: current,
        });
    }
    let events = if request.events.is_empty() {
        // An empty batch must not create the stream.
        Vec::new()
    } else {
        txn.insert_events(
            &request.stream,
            current + 1,
            &request.events,
            &request.context,
            written_at,
        )?
    };
    let outcome = AppendOutcome {
        stream_sequence: events.last().map_or(current, |event| event.sequence),
        events,
    };
    if let Some(command) = &request.command {
        txn.insert_command(&CommandRecord::Appended {
            command_id: command.command_id.clone(),
            stream: request.stream.clone(),
            command_type: command.command_type.clone(),
            outcome: outcome.clone(),
        })?;
    }
    Ok(outcome)
}

/// Records a rejection unless the command id already has a record, and
/// returns the record that stands.
pub(super) fn record_rejection(
    txn: &mut impl StoreTxn,
    stream: &StreamId,
    command: &CommandKey,
    message: &str,
) -> Result<CommandRecord, StoreError> {
    validate_command(command)?;
    if let Some(existing) = txn.command_record(&command.command_id)? {
        return Ok(existing);
    }
    let record = CommandRecord::Rejected {
        command_id: command.command_id.clone(),
        stream: stream.clone(),
        command_type: command.command_type.clone(),
        message: message.to_owned(),
    };
    txn.insert_command(&record)?;
    Ok(record)
}

/// Decides whether `request` retries an earlier append, by its event ids.
///
/// `Ok(Some)` carries the earlier outcome: every id was appended before, in
/// this order, consecutively, to this stream. `Ok(None)` means no id was seen
/// before. Anything in between is [`StoreError::EventIdReused`].
fn earlier_append(
    txn: &mut impl StoreTxn,
    request: &AppendRequest,
) -> Result<Option<AppendOutcome>, StoreError> {
    let mut seen_in_batch = HashSet::with_capacity(request.events.len());
    for event in &request.events {
        if !seen_in_batch.insert(event.event_id) {
            return Err(StoreError::EventIdReused {
                event_id: event.event_id,
            });
        }
    }
    let mut stored = Vec::with_capacity(request.events.len());
    for event in &request.events {
        stored.push(txn.find_event_id(&request.stream, event.event_id)?);
    }
    let Some(first_reused) = request
        .events
        .iter()
        .zip(&stored)
        .find_map(|(event, found)| found.as_ref().map(|_| event.event_id))
    else {
        // Also the path of an empty batch, which retries nothing.
        return Ok(None);
    };
    let reused = || StoreError::EventIdReused {
        event_id: first_reused,
    };
    let mut original = Vec::with_capacity(stored.len());
    for found in stored {
        let found = found.ok_or_else(reused)?;
        let follows = original
            .last()
            .is_none_or(|previous: &AppendedEvent| previous.sequence + 1 == found.event.sequence);
        if !found.same_stream || !follows {
            return Err(reused());
        }
        original.push(found.event);
    }
    Ok(Some(AppendOutcome {
        stream_sequence: original.last().map_or(0, |event| event.sequence),
        events: original,
    }))
}

fn validate_command(command: &CommandKey) -> Result<(), StoreError> {
    validate_name(NameKind::CommandId, &command.command_id)?;
    validate_name(NameKind::CommandType, &command.command_type)?;
    Ok(())
}

/// Turns up to `limit + 1` keys read after `cursor` into a page.
///
/// The extra key only tells whether more exist. With `limit == 0` the page
/// is empty and, when keys remain, `next_cursor` resumes where this page
/// began: the cursor given, or `""` (which sorts before every valid key) when
/// none was.
pub(super) fn instance_page(
    mut keys: Vec<String>,
    cursor: Option<&str>,
    limit: usize,
) -> InstancePage {
    let more = keys.len() > limit;
    keys.truncate(limit);
    let next_cursor = more.then(|| {
        keys.last()
            .cloned()
            .unwrap_or_else(|| cursor.unwrap_or_default().to_owned())
    });
    InstancePage {
        instance_keys: keys,
        next_cursor,
    }
}

/// The current time, cut to the microsecond precision every backend keeps,
/// so that a written event reads back exactly as any backend stores it.
pub(super) fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}
