//! One dispatch round of one destination: it claims the destination, reads
//! the outbox after its checkpoint, hands the notifications to the sink,
//! and moves the checkpoint in the store as the sink reports outcomes
//! ([`Progress`]): past the notifications from the first that are finished,
//! delivered or refused (recorded as dead letters first), one write at a
//! time, each write taking every report that came in during the one
//! before, so that the writes keep up with any rate. It never moves past a
//! notification the sink gave up on, which the next round offers again.
//!
//! A sink that takes [overlapping](NotificationSink::overlapping) calls is
//! fed on: while some of its notifications are still being delivered, the
//! round reads the rows added since and hands them over in a call of their
//! own, so that what holds up one notification (a slow handler, one being
//! retried) holds up the checkpoint, but not the delivery of those after
//! it. At most [`WINDOW`] notifications are in flight.
//!
//! It owns the reading of rows into notifications and the checkpoint's
//! movement within a round; it must not decide when rounds run (that is
//! [`super::follow`]) or how a destination is reached.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use time::OffsetDateTime;
use tracing::Instrument;
use uuid::Uuid;

use super::follow::Round;
use super::model::{Notification, NotificationKind, ProjectionCompleted, Published};
use super::sink::{DeliveryOutcome, NotificationOutcome, NotificationSink, Reports};
use crate::store::{DeadLetter, EventStore, OutboxEntry, OutboxRecord, StoreError};

/// How many rows one read takes at most.
const BATCH: usize = 512;

/// How many notifications an overlapping sink may have in flight.
const WINDOW: usize = 4 * BATCH;

/// How many finished notifications a long round keeps before it forgets
/// them.
const KEEP: usize = 4 * BATCH;

/// What a round did, for the destination's metrics.
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Notifications delivered.
    pub(super) published: u64,
    /// Deliveries repeated after a failure.
    pub(super) retried: u64,
    /// Dead letters written.
    pub(super) dead_lettered: u64,
}

/// Runs one round of the destination `name`, whose notifications go to
/// `sink` (see the [module docs](self)), adding what it did to `counts`.
pub(super) async fn run(
    store: &dyn EventStore,
    name: &str,
    sink: &dyn NotificationSink,
    counts: &mut Counts,
) -> Result<Round, StoreError> {
    let Some(mut claim) = store.claim(name).await? else {
        return Ok(Round::Idle);
    };
    let from = claim.next_position();
    // Before the read: rows added after it wake this round.
    let mut changes = store.outbox_changes();
    let records = store.read_outbox(from, BATCH).await?;
    if records.is_empty() {
        store.release(claim, from).await?;
        return Ok(Round::Idle);
    }
    let overlapping = sink.overlapping();
    let mut more = records.len() == BATCH;
    let mut ledger = Ledger::new(name, from);
    let mut reports = Reports::new();
    let mut calls = FuturesUnordered::new();
    let mut records = Some(records);
    loop {
        if let Some(read) = records.take()
            && let Some((offset, chunk)) = ledger.add(&read)
        {
            let progress = reports.progress(offset);
            let span = tracing::debug_span!(
                "outbox.dispatch",
                destination = name,
                notifications = chunk.len(),
            );
            // Filed under the first notification's trace, linked from the
            // others' (as an Event Grid post is).
            crate::telemetry::continue_batch(&span, chunk.iter().map(Notification::traceparent));
            calls.push(
                async move {
                    let outcomes = sink.deliver(&chunk, &progress).await;
                    (offset, chunk.len(), outcomes)
                }
                .instrument(span),
            );
        }
        if overlapping && more && ledger.in_flight() < WINDOW && !ledger.stuck {
            let read = store.read_outbox(ledger.cursor, BATCH).await?;
            more = read.len() == BATCH;
            if !read.is_empty() {
                records = Some(read);
                continue;
            }
        }
        if calls.is_empty() {
            break;
        }
        tokio::select! {
            Some((offset, given, outcomes)) = calls.next() => {
                // A sink that answered for fewer than it was given did
                // not deliver the rest.
                ledger.stuck |= outcomes.len() < given;
                for (index, outcome) in outcomes.into_iter().enumerate() {
                    ledger.record(offset + index, outcome, counts);
                }
            }
            Some(reported) = reports.next() => {
                for (index, outcome) in reported {
                    ledger.record(index, outcome, counts);
                }
            }
            Ok(()) = changes.changed(), if overlapping => more = true,
        }
        let next = ledger.next();
        if next > claim.next_position() {
            write_dead_letters(store, ledger.due(next), counts).await?;
            if !store.advance(&mut claim, next).await? {
                // Another dispatcher goes on from the checkpoint moved last.
                return Ok(Round::Idle);
            }
        }
        reports.passed(ledger.finished);
    }
    let next = ledger.next();
    write_dead_letters(store, ledger.due(next), counts).await?;
    store.release(claim, next).await?;
    Ok(if next < ledger.cursor {
        Round::Stalled
    } else {
        Round::Progress
    })
}

/// Records dead letters, before the checkpoint moves past them: a crash
/// in between delivers them again, and they are dead-lettered again.
async fn write_dead_letters(
    store: &dyn EventStore,
    dead: Vec<DeadLetter>,
    counts: &mut Counts,
) -> Result<(), StoreError> {
    if dead.is_empty() {
        return Ok(());
    }
    for letter in &dead {
        tracing::warn!(
            destination = letter.destination,
            notification = %letter.notification_id,
            "a notification was dead-lettered: {}",
            letter.reason
        );
    }
    let count = dead.len() as u64;
    store.add_dead_letters(dead).await?;
    counts.dead_lettered += count;
    Ok(())
}

/// What a round knows of the notifications it read, by their index among
/// the round's: their outcomes as the sink reports them, how many of them
/// from the first are finished (delivered or dead-lettered), and the dead
/// letters not written yet. It forgets the finished ones as it goes.
struct Ledger<'a> {
    destination: &'a str,
    /// The index of the first notification kept.
    base: usize,
    /// The outbox position of each notification kept.
    positions: VecDeque<u64>,
    outcomes: VecDeque<Option<NotificationOutcome>>,
    /// The calls' notifications, each with the index of its first.
    chunks: VecDeque<(usize, Arc<[Notification]>)>,
    /// The notifications from the first that are finished.
    finished: usize,
    /// Dead letters not written yet, the unreadable rows' among them.
    dead: Vec<DeadLetter>,
    /// The position after the last row read.
    cursor: u64,
    /// A notification cannot be finished in this round: the sink gave up
    /// on it, or did not answer for it.
    stuck: bool,
}

impl<'a> Ledger<'a> {
    fn new(destination: &'a str, from: u64) -> Ledger<'a> {
        Ledger {
            destination,
            base: 0,
            positions: VecDeque::new(),
            outcomes: VecDeque::new(),
            chunks: VecDeque::new(),
            finished: 0,
            dead: Vec::new(),
            cursor: from,
            stuck: false,
        }
    }

    /// The notifications read and not finished.
    fn in_flight(&self) -> usize {
        self.base + self.outcomes.len() - self.finished
    }

    /// Takes rows read after the last ones: the notifications for the
    /// sink, with the index of the first, if any.
    fn add(&mut self, records: &[OutboxRecord]) -> Option<(usize, Arc<[Notification]>)> {
        let offset = self.base + self.outcomes.len();
        let mut notifications = Vec::with_capacity(records.len());
        for record in records {
            self.cursor = record.position + 1;
            if !for_destination(record, self.destination) {
                continue;
            }
            match notification_of(record) {
                Ok(notification) => {
                    self.positions.push_back(record.position);
                    self.outcomes.push_back(None);
                    notifications.push(notification);
                }
                Err(reason) => {
                    self.dead
                        .push(dead_letter(self.destination, record.position, None, reason));
                }
            }
        }
        if notifications.is_empty() {
            return None;
        }
        let chunk: Arc<[Notification]> = notifications.into();
        self.chunks.push_back((offset, Arc::clone(&chunk)));
        Some((offset, chunk))
    }

    /// Takes the outcome of notification `index`; the first word on each
    /// is the one that counts.
    fn record(&mut self, index: usize, outcome: NotificationOutcome, counts: &mut Counts) {
        let Some(kept) = index.checked_sub(self.base) else {
            return;
        };
        if !matches!(self.outcomes.get(kept), Some(None)) {
            return;
        }
        counts.retried += u64::from(outcome.attempts.saturating_sub(1));
        match &outcome.outcome {
            DeliveryOutcome::Delivered => counts.published += 1,
            refused @ DeliveryOutcome::DeadLettered { .. } => {
                let position = self.positions[kept];
                let mut letter = dead_letter(
                    self.destination,
                    position,
                    self.notification(index),
                    refused.reason().unwrap_or_default(),
                );
                letter.attempts = outcome.attempts;
                self.dead.push(letter);
            }
            DeliveryOutcome::GaveUp { .. } | DeliveryOutcome::NotAttempted => self.stuck = true,
        }
        self.outcomes[kept] = Some(outcome);
        while let Some(Some(outcome)) = self.outcomes.get(self.finished - self.base)
            && matches!(
                outcome.outcome,
                DeliveryOutcome::Delivered | DeliveryOutcome::DeadLettered { .. }
            )
        {
            self.finished += 1;
        }
        self.forget();
    }

    /// Drops what is kept of finished notifications, past [`KEEP`] of them.
    fn forget(&mut self) {
        let done = self.finished - self.base;
        if done <= KEEP {
            return;
        }
        self.positions.drain(..done);
        self.outcomes.drain(..done);
        self.base = self.finished;
        while let Some((start, chunk)) = self.chunks.front()
            && start + chunk.len() <= self.base
        {
            self.chunks.pop_front();
        }
    }

    /// Notification `index`, if kept.
    fn notification(&self, index: usize) -> Option<&Notification> {
        let after = self.chunks.partition_point(|(start, _)| *start <= index);
        let (start, chunk) = self.chunks.get(after.checked_sub(1)?)?;
        chunk.get(index - start)
    }

    /// Where the checkpoint may go: to the first notification not finished
    /// (one the sink gave up on, did not try, or is still delivering), or
    /// past the rows read when all are.
    fn next(&self) -> u64 {
        self.positions
            .get(self.finished - self.base)
            .copied()
            .unwrap_or(self.cursor)
    }

    /// The dead letters the checkpoint may not pass before they are
    /// written, taken out of the ledger.
    fn due(&mut self, next: u64) -> Vec<DeadLetter> {
        let (due, later) = std::mem::take(&mut self.dead)
            .into_iter()
            .partition(|letter| letter.position < next);
        self.dead = later;
        due
    }
}

/// The notification an outbox row announces, or why it cannot be sent.
pub(super) fn notification_of(record: &OutboxRecord) -> Result<Notification, String> {
    let built = match &record.entry {
        OutboxEntry::NewEntity(event) => Notification::new_entity(event),
        OutboxEntry::EventAppended(event) => Notification::event_appended(event),
        OutboxEntry::Document(document) => match document.kind {
            NotificationKind::ProjectionCompleted => {
                let completed: ProjectionCompleted = serde_json::from_str(document.body.get())
                    .map_err(|error| {
                        format!(
                            "outbox row {} is not a projection result: {error}",
                            record.position
                        )
                    })?;
                Notification::projection_completed(completed)
            }
            NotificationKind::Published => {
                let published: Published =
                    serde_json::from_str(document.body.get()).map_err(|error| {
                        format!(
                            "outbox row {} is not a published event: {error}",
                            record.position
                        )
                    })?;
                Notification::published(published)
            }
            // The store writes these as rows of their events, never as
            // documents.
            NotificationKind::NewEntity | NotificationKind::EventAppended => {
                return Err(format!(
                    "outbox row {} holds a {:?} document, which this host cannot send",
                    record.position,
                    document.kind.as_str()
                ));
            }
        },
        OutboxEntry::Unknown { kind } => {
            return Err(format!(
                "outbox row {} is of kind {kind:?}, which this host does not know",
                record.position
            ));
        }
    };
    built.map_err(|error| format!("outbox row {}: {error}", record.position))
}

/// Whether `record` goes to `destination`: a document for one topic goes
/// to that topic only, everything else everywhere.
fn for_destination(record: &OutboxRecord, destination: &str) -> bool {
    match &record.entry {
        OutboxEntry::Document(document) => document
            .topic
            .as_ref()
            .is_none_or(|topic| topic == destination),
        _ => true,
    }
}

/// A dead letter of `destination` for the row at `position`.
pub(super) fn dead_letter(
    destination: &str,
    position: u64,
    notification: Option<&Notification>,
    reason: String,
) -> DeadLetter {
    DeadLetter {
        destination: destination.to_owned(),
        // A row that is no notification still needs an id of its own.
        notification_id: notification.map_or(Uuid::from_u64_pair(0, position), Notification::id),
        position,
        event_type: notification.map_or_else(String::new, |n| n.event_type().to_owned()),
        subject: notification.map_or_else(String::new, |n| n.subject().to_owned()),
        reason,
        attempts: 1,
        dead_at: OffsetDateTime::now_utc(),
    }
}
