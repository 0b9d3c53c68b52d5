//! The rules of an append, written once for every backend.
//!
//! A backend supplies the primitive reads and writes of one open transaction
//! through [`StoreTxn`]; [`append`] and [`record_rejection`] decide, in one
//! place, what those primitives are asked to do and in which order. This is
//! what keeps the backends' semantics identical. This module must not touch
//! any storage itself, and it must not hold state between calls.
//!
//! The primitives are `async` because a networked backend (PostgreSQL) waits
//! on the server for each of them; [`StoreTxn::append_reads`] lets it wait
//! once for all the reads an append decides on. Backends whose primitives
//! never wait (memory, SQLite) run the rules to completion on the calling
//! thread with [`run_ready`], so they neither need an executor nor pay for
//! one.

use std::collections::HashSet;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::outbox::{self, Added, Claim, DeadLetter, Document, Pruned};
use super::{
    AppendOutcome, AppendRequest, AppendedEvent, CommandKey, CommandRecord, InstancePage,
    StoreError,
};
use crate::model::{EventContext, NewEvent, NotificationKind, StreamId};

/// What [`append`] decides on: the answers of [`StoreTxn::append_reads`].
pub(super) struct AppendReads {
    /// What is recorded for the append's command id; `None` when it has no
    /// record, and when the append names no command.
    pub command: Option<CommandRecord>,
    /// Where each event id looked up was appended, if it was, in the order
    /// given; empty when none was looked up.
    pub event_ids: Vec<Option<StoredEventId>>,
    /// The stream's last sequence; 0 if it has no events.
    pub stream_sequence: u64,
}

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
///
/// A backend that lets transactions run concurrently must make a commit fail
/// (and then run the rules again) whenever a write would contradict what a
/// concurrent transaction committed after this one read: the rules decide on
/// what they read, and only a serial execution makes that decision right.
pub(super) trait StoreTxn {
    /// What is recorded for a command id, if anything.
    async fn command_record(
        &mut self,
        command_id: &str,
    ) -> Result<Option<CommandRecord>, StoreError>;

    /// Where each of `event_ids` was appended, if it was, in the order given;
    /// `stream` is the stream of the append being checked.
    async fn find_event_ids(
        &mut self,
        stream: &StreamId,
        event_ids: &[Uuid],
    ) -> Result<Vec<Option<StoredEventId>>, StoreError>;

    /// The stream's last sequence; 0 if it has no events.
    async fn stream_sequence(&mut self, stream: &StreamId) -> Result<u64, StoreError>;

    /// Everything [`append`] reads before it decides: the record of
    /// `command_id` (when there is one), where each of `event_ids` was
    /// appended (none is looked up when it is empty) and the sequence of
    /// `stream`, all in the transaction's one snapshot.
    ///
    /// The reads do not depend on each other, so a backend that waits on a
    /// server for each statement overrides this to ask for all three in one
    /// round trip. The default asks one after another, which costs nothing
    /// to a backend that never waits.
    async fn append_reads(
        &mut self,
        command_id: Option<&str>,
        stream: &StreamId,
        event_ids: &[Uuid],
    ) -> Result<AppendReads, StoreError> {
        let command = match command_id {
            Some(command_id) => self.command_record(command_id).await?,
            None => None,
        };
        let event_ids = if event_ids.is_empty() {
            Vec::new()
        } else {
            self.find_event_ids(stream, event_ids).await?
        };
        Ok(AppendReads {
            command,
            event_ids,
            stream_sequence: self.stream_sequence(stream).await?,
        })
    }

    /// Writes a non-empty batch with sequences `first_sequence..`, assigns
    /// store-wide positions and moves the stream's sequence to its last event.
    async fn insert_events(
        &mut self,
        stream: &StreamId,
        first_sequence: u64,
        events: &[NewEvent],
        context: &EventContext,
        written_at: OffsetDateTime,
    ) -> Result<Vec<AppendedEvent>, StoreError>;

    /// Records what a command id did. The caller has checked that the id has
    /// no record yet.
    ///
    /// A backend may hold the write back until its next statement or its
    /// commit (PostgreSQL sends it with `COMMIT`, saving a round trip), as
    /// long as later reads of the transaction still see it and a failure of
    /// the write still fails the commit: then the error that a concurrent
    /// record of the same id causes surfaces at the commit, not here.
    async fn insert_command(&mut self, record: &CommandRecord) -> Result<(), StoreError>;

    /// Adds outbox rows pointing at events (each a kind and the event's
    /// position), in order, after every row already there.
    async fn insert_event_rows(
        &mut self,
        rows: &[(NotificationKind, u64)],
    ) -> Result<(), StoreError>;

    /// Adds the documents whose ids the outbox does not hold yet, in order;
    /// returns how many.
    async fn insert_documents(&mut self, documents: &[Document]) -> Result<usize, StoreError>;

    /// Moves a destination's checkpoint forward to `next` (never back).
    async fn set_checkpoint(&mut self, destination: &str, next: u64) -> Result<(), StoreError>;

    /// Records dead letters, replacing those of the same destination and id.
    async fn put_dead_letters(&mut self, letters: &[DeadLetter]) -> Result<(), StoreError>;

    /// Removes a dead letter; says whether there was one.
    async fn delete_dead_letter(
        &mut self,
        destination: &str,
        notification_id: Uuid,
    ) -> Result<bool, StoreError>;

    /// Records completions, skipping those recorded already.
    async fn insert_completions(
        &mut self,
        completions: &[(String, String)],
    ) -> Result<(), StoreError>;

    /// Removes every dead letter of `destination`; returns how many.
    async fn delete_dead_letters(&mut self, destination: &str) -> Result<usize, StoreError>;

    /// Removes what [`Outbox::prune_outbox`](super::Outbox::prune_outbox)
    /// says, in one transaction.
    async fn prune_outbox(&mut self, below: u64, retain: Duration) -> Result<Pruned, StoreError>;
}

/// A write for the rules to carry out in one transaction, as a value, so
/// that a backend can queue it (SQLite's writer thread, PostgreSQL's group
/// commit) or run it again in a new transaction (PostgreSQL, after losing a
/// race). Each kind of write answers in its own type.
pub(super) trait Write: Send + Sync + 'static {
    /// What the write answers.
    type Output: Send + 'static;

    /// What the write may add, so that whoever follows it (projection
    /// propagation, dispatchers) looks.
    fn adds(&self) -> Added {
        Added::default()
    }

    /// Carries the write out through `txn`; `written_at` stamps appended
    /// events.
    async fn run(
        &self,
        txn: &mut impl StoreTxn,
        written_at: OffsetDateTime,
    ) -> Result<Self::Output, StoreError>;
}

/// [`append`] this request.
pub(super) struct Append(pub AppendRequest);

impl Write for Append {
    type Output = AppendOutcome;

    fn adds(&self) -> Added {
        let Append(request) = self;
        let events = !request.events.is_empty();
        Added {
            events,
            outbox_rows: events && request.raise.iter().any(NotificationKind::is_change_feed),
        }
    }

    async fn run(
        &self,
        txn: &mut impl StoreTxn,
        written_at: OffsetDateTime,
    ) -> Result<AppendOutcome, StoreError> {
        append(txn, &self.0, written_at).await
    }
}

/// [`record_rejection`] of this command; answers the record that stands.
pub(super) struct Reject {
    stream: StreamId,
    command: CommandKey,
    message: String,
}

impl Reject {
    /// The rejection of `command`, addressed to `stream`, with the
    /// handler's `message`.
    pub(super) fn new(stream: &StreamId, command: &CommandKey, message: &str) -> Reject {
        Reject {
            stream: stream.clone(),
            command: command.clone(),
            message: message.to_owned(),
        }
    }
}

impl Write for Reject {
    type Output = CommandRecord;

    async fn run(
        &self,
        txn: &mut impl StoreTxn,
        _written_at: OffsetDateTime,
    ) -> Result<CommandRecord, StoreError> {
        record_rejection(txn, &self.stream, &self.command, &self.message).await
    }
}

/// Add these documents to the outbox; answers how many were added.
pub(super) struct AddDocuments(pub Vec<Document>);

impl Write for AddDocuments {
    type Output = usize;

    fn adds(&self) -> Added {
        Added {
            events: false,
            outbox_rows: true,
        }
    }

    async fn run(
        &self,
        txn: &mut impl StoreTxn,
        _written_at: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        refuse_change_feed_documents(&self.0)?;
        txn.insert_documents(&self.0).await
    }
}

/// Move a destination's checkpoint forward.
pub(super) struct SetCheckpoint {
    destination: String,
    next: u64,
}

impl SetCheckpoint {
    /// The move of `claim`'s checkpoint to `next`; `None` when that moves
    /// nothing, which costs no write.
    pub(super) fn ending(claim: &Claim, next: u64) -> Option<SetCheckpoint> {
        (next > claim.next_position()).then(|| SetCheckpoint {
            destination: claim.destination().to_owned(),
            next,
        })
    }
}

impl SetCheckpoint {
    /// A checkpoint at 1 for `destination`, which moves no existing one
    /// (checkpoints never move back).
    pub(super) fn registering(destination: &str) -> SetCheckpoint {
        SetCheckpoint {
            destination: destination.to_owned(),
            next: 1,
        }
    }
}

impl Write for SetCheckpoint {
    type Output = ();

    async fn run(
        &self,
        txn: &mut impl StoreTxn,
        _written_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        txn.set_checkpoint(&self.destination, self.next).await
    }
}

/// Record these dead letters.
pub(super) struct PutDeadLetters(pub Vec<DeadLetter>);

impl Write for PutDeadLetters {
    type Output = ();

    async fn run(
        &self,
        txn: &mut impl StoreTxn,
        _written_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        txn.put_dead_letters(&self.0).await
    }
}

/// Remove a dead letter; answers whether there was one.
pub(super) struct DeleteDeadLetter {
    destination: String,
    notification_id: Uuid,
}

impl DeleteDeadLetter {
    /// The removal of `destination`'s dead letter `notification_id`.
    pub(super) fn new(destination: &str, notification_id: Uuid) -> DeleteDeadLetter {
        DeleteDeadLetter {
            destination: destination.to_owned(),
            notification_id,
        }
    }
}

impl Write for DeleteDeadLetter {
    type Output = bool;

    async fn run(
        &self,
        txn: &mut impl StoreTxn,
        _written_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        txn.delete_dead_letter(&self.destination, self.notification_id)
            .await
    }
}

/// Remove every dead letter of a destination; answers how many.
pub(super) struct PurgeDeadLetters(pub String);

impl Write for PurgeDeadLetters {
    type Output = usize;

    async fn run(
        &self,
        txn: &mut impl StoreTxn,
        _written_at: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        txn.delete_dead_letters(&self.0).await
    }
}

/// Prune the outbox below a position; answers what went.
pub(super) struct Prune {
    /// Rows from here on stay.
    pub below: u64,
    /// Rows and completions younger than this stay.
    pub retain: Duration,
}

impl Write for Prune {
    type Output = Pruned;

    async fn run(
        &self,
        txn: &mut impl StoreTxn,
        _written_at: OffsetDateTime,
    ) -> Result<Pruned, StoreError> {
        txn.prune_outbox(self.below, self.retain).await
    }
}

/// Record handlers' completions of notifications.
pub(super) struct Complete(pub Vec<(String, String)>);

impl Write for Complete {
    type Output = ();

    async fn run(
        &self,
        txn: &mut impl StoreTxn,
        _written_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        txn.insert_completions(&self.0).await
    }
}

/// Appends `request` through `txn`, in the order the contract fixes: names,
/// command id, event-id idempotency, expectation, then the writes.
///
/// Everything the decision needs is read at once, through
/// [`StoreTxn::append_reads`], and then decided on in that order, so a
/// networked backend pays one round trip for the reads. The checks that need
/// no read come before it: names, and ids repeated within the batch (which
/// are then not looked up, and are still reported after an executed command,
/// in their place in the order).
///
/// A refused append (conflict, reused id, executed command) has
/// written nothing through `txn`. After a backend error the backend must roll
/// back whatever this call wrote; after `Ok` it must commit for the outcome
/// to hold, and report the commit's failure as this call's.
pub(super) async fn append(
    txn: &mut impl StoreTxn,
    request: &AppendRequest,
    written_at: OffsetDateTime,
) -> Result<AppendOutcome, StoreError> {
    // Names need no check: their types are proof they were checked where
    // they came in.
    let batch_ids = distinct_event_ids(&request.events);
    let reads = txn
        .append_reads(
            request
                .command
                .as_ref()
                .map(|command| command.command_id.as_str()),
            &request.stream,
            batch_ids.as_deref().unwrap_or_default(),
        )
        .await?;
    if let Some(record) = reads.command {
        let record = Box::new(record);
        return Err(match &request.command {
            Some(command) if record.is_retry_of(&request.stream, command) => {
                StoreError::CommandAlreadyExecuted { record }
            }
            _ => StoreError::CommandIdReused { record },
        });
    }
    if let Some(original) = earlier_append(batch_ids?, reads.event_ids)? {
        return Ok(original);
    }
    let current = reads.stream_sequence;
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
        )
        .await?
    };
    let positions: Vec<u64> = events.iter().map(|event| event.position).collect();
    let rows = outbox::rows_for(request.raise, current + 1, &positions);
    if !rows.is_empty() {
        txn.insert_event_rows(&rows).await?;
    }
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
            fingerprint: Some(command.fingerprint),
        })
        .await?;
    }
    Ok(outcome)
}

/// Records a rejection unless the command id already has a record, and
/// returns the record that stands; fails with
/// [`StoreError::CommandIdReused`] when that record is of another command.
pub(super) async fn record_rejection(
    txn: &mut impl StoreTxn,
    stream: &StreamId,
    command: &CommandKey,
    message: &str,
) -> Result<CommandRecord, StoreError> {
    if let Some(existing) = txn.command_record(&command.command_id).await? {
        return if existing.is_retry_of(stream, command) {
            Ok(existing)
        } else {
            Err(StoreError::CommandIdReused {
                record: Box::new(existing),
            })
        };
    }
    let record = CommandRecord::Rejected {
        command_id: command.command_id.clone(),
        stream: stream.clone(),
        command_type: command.command_type.clone(),
        message: message.to_owned(),
        fingerprint: Some(command.fingerprint),
    };
    txn.insert_command(&record).await?;
    Ok(record)
}

/// The ids of a batch, in order; [`StoreError::EventIdReused`] when one of
/// them comes twice.
fn distinct_event_ids(events: &[NewEvent]) -> Result<Vec<Uuid>, StoreError> {
    let mut seen = HashSet::with_capacity(events.len());
    events
        .iter()
        .map(|event| {
            if seen.insert(event.event_id) {
                Ok(event.event_id)
            } else {
                Err(StoreError::EventIdReused {
                    event_id: event.event_id,
                })
            }
        })
        .collect()
}

/// Decides whether a batch with the (distinct) event ids `ids` retries an
/// earlier append, from where each id was `stored`.
///
/// `Ok(Some)` carries the earlier outcome: every id was appended before, in
/// this order, consecutively, to this stream. `Ok(None)` means no id was seen
/// before (an empty batch retries nothing). Anything in between is
/// [`StoreError::EventIdReused`].
fn earlier_append(
    ids: Vec<Uuid>,
    stored: Vec<Option<StoredEventId>>,
) -> Result<Option<AppendOutcome>, StoreError> {
    if stored.len() != ids.len() {
        return Err(StoreError::backend(format!(
            "the store answered {} lookups for {} event ids",
            stored.len(),
            ids.len()
        )));
    }
    let Some(first_reused) = ids
        .iter()
        .zip(&stored)
        .find_map(|(&event_id, found)| found.as_ref().map(|_| event_id))
    else {
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

/// A document of a change-feed kind would be read back as a row that
/// points at an event, which it does not: it is refused before anything is
/// written.
fn refuse_change_feed_documents(documents: &[Document]) -> Result<(), StoreError> {
    match documents
        .iter()
        .find(|document| document.kind.is_change_feed())
    {
        Some(document) => Err(StoreError::backend(format!(
            "document {} is a {} notification, which is a row of its event, never a document",
            document.id, document.kind
        ))),
        None => Ok(()),
    }
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

/// Runs the rules over a backend whose [`StoreTxn`] never waits, to
/// completion, on the calling thread.
///
/// Such a backend's primitives finish when first polled, so the rules do
/// too. Were one ever to wait, this returns an error instead of blocking (the
/// backend broke its own promise), and the backend rolls back as after any
/// error.
pub(super) fn run_ready<T>(
    rules: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match pin!(rules).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(StoreError::backend(
            "a store transaction that never waits was left waiting",
        )),
    }
}
