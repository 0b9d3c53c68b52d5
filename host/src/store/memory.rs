//! An [`EventStore`] held in process memory, for tests and embedding.
//!
//! It owns nothing but its in-memory state and keeps nothing across
//! restarts. It must not decide any append rule itself: those live in
//! [`super::rules`], so that it behaves exactly like the durable backends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;
use uuid::Uuid;

use super::outbox::{Feeds, LocalClaims, Pruned};
use super::rules::{
    self, AddDocuments, Append, Complete, DeleteDeadLetter, Prune, PurgeDeadLetters,
    PutDeadLetters, Reject, SetCheckpoint, StoreTxn, StoredEventId, Write,
};
use super::{
    AppendOutcome, AppendRequest, AppendedEvent, Claim, CommandKey, CommandRecord, DeadLetter,
    Document, EventStore, InstancePage, Outbox, OutboxEntry, OutboxRecord, StoreError,
};
use crate::model::{
    CommandId, Domain, EntityType, EventContext, NewEvent, NotificationKind, RecordedEvent,
    StreamId,
};

/// An event store in process memory.
///
/// Every operation takes one lock for its whole duration and never awaits
/// while holding it, so each append is atomic and appends are ordered.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    claims: LocalClaims,
    feeds: Feeds,
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
    /// The outbox rows kept, by position (pruning leaves gaps, a row below
    /// a dead letter's can go before it).
    outbox: BTreeMap<u64, Row>,
    /// The position of the last row; 0 while the outbox is empty. Pruning
    /// never removes the last row, so this is also the last position
    /// handed out.
    outbox_head: u64,
    /// Ids of the documents in `outbox`.
    document_ids: HashSet<Uuid>,
    checkpoints: BTreeMap<String, u64>,
    /// By destination, then notification id.
    dead_letters: BTreeMap<(String, Uuid), DeadLetter>,
    /// (handler, notification id), and when it was recorded.
    completions: HashMap<(String, String), OffsetDateTime>,
}

/// An outbox row and when it was added.
struct Row {
    entry: RowEntry,
    added_at: OffsetDateTime,
}

/// What a row holds: a change-feed kind and its event's index, or a document.
enum RowEntry {
    Event(NotificationKind, usize),
    Document(Document),
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs a write under the state's lock and wakes its followers.
    fn write<W: Write>(&self, write: W) -> Result<W::Output, StoreError> {
        let done = rules::run_ready(write.run(&mut *self.state(), rules::now_micros()));
        if done.is_ok() {
            self.feeds.bump(write.adds());
        }
        done
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every write to the state completes without a fallible step in
        // between, so a panic elsewhere cannot leave it half-changed.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The index of the `from`th of a list numbered from 1 (a stream's
/// sequences, positions): `from` 0 reads like 1, and one past any index
/// reads as the end.
fn index_of(from: u64) -> usize {
    usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX)
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
    /// Adds a row after the last one.
    fn push_row(&mut self, entry: RowEntry, added_at: OffsetDateTime) {
        self.outbox_head += 1;
        self.outbox
            .insert(self.outbox_head, Row { entry, added_at });
    }

    fn stream(&self, stream: &StreamId) -> Option<&[usize]> {
        self.streams
            .get(stream.domain().as_str())?
            .get(stream.entity_type().as_str())?
            .get(stream.instance_key().as_str())
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
            written_at: event.written_at,
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
            .entry(stream.domain().to_string())
            .or_default()
            .entry(stream.entity_type().to_string())
            .or_default()
            .entry(stream.instance_key().to_string())
            .or_default()
            .extend(first_index..self.events.len());
        Ok((first_index..self.events.len())
            .map(|index| self.appended(index))
            .collect())
    }

    async fn insert_command(&mut self, record: &CommandRecord) -> Result<(), StoreError> {
        self.commands
            .insert(record.command_id().to_string(), record.clone());
        Ok(())
    }

    async fn insert_event_rows(
        &mut self,
        rows: &[(NotificationKind, u64)],
    ) -> Result<(), StoreError> {
        let added_at = OffsetDateTime::now_utc();
        for &(kind, position) in rows {
            // Position `n` is at index `n - 1`, and the event was just added.
            let index = usize::try_from(position - 1).map_err(StoreError::backend)?;
            self.push_row(RowEntry::Event(kind, index), added_at);
        }
        Ok(())
    }

    async fn insert_documents(&mut self, documents: &[Document]) -> Result<usize, StoreError> {
        let added_at = OffsetDateTime::now_utc();
        let mut added = 0;
        for document in documents {
            if self.document_ids.insert(document.id) {
                self.push_row(RowEntry::Document(document.clone()), added_at);
                added += 1;
            }
        }
        Ok(added)
    }

    async fn set_checkpoint(&mut self, destination: &str, next: u64) -> Result<(), StoreError> {
        let checkpoint = self.checkpoints.entry(destination.to_owned()).or_insert(1);
        *checkpoint = (*checkpoint).max(next);
        Ok(())
    }

    async fn put_dead_letters(&mut self, letters: &[DeadLetter]) -> Result<(), StoreError> {
        for letter in letters {
            self.dead_letters.insert(
                (letter.destination.clone(), letter.notification_id),
                letter.clone(),
            );
        }
        Ok(())
    }

    async fn delete_dead_letter(
        &mut self,
        destination: &str,
        notification_id: Uuid,
    ) -> Result<bool, StoreError> {
        Ok(self
            .dead_letters
            .remove(&(destination.to_owned(), notification_id))
            .is_some())
    }

    async fn insert_completions(
        &mut self,
        completions: &[(String, String)],
    ) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc();
        for completion in completions {
            self.completions.entry(completion.clone()).or_insert(now);
        }
        Ok(())
    }

    async fn delete_dead_letters(&mut self, destination: &str) -> Result<usize, StoreError> {
        let before = self.dead_letters.len();
        self.dead_letters
            .retain(|(letter_destination, _), _| letter_destination != destination);
        Ok(before - self.dead_letters.len())
    }

    async fn prune_outbox(&mut self, below: u64, retain: Duration) -> Result<Pruned, StoreError> {
        let cutoff = OffsetDateTime::now_utc() - retain;
        let dead: HashSet<u64> = self.dead_letters.values().map(|l| l.position).collect();
        // The last row always stays, as in every backend (where it is what
        // keeps positions growing).
        let end = below.min(self.outbox_head);
        let gone: Vec<u64> = self
            .outbox
            .range(..end)
            .filter(|&(position, row)| !dead.contains(position) && row.added_at < cutoff)
            .map(|(&position, _)| position)
            .collect();
        for position in &gone {
            if let Some(Row {
                entry: RowEntry::Document(document),
                ..
            }) = self.outbox.remove(position)
            {
                self.document_ids.remove(&document.id);
            }
        }
        let oldest_kept = self
            .outbox
            .range(below..)
            .chain(dead.iter().filter_map(|p| self.outbox.get_key_value(p)))
            .map(|(_, row)| row.added_at)
            .min();
        let mut pruned = Pruned {
            rows: gone.len() as u64,
            completions: 0,
        };
        let forget_before = oldest_kept.map_or(cutoff, |oldest| oldest.min(cutoff));
        let before = self.completions.len();
        self.completions.retain(|_, at| *at >= forget_before);
        pruned.completions = (before - self.completions.len()) as u64;
        Ok(pruned)
    }
}

#[async_trait::async_trait]
impl EventStore for MemoryStore {
    fn event_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.feeds.events.subscribe()
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.write(Append(request))
    }

    async fn record_rejection(
        &self,
        stream: &StreamId,
        command: &CommandKey,
        message: &str,
    ) -> Result<CommandRecord, StoreError> {
        self.write(Reject::new(stream, command, message))
    }

    async fn command_record(
        &self,
        command_id: &CommandId,
    ) -> Result<Option<CommandRecord>, StoreError> {
        Ok(self.state().commands.get(command_id.as_str()).cloned())
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
        // Sequence `n` is at `indexes[n - 1]`.
        let skip = index_of(from);
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
        domain: &Domain,
        entity_type: &EntityType,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage, StoreError> {
        let state = self.state();
        let Some(instances) = state
            .streams
            .get(domain.as_str())
            .and_then(|entity_types| entity_types.get(entity_type.as_str()))
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
        // Position `n` is at index `n - 1`.
        let skip = index_of(from);
        Ok(state
            .events
            .iter()
            .skip(skip)
            .take(max_count)
            .cloned()
            .collect())
    }
}

#[async_trait::async_trait]
impl Outbox for MemoryStore {
    async fn add_documents(&self, documents: Vec<Document>) -> Result<usize, StoreError> {
        self.write(AddDocuments(documents))
    }

    async fn read_outbox(
        &self,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let state = self.state();
        state
            .outbox
            .range(from..)
            .take(max_count)
            .map(|(&position, row)| {
                let entry = match &row.entry {
                    RowEntry::Event(kind, event) => {
                        let event = state.events[*event].clone();
                        match kind {
                            NotificationKind::NewEntity => OutboxEntry::NewEntity(event),
                            NotificationKind::EventAppended => OutboxEntry::EventAppended(event),
                            // The rules write rows of events for the change
                            // feed only (`outbox::rows_for`).
                            NotificationKind::ProjectionCompleted | NotificationKind::Published => {
                                return Err(StoreError::backend(format!(
                                    "outbox row {position} points at an event, but is a {kind} row"
                                )));
                            }
                        }
                    }
                    RowEntry::Document(document) => OutboxEntry::Document(document.clone()),
                };
                Ok(OutboxRecord { position, entry })
            })
            .collect()
    }

    async fn outbox_head(&self) -> Result<u64, StoreError> {
        Ok(self.state().outbox_head)
    }

    fn outbox_changes(&self) -> watch::Receiver<u64> {
        self.feeds.outbox.subscribe()
    }

    async fn claim(&self, destination: &str) -> Result<Option<Claim>, StoreError> {
        Ok(self.claims.try_hold(destination).map(|hold| {
            let next = self.state().checkpoints.get(destination).copied();
            Claim::new(destination, next.unwrap_or(1), hold)
        }))
    }

    async fn advance(&self, claim: &mut Claim, next: u64) -> Result<bool, StoreError> {
        if let Some(write) = SetCheckpoint::ending(claim, next) {
            self.write(write)?;
            claim.moved_to(next);
        }
        Ok(true)
    }

    async fn release(&self, claim: Claim, next: u64) -> Result<(), StoreError> {
        match SetCheckpoint::ending(&claim, next) {
            Some(write) => self.write(write),
            None => Ok(()),
        }
    }

    async fn checkpoints(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .state()
            .checkpoints
            .iter()
            .map(|(destination, &next)| (destination.clone(), next))
            .collect())
    }

    async fn add_dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), StoreError> {
        self.write(PutDeadLetters(letters))
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut letters: Vec<DeadLetter> = self.state().dead_letters.values().cloned().collect();
        letters.sort_by(|a, b| (&a.destination, a.position).cmp(&(&b.destination, b.position)));
        Ok(letters)
    }

    async fn remove_dead_letter(
        &self,
        destination: &str,
        notification_id: Uuid,
    ) -> Result<bool, StoreError> {
        self.write(DeleteDeadLetter::new(destination, notification_id))
    }

    async fn register_destination(&self, destination: &str) -> Result<(), StoreError> {
        self.write(SetCheckpoint::registering(destination))
    }

    async fn prune_outbox(&self, below: u64, retain: Duration) -> Result<Pruned, StoreError> {
        self.write(Prune { below, retain })
    }

    async fn purge_dead_letters(&self, destination: &str) -> Result<usize, StoreError> {
        self.write(PurgeDeadLetters(destination.to_owned()))
    }

    async fn record_completions(
        &self,
        completions: Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        self.write(Complete(completions))
    }

    async fn is_completed(&self, handler: &str, notification_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .state()
            .completions
            .contains_key(&(handler.to_owned(), notification_id.to_owned())))
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
            another: None,
        })
    }

    conformance_tests!(fixture);
}
