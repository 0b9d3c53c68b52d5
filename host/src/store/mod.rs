//! Event storage: the [`EventStore`] contract and its backends.
//!
//! A store appends batches of events atomically under an [`Expectation`],
//! numbers them without gaps, deduplicates by event id, remembers the outcome
//! of every command id, and serves reads by stream, by entity type and by
//! store-wide position. Beside the events it keeps the transactional outbox
//! ([`Outbox`]): the notification rows an append raises, written in its
//! transaction, with the dispatchers' checkpoints, dead letters and handler
//! completion records. It knows nothing about wasm, handlers, HTTP or the
//! wire form of a notification, and it never decides what to append or
//! raise: the host hands it finished batches.

#[cfg(test)]
mod conformance;
mod memory;
mod outbox;
mod postgres;
mod rules;
mod sql;
mod sqlite;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

pub use memory::MemoryStore;
pub use outbox::{Claim, DeadLetter, Document, Outbox, OutboxEntry, OutboxRecord, Pruned};
#[cfg(any(test, feature = "test-util"))]
pub use postgres::testing as postgres_testing;
pub use postgres::{PostgresConfig, PostgresStore};
pub use sqlite::{SqliteConfig, SqliteStore};

use crate::model::{
    CommandId, CommandType, Domain, EntityType, EventContext, EventType, Expectation, KindSet,
    NameError, NewEvent, RecordedEvent, StreamId,
};

/// A batch of events for one stream, appended all or nothing.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// Where the events go.
    pub stream: StreamId,
    /// What the stream's current sequence must be for the append to happen.
    pub expectation: Expectation,
    /// The events, in order. May be empty (then only the command id, if any,
    /// is recorded).
    pub events: Vec<NewEvent>,
    /// Context stored with every event of the batch.
    pub context: EventContext,
    /// The command that produced the batch. Recorded in the same transaction,
    /// so that [`EventStore::command_record`] can replay the outcome.
    pub command: Option<CommandKey>,
    /// The kinds of notification the stream raises: the store writes the
    /// outbox rows of the change-feed kinds among them in the same
    /// transaction.
    pub raise: KindSet,
}

/// Identifies one execution of a command, for idempotency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandKey {
    /// Caller-chosen or generated; unique across the store.
    pub command_id: CommandId,
    /// The command's type, so that a reused id for a different command
    /// can be told apart from a retry.
    pub command_type: CommandType,
    /// What the command was: its type, stream and payload
    /// ([`Fingerprint::of`]). Recorded with the outcome, so that a retry
    /// (the same id for the same command) replays it and the same id for
    /// anything else is refused.
    pub fingerprint: Fingerprint,
}

/// A digest of what a command was, kept with its record: SHA-256 over its
/// type, stream and payload bytes as received.
///
/// SHA-256, because a record lives for months and through upgrades of the
/// host, so the digest must never change with a version, a platform or a
/// process (std's `Hash` may), and because two different commands must
/// never share one, or the second would be answered with the first's
/// outcome: not even a client that crafts payloads can find two. It costs
/// about as much as copying the payload a few times, little next to a
/// command's store round trip.
///
/// The payload's bytes as received, not a canonical form of its JSON: a
/// retry sends the same request again, so the same bytes; canonical JSON
/// would cost a parse and a write on every command, and would call "the
/// same" payloads that a handler can tell apart (key order and number
/// formats reach the guest as sent). A client that re-encodes a payload
/// differently under the same key is refused, which is the safe side.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a command of `command_type` to `stream` with
    /// `payload`, the bytes of its JSON as received.
    pub fn of(command_type: &CommandType, stream: &StreamId, payload: &[u8]) -> Fingerprint {
        let mut digest = Sha256::new();
        // Each part with its length first, so that no two different
        // commands' parts run together into the same bytes; the first
        // names this way of digesting, should another ever be needed.
        for part in [
            b"cqrs-wasi command fingerprint v1".as_slice(),
            command_type.as_str().as_bytes(),
            stream.domain().as_str().as_bytes(),
            stream.entity_type().as_str().as_bytes(),
            stream.instance_key().as_str().as_bytes(),
            payload,
        ] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
        Fingerprint(digest.finalize().into())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", hex::encode(self.0))
    }
}

/// Kept as lowercase hex (in the command records, which are JSON).
impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let mut bytes = [0; 32];
        hex::decode_to_slice(text.as_bytes(), &mut bytes).map_err(serde::de::Error::custom)?;
        Ok(Fingerprint(bytes))
    }
}

/// Where one appended event landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendedEvent {
    /// The event's id.
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: EventType,
    /// Its sequence within the stream.
    pub sequence: u64,
    /// Its store-wide position.
    pub position: u64,
    /// When the store wrote it (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub written_at: OffsetDateTime,
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendOutcome {
    /// The events of the batch, in order.
    pub events: Vec<AppendedEvent>,
    /// The stream's last sequence after the append.
    pub stream_sequence: u64,
}

/// What a store remembers about a command id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "kind"
)]
pub enum CommandRecord {
    /// The command ran and its events (maybe none) were appended.
    Appended {
        /// The command's id.
        command_id: CommandId,
        /// The stream the command addressed.
        stream: StreamId,
        /// The command's type.
        command_type: CommandType,
        /// What the append returned.
        outcome: AppendOutcome,
        /// The command's [`Fingerprint`]; `None` only in a record written
        /// by an earlier version of the host, which did not keep it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<Fingerprint>,
    },
    /// The command was refused by the domain; nothing was appended.
    Rejected {
        /// The command's id.
        command_id: CommandId,
        /// The stream the command addressed.
        stream: StreamId,
        /// The command's type.
        command_type: CommandType,
        /// The handler's message.
        message: String,
        /// The command's [`Fingerprint`]; `None` only in a record written
        /// by an earlier version of the host, which did not keep it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<Fingerprint>,
    },
}

impl CommandRecord {
    /// The recorded command's id.
    pub fn command_id(&self) -> &CommandId {
        match self {
            CommandRecord::Appended { command_id, .. }
            | CommandRecord::Rejected { command_id, .. } => command_id,
        }
    }

    /// The stream the recorded command addressed.
    pub fn stream(&self) -> &StreamId {
        match self {
            CommandRecord::Appended { stream, .. } | CommandRecord::Rejected { stream, .. } => {
                stream
            }
        }
    }

    /// The recorded command's type.
    pub fn command_type(&self) -> &CommandType {
        match self {
            CommandRecord::Appended { command_type, .. }
            | CommandRecord::Rejected { command_type, .. } => command_type,
        }
    }

    /// The recorded command's fingerprint; `None` in a record written by an
    /// earlier version of the host.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        match self {
            CommandRecord::Appended { fingerprint, .. }
            | CommandRecord::Rejected { fingerprint, .. } => *fingerprint,
        }
    }

    /// Whether `command`, addressed to `stream`, is the recorded command
    /// sent again, whose recorded outcome is then its answer: the same id
    /// (the caller looked the record up by it), type, stream and
    /// fingerprint. A record without a fingerprint, written before they were
    /// kept, is matched on type and stream alone, as it was then.
    pub fn is_retry_of(&self, stream: &StreamId, command: &CommandKey) -> bool {
        *self.command_id() == command.command_id
            && *self.command_type() == command.command_type
            && self.stream() == stream
            && self
                .fingerprint()
                .is_none_or(|recorded| recorded == command.fingerprint)
    }
}

/// One page of instance keys of an entity type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancePage {
    /// Instance keys in ascending byte order.
    pub instance_keys: Vec<String>,
    /// Pass back to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Why a store operation failed. A failed append wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The expectation was not met; nothing was written and no sequence
    /// number was consumed.
    #[error(
        "conflict on stream {stream}: expected {expected}, but the stream is at sequence {actual}"
    )]
    Conflict {
        /// The stream appended to.
        stream: StreamId,
        /// What the append expected.
        expected: Expectation,
        /// The stream's actual last sequence.
        actual: u64,
    },
    /// Some, but not all, of a batch's event ids were appended before, or
    /// they were appended to another stream: not a retry of that append.
    #[error("event id {event_id} was already appended by a different append")]
    EventIdReused {
        /// The first id of the batch that was seen before.
        event_id: Uuid,
    },
    /// The batch's command was already executed (the same id, type, stream
    /// and fingerprint): nothing was written, and the record says what the
    /// earlier execution did.
    #[error("command id {:?} was already executed", record.command_id())]
    CommandAlreadyExecuted {
        /// What the store recorded for the id.
        record: Box<CommandRecord>,
    },
    /// The command id is recorded for a different command (another type,
    /// stream or payload): nothing was written, and the record says what
    /// the id was first used for.
    #[error(
        "command id {:?} was already used for another command ({} on {})",
        record.command_id(),
        record.command_type(),
        record.stream()
    )]
    CommandIdReused {
        /// What the store recorded for the id.
        record: Box<CommandRecord>,
    },
    /// A name did not validate.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The store's schema was written by a newer host.
    #[error(
        "the store's schema is version {found}, but this host knows versions up to {supported}; upgrade the host"
    )]
    SchemaTooNew {
        /// The version found in the store.
        found: u32,
        /// The newest version this host can use.
        supported: u32,
    },
    /// The store cannot write or answer for now, for a reason that passes
    /// without a restart ([`Outage`]): the same request may succeed later.
    /// Its message says which, not the backend's own text (the source
    /// keeps that, for logs).
    #[error("the store is unavailable: {outage}")]
    Unavailable {
        /// Why.
        outage: Outage,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend failed (I/O, corruption, ...).
    #[error("storage failure: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why a store is [unavailable](StoreError::Unavailable) for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outage {
    /// The disk holding the store is full: nothing of the request was
    /// written. Writes succeed again once space is freed.
    DiskFull,
    /// The database server cannot be reached, or the connection to it was
    /// lost. A write in flight when it was lost may or may not have
    /// committed: a command sent again with the same id gets its recorded
    /// outcome if it did, and runs if it did not.
    Unreachable,
    /// The store was closed: this host is shutting down.
    Closed,
}

impl fmt::Display for Outage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outage::DiskFull => "its disk is full; nothing was written, try again once space is freed",
            Outage::Unreachable => {
                "the database server cannot be reached; try again later, with the same Idempotency-Key for a command"
            }
            Outage::Closed => "the host is shutting down",
        })
    }
}

impl StoreError {
    /// Wraps a backend's own error.
    pub fn backend(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Backend(error.into())
    }

    /// The store is unavailable for now, for `outage`, as `source` says.
    pub fn unavailable(
        outage: Outage,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Unavailable {
            outage,
            source: source.into(),
        }
    }
}

/// The event store contract every backend fulfils.
///
/// All methods are safe to call concurrently. Implementations must make every
/// acknowledged append durable to the degree their kind promises (SQLite:
/// fsynced before `append` returns).
#[async_trait::async_trait]
pub trait EventStore: Outbox + fmt::Debug {
    /// Appends a batch atomically.
    ///
    /// - Fails with [`StoreError::Conflict`] when `expectation` is not met.
    /// - When every event id of the batch was already appended, in the same
    ///   order to the same stream, returns that append's outcome and writes
    ///   nothing; when only some were, fails with
    ///   [`StoreError::EventIdReused`].
    /// - When `command` names an id already recorded (by an append or a
    ///   rejection), writes nothing and fails with
    ///   [`StoreError::CommandAlreadyExecuted`] carrying the record if the
    ///   record is of the same command ([`CommandRecord::is_retry_of`]), and
    ///   with [`StoreError::CommandIdReused`] if it is of another.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError>;

    /// Records that a command was refused, so that a retry with the same id
    /// gets the same answer. Returns the record that stands: the new one, or
    /// the one a concurrent execution of the same command recorded first.
    /// Fails with [`StoreError::CommandIdReused`], writing nothing, when the
    /// id is recorded for another command.
    async fn record_rejection(
        &self,
        stream: &StreamId,
        command: &CommandKey,
        message: &str,
    ) -> Result<CommandRecord, StoreError>;

    /// What was recorded for a command id, if anything.
    async fn command_record(
        &self,
        command_id: &CommandId,
    ) -> Result<Option<CommandRecord>, StoreError>;

    /// Events of `stream` with sequence `>= from`, at most `max_count`, in
    /// sequence order.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The last sequence of `stream`; 0 if it has no events.
    async fn stream_sequence(&self, stream: &StreamId) -> Result<u64, StoreError>;

    /// Instance keys of streams of `domain / entity_type` that have at least
    /// one event, ascending, starting after `cursor`.
    async fn list_instances(
        &self,
        domain: &Domain,
        entity_type: &EntityType,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage, StoreError>;

    /// Changes whenever events may have been appended (here or, for a shared
    /// store, by another host), so that whoever follows them by position
    /// waits instead of polling. Best effort: a follower still looks now and
    /// then. Outbox rows have their own signal, [`Outbox::outbox_changes`].
    fn event_changes(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Events of every stream with position `>= from`, at most `max_count`,
    /// in position order. A reader that resumes from the position after the
    /// last event it saw never misses one.
    async fn read_all(&self, from: u64, max_count: usize)
    -> Result<Vec<RecordedEvent>, StoreError>;

    /// Finishes the writes already handed to the store, leaves its files or
    /// connections in a clean state (SQLite: the log checkpointed into the
    /// database file, synced), and lets them go. Writes after it fail with
    /// [`Outage::Closed`]. For a host that is shutting down, once nothing
    /// writes any more; calling it twice is harmless. The default does
    /// nothing.
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
