//! An [`EventStore`] held in process memory, for tests and embedding.
//!
//! It owns nothing but its in-memory state and keeps nothing across
//! restarts. It must not decide any append rule itself: those live in
//! [`super::rules`], so that it behaves exactly like the durable backends.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use time::OffsetDateTime;
use uuid::Uuid;

use super::rules::{self, StoreTxn, StoredEventId};
use super::{
    AppendOutcome, AppendRequest, AppendedEvent, CommandKey, CommandRecord, EventStore,
    InstancePage, StoreError,
};
use crate::model::{EventContext, NewEvent, RecordedEvent, StreamId};

/// An event store in process memory.
///
/// Every operation takes one lock for its whole duration and never awaits
/// while holding it, so each append is atomic and appends are ordered.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

/// Instance keys of one entity type, each with the indexes (into
/// [`State::events`]) of its stream's events, in sequence order.
type Instances = BTreeMap<String, Vec<usize>>;

#[derive(Default)]
struct State {
    /// Every event, in position order: position `n` is at index `n - 1`.
    events: Vec<RecordedEvent>,
    /// Domain, then entity type, then instance key: nested so that a stream
    /// is found by `&str` parts and an entity type's keys are a range.
    streams: BTreeMap<String, BTreeMap<String, Instances>>,
    /// Where each event id is in `events`.
    event_ids: HashMap<Uuid, usize>,
    commands: HashMap<String, CommandRecord>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every write to the state completes without a fallible step in
        // between, so a panic elsewhere cannot leave it half-changed.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("MemoryStore")
            .field("events", &state.events.len())
            .field("commands", &state.commands.len())
            .finish()
    }
}

impl State {
    fn stream(&self, stream: &StreamId) -> Option<&[usize]> {
        self.streams
            .get(stream.domain())?
            .get(stream.entity_type())?
            .get(stream.instance_key())
            .map(Vec::as_slice)
    }

    fn sequence(&self, stream: &StreamId) -> u64 {
        self.stream(stream)
            .map_or(0, |indexes| indexes.len() as u64)
    }

    fn appended(&self, index: usize) -> AppendedEvent {
        let event = &self.events[index];
        AppendedEvent {
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            sequence: event.sequence,
            position: event.position,
        }
    }
}

/// Only the insert methods change the state, and neither can fail, so an
/// append that returns an error has changed nothing. No method waits, so the
/// rules run with [`rules::run_ready`] under the state's lock.
impl StoreTxn for State {
    async fn command_record(
        &mut self,
        command_id: &str,
    ) -> Result<Option<CommandRecord>, StoreError> {
        Ok(self.commands.get(command_id).cloned())
    }

    async fn find_event_ids(
        &mut self,
        stream: &StreamId,
        event_ids: &[Uuid],
    ) -> Result<Vec<Option<StoredEventId>>, StoreError> {
        Ok(event_ids
            .iter()
            .map(|event_id| {
                self.event_ids.get(event_id).map(|&index| StoredEventId {
                    same_stream: self.events[index].stream == *stream,
                    event: self.appended(index),
                })
            })
            .collect())
    }

    async fn stream_sequence(&mut self, stream: &StreamId) -> Result<u64, StoreError> {
        Ok(self.sequence(stream))
    }

    async fn insert_events(
        &mut self,
        stream: &StreamId,
        first_sequence: u64,
        events: &[NewEvent],
        context: &EventContext,
        written_at: OffsetDateTime,
    ) -> Result<Vec<AppendedEvent>, StoreError> {
        let first_index = self.events.len();
        for (sequence, event) in (first_sequence..).zip(events) {
            let index = self.events.len();
            self.event_ids.insert(event.event_id, index);
            self.events.push(RecordedEvent {
                stream: stream.clone(),
                event_id: event.event_id,
                event_type: event.event_type.clone(),
                sequence,
                position: index as u64 + 1,
                written_at,
                payload: event.payload.clone(),
                context: context.clone(),
            });
        }
        self.streams
            .entry(stream.domain().to_owned())
            .or_default()
            .entry(stream.entity_type().to_owned())
            .or_default()
            .entry(stream.instance_key().to_owned())
            .or_default()
            .extend(first_index..self.events.len());
        Ok((first_index..self.events.len())
            .map(|index| self.appended(index))
            .collect())
    }

    async fn insert_command(&mut self, record: &CommandRecord) -> Result<(), StoreError> {
        self.commands
            .insert(record.command_id().to_owned(), record.clone());
        Ok(())
    }
}

#[async_trait::async_trait]
impl EventStore for MemoryStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        rules::run_ready(rules::append(
            &mut *self.state(),
            &request,
            rules::now_micros(),
        ))
    }

    async fn record_rejection(
        &self,
        stream: &StreamId,
        command: &CommandKey,
        message: &str,
    ) -> Result<CommandRecord, StoreError> {
        rules::run_ready(rules::record_rejection(
            &mut *self.state(),
            stream,
            command,
            message,
        ))
    }

    async fn command_record(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError> {
        Ok(self.state().commands.get(command_id).cloned())
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.state();
        let Some(indexes) = state.stream(stream) else {
            return Ok(Vec::new());
        };
        // Sequence `n` is at `indexes[n - 1]`; `from` 0 reads like 1.
        let skip = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
        Ok(indexes
            .iter()
            .skip(skip)
            .take(max_count)
            .map(|&index| state.events[index].clone())
            .collect())
    }

    async fn stream_sequence(&self, stream: &StreamId) -> Result<u64, StoreError> {
        Ok(self.state().sequence(stream))
    }

    async fn list_instances(
        &self,
        domain: &str,
        entity_type: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage, StoreError> {
        let state = self.state();
        let Some(instances) = state
            .streams
            .get(domain)
            .and_then(|entity_types| entity_types.get(entity_type))
        else {
            return Ok(rules::instance_page(Vec::new(), cursor, limit));
        };
        let after = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let keys = instances
            .range::<str, _>((after, Bound::Unbounded))
            .take(limit.saturating_add(1))
            .map(|(key, _)| key.clone())
            .collect();
        Ok(rules::instance_page(keys, cursor, limit))
    }

    async fn read_all(
        &self,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.state();
        // Position `n` is at index `n - 1`; `from` 0 reads like 1.
        let skip = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
        Ok(state
            .events
            .iter()
            .skip(skip)
            .take(max_count)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::store::conformance::{Fixture, conformance_tests};

    async fn fixture() -> Option<Fixture> {
        Some(Fixture {
            store: Arc::new(super::MemoryStore::new()),
            guard: Box::new(()),
        })
    }

    conformance_tests!(fixture);
}
