//! The transactional outbox every store keeps beside its events.
//!
//! An append writes one outbox row per change-feed notification it raises
//! (which kinds, the host decides: the [`KindSet`] of its request) in the
//! same transaction as its events, so a notification exists exactly when
//! the events it describes do. Rows the host produces later —
//! projection-completed notifications, events a handler publishes — are
//! [`Document`]s, added idempotently by their id.
//! Rows are read in position order, and positions follow commit order with
//! the same guarantee as [`EventStore::read_all`](super::EventStore::read_all):
//! a reader resuming after the last row it saw never misses one.
//!
//! Each destination that drains the outbox keeps its own checkpoint here,
//! taken through a [`Claim`] so that one destination is drained by one
//! dispatcher at a time (in PostgreSQL, by whichever host claims it with
//! `FOR UPDATE SKIP LOCKED`). Dead letters and the completion records of
//! local notification handlers live here too, so that they survive
//! restarts with the rows they refer to.
//!
//! Rows every destination has passed are removed by [`Outbox::prune_outbox`]
//! once they are older than a retention, with the completion records no
//! redelivery can need any more; the last row always stays, so that
//! positions keep growing and [`Outbox::outbox_head`] stays right. When to
//! prune, and below which position, is `crate::notifications::retention`'s
//! decision, not the store's.
//!
//! This module defines the contract and what the backends share. It does
//! not know what a notification looks like on the wire, where it is sent,
//! or when to retry: that is `crate::notifications`.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use tokio::sync::{OwnedMutexGuard, watch};
use uuid::Uuid;

use super::StoreError;
use crate::model::{KindSet, NotificationKind, RecordedEvent};

/// The rows an append of events at `positions` (first to last) writes for
/// the kinds its stream raises: each as its kind and the position of the
/// event it points at. A new entity's row comes before its first event's,
/// as [`NotificationKind::ALL`], the order of a set's kinds, has it.
pub(super) fn rows_for(
    raise: KindSet,
    first_sequence: u64,
    positions: &[u64],
) -> Vec<(NotificationKind, u64)> {
    let mut rows = Vec::with_capacity(positions.len() + 1);
    for kind in raise.iter() {
        match kind {
            NotificationKind::NewEntity => {
                if first_sequence == 1
                    && let Some(&first) = positions.first()
                {
                    rows.push((kind, first));
                }
            }
            NotificationKind::EventAppended => {
                rows.extend(positions.iter().map(|&position| (kind, position)));
            }
            // Documents, which the host adds once the append has committed.
            NotificationKind::ProjectionCompleted | NotificationKind::Published => {}
        }
    }
    rows
}

/// A notification the host wrote as a whole: the store keeps it as opaque
/// JSON and never writes the same id twice.
#[derive(Debug, Clone)]
pub struct Document {
    /// The notification's id; a second document with it is not added.
    pub id: Uuid,
    /// What it is, for its reader: a kind that is not part of the change
    /// feed ([`NotificationKind::is_change_feed`]), whose rows point at
    /// their events instead.
    pub kind: NotificationKind,
    /// The one topic it is for, or `None` for every destination.
    pub topic: Option<String>,
    /// Its content, in the form its reader wrote it.
    pub body: Arc<RawValue>,
}

/// What one outbox row announces.
#[derive(Debug, Clone)]
pub enum OutboxEntry {
    /// A stream was created by this, its first event.
    NewEntity(RecordedEvent),
    /// This event was appended.
    EventAppended(RecordedEvent),
    /// A notification the host wrote as a whole.
    Document(Document),
    /// A row of a kind this host does not know (written by a newer
    /// version, say): the store hands it on rather than stopping at it, so
    /// that a dispatcher can set it aside and go on with the rows after it.
    Unknown {
        /// The kind as stored.
        kind: String,
    },
}

/// One row of the outbox.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    /// Where it is in the outbox; grows in commit order.
    pub position: u64,
    /// What it announces.
    pub entry: OutboxEntry,
}

/// A notification a destination refused for good (or an operator must look
/// at): kept until it is re-driven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The destination that refused it.
    pub destination: String,
    /// The notification's id.
    pub notification_id: Uuid,
    /// Its outbox row.
    pub position: u64,
    /// Its `eventType`, for the operator.
    pub event_type: String,
    /// Its `subject`, for the operator.
    pub subject: String,
    /// Why: the status and response body, or the handler's error.
    pub reason: String,
    /// How many deliveries were tried.
    pub attempts: u32,
    /// When it was dead-lettered (the last time, if re-driven and refused again).
    #[serde(with = "time::serde::rfc3339")]
    pub dead_at: OffsetDateTime,
}

/// What one [`Outbox::prune_outbox`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Outbox rows.
    pub rows: u64,
    /// Completion records of local notification handlers.
    pub completions: u64,
}

/// The right to drain one destination for one round, and where the round
/// stands. [`Outbox::advance`] moves the checkpoint during the round and
/// keeps the claim; give it back with [`Outbox::release`] to move the
/// checkpoint a last time; dropping it keeps the checkpoint where it was
/// last moved and frees the destination (for a later claim by the same
/// store at once; for another host's, as soon as the backend has ended the
/// round).
#[derive(Debug)]
pub struct Claim {
    destination: String,
    next: u64,
    hold: Box<dyn Hold>,
}

impl Claim {
    pub(super) fn new(destination: &str, next: u64, hold: impl Hold) -> Claim {
        Claim {
            destination: destination.to_owned(),
            next,
            hold: Box::new(hold),
        }
    }

    /// What keeps the claim exclusive, for the backend that made it to end
    /// the round with.
    pub(super) fn into_hold(self) -> Box<dyn Hold> {
        self.hold
    }

    /// What keeps the claim exclusive, for the backend that made it to move
    /// the checkpoint with during the round.
    pub(super) fn hold_mut(&mut self) -> &mut dyn Any {
        &mut *self.hold
    }

    /// The checkpoint was stored at `next`.
    pub(super) fn moved_to(&mut self, next: u64) {
        self.next = self.next.max(next);
    }

    /// The destination claimed.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// The first position the destination has not taken yet, as the
    /// checkpoint stands (moved by [`Outbox::advance`] during the round).
    pub fn next_position(&self) -> u64 {
        self.next
    }
}

/// What keeps a claim exclusive, supplied by the backend that made it: a
/// lock inside this process ([`LocalClaims`]), or a shared store's
/// transaction that holds the destination's checkpoint row. Held for its
/// `Drop`, which frees the destination; the backend takes it back, as its
/// own type, to end the round.
pub(super) trait Hold: Any + Send + Sync + fmt::Debug {}

/// A destination's lock in [`LocalClaims`].
impl Hold for OwnedMutexGuard<()> {}

/// The outbox part of the store contract.
///
/// An append writes its notification rows (of the change-feed kinds its
/// [`KindSet`] holds) in its own transaction; [`Document`]s are added once per id. Rows are read in
/// position order, and positions follow commit order as event positions do,
/// so a reader resuming after the last row it saw never misses one. Each
/// destination drains the outbox through a [`Claim`] (one dispatcher at a
/// time, across hosts for a shared store) and keeps its checkpoint here,
/// with its dead letters; local notification handlers keep their
/// completion records here.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync {
    /// Adds documents, skipping any whose id the outbox already holds;
    /// returns how many were added.
    async fn add_documents(&self, documents: Vec<Document>) -> Result<usize, StoreError>;

    /// Rows with position `>= from`, at most `max_count`, in position order.
    async fn read_outbox(
        &self,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<OutboxRecord>, StoreError>;

    /// The position of the last row; 0 when the outbox is empty.
    async fn outbox_head(&self) -> Result<u64, StoreError>;

    /// Changes whenever rows may have been added (here or, for a shared
    /// store, by another host), so that a dispatcher waits instead of
    /// polling. Best effort: a dispatcher still looks now and then.
    fn outbox_changes(&self) -> watch::Receiver<u64>;

    /// Claims `destination` for one round, or `None` when another
    /// dispatcher holds it.
    async fn claim(&self, destination: &str) -> Result<Option<Claim>, StoreError>;

    /// Moves the claimed destination's checkpoint to `next` (it never moves
    /// back) for good, in the middle of a round, so that a crash later in
    /// the round does not deliver again what came before `next`.
    ///
    /// Returns whether the claim still holds. A shared store may lose it in
    /// between (PostgreSQL commits the move, which ends the transaction
    /// that held the row, and takes the row again): the checkpoint is
    /// moved all the same, but the round must end there, dropping the
    /// claim, since another dispatcher may have gone on from it.
    async fn advance(&self, claim: &mut Claim, next: u64) -> Result<bool, StoreError>;

    /// Ends a round: the destination's checkpoint becomes `next` (it never
    /// moves back).
    async fn release(&self, claim: Claim, next: u64) -> Result<(), StoreError>;

    /// Every destination's checkpoint: the first position it has not taken.
    async fn checkpoints(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Gives `destination` a checkpoint at 1 if it has none yet, so that
    /// [`Outbox::checkpoints`] lists it (and pruning, on any host sharing
    /// the store, keeps its rows) before it has delivered anything.
    async fn register_destination(&self, destination: &str) -> Result<(), StoreError>;

    /// Removes the rows with a position below `below` that were added more
    /// than `retain` ago, except the last row of the outbox (so that
    /// positions keep growing) and rows a dead letter points at (so that it
    /// can be re-driven). Removes the completion records made more than
    /// `retain` ago and before every row still kept at or after `below`, or
    /// pointed at by a dead letter, was added: none of those can be
    /// delivered again to a handler that completed it. Rows are timed by
    /// the store's clock (the server's, for PostgreSQL).
    ///
    /// The caller picks `below`: at most the lowest checkpoint of the
    /// destinations that drain the outbox.
    async fn prune_outbox(&self, below: u64, retain: Duration) -> Result<Pruned, StoreError>;

    /// Records dead letters, replacing any of the same destination and id.
    async fn add_dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), StoreError>;

    /// Every dead letter, by destination and position.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError>;

    /// Removes a dead letter; says whether there was one.
    async fn remove_dead_letter(
        &self,
        destination: &str,
        notification_id: Uuid,
    ) -> Result<bool, StoreError>;

    /// Removes every dead letter of `destination`; returns how many.
    async fn purge_dead_letters(&self, destination: &str) -> Result<usize, StoreError>;

    /// Records that each `(handler, notification id)` was handled.
    async fn record_completions(
        &self,
        completions: Vec<(String, String)>,
    ) -> Result<(), StoreError>;

    /// Whether `handler` handled the notification `notification_id`.
    async fn is_completed(&self, handler: &str, notification_id: &str) -> Result<bool, StoreError>;
}

/// Claims for backends used by one process at a time: a lock per
/// destination.
#[derive(Debug, Default)]
pub(super) struct LocalClaims {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl LocalClaims {
    /// The destination's lock, unless another round holds it.
    pub(super) fn try_hold(&self, destination: &str) -> Option<OwnedMutexGuard<()>> {
        let lock = Arc::clone(
            self.locks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .entry(destination.to_owned())
                .or_default(),
        );
        lock.try_lock_owned().ok()
    }
}

/// The signals behind [`EventStore::event_changes`](super::EventStore::event_changes)
/// and [`Outbox::outbox_changes`]: kept apart, so that an append that raises
/// no notification does not wake dispatchers for nothing.
#[derive(Debug, Default)]
pub(super) struct Feeds {
    /// Events were appended: for projection propagation.
    pub(super) events: Changes,
    /// Outbox rows were added: for dispatchers.
    pub(super) outbox: Changes,
}

impl Feeds {
    /// Wakes the followers of what a committed write added.
    pub(super) fn bump(&self, added: Added) {
        if added.events {
            self.events.bump();
        }
        if added.outbox_rows {
            self.outbox.bump();
        }
    }
}

/// What a write adds (or may add) that someone follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Added {
    /// Events.
    pub(super) events: bool,
    /// Outbox rows.
    pub(super) outbox_rows: bool,
}

/// One signal: every receiver wakes at each bump.
#[derive(Debug)]
pub(super) struct Changes(watch::Sender<u64>);

impl Default for Changes {
    fn default() -> Self {
        Changes(watch::channel(0).0)
    }
}

impl Changes {
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }

    /// Wakes every receiver.
    pub(super) fn bump(&self) {
        self.0.send_modify(|count| *count = count.wrapping_add(1));
    }
}
