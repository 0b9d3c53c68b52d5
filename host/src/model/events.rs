//! Events: what an append writes and a read returns, who caused them, and
//! what an append expects of its stream.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

use super::names::{EventType, NameError, StreamId};
use super::trace::{TraceParent, lenient};

/// Who and what caused an event; carried from a command to its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EventContext {
    /// Ties together everything that one original request caused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the command (or notification) that directly caused this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The user or system on whose behalf the command ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    /// Where the command came from (`http`, `cli`, a component name, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Free text for humans reading the stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commentary: Option<String>,
    /// Digest of the handler component version that produced the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler_version: Option<String>,
    /// The W3C `traceparent` of the span that produced the event, so that
    /// its notifications, sent later and perhaps by another host, continue
    /// its trace. Events stored before it existed have none; one that is
    /// not a `traceparent` reads as none. Guests never see it (the WIT
    /// `event-context` has no such field).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub traceparent: Option<TraceParent>,
}

/// An event to append. Its id is the idempotency key of the append.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewEvent {
    /// Unique across the store; appending it again is a no-op.
    pub event_id: Uuid,
    /// Its type, never one of the reserved names.
    pub event_type: EventType,
    /// A JSON document.
    pub payload: Box<RawValue>,
}

/// A fresh id for an event or a command: a UUID v7, which begins with the
/// time it was made.
///
/// The stores keep a unique index on event ids and command ids. Random ids
/// (v4) land on a random leaf of those indexes, so every append dirties
/// leaves of its own, which a commit then writes, syncs and checkpoints.
/// Ids that grow with time land at the indexes' right edge, where the
/// appends of a group commit share pages (BENCHMARKS.md, *Time-ordered
/// ids*, has what that did to figure 5).
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

impl NewEvent {
    /// An event with a fresh id ([`new_id`]), after validating its type name.
    pub fn new(event_type: impl Into<String>, payload: Box<RawValue>) -> Result<Self, NameError> {
        Ok(NewEvent::of(EventType::new(event_type)?, payload))
    }

    /// An event of a validated type, with a fresh id ([`new_id`]).
    pub fn of(event_type: EventType, payload: Box<RawValue>) -> Self {
        NewEvent {
            event_id: new_id(),
            event_type,
            payload,
        }
    }
}

/// An event as the store recorded it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedEvent {
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Unique across the store.
    pub event_id: Uuid,
    /// Its type.
    pub event_type: EventType,
    /// 1, 2, 3, ... within its stream, with no gaps.
    pub sequence: u64,
    /// Store-wide, increasing in commit order.
    pub position: u64,
    /// When the store wrote it (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub written_at: OffsetDateTime,
    /// A JSON document.
    pub payload: Box<RawValue>,
    /// Who and what caused it.
    pub context: EventContext,
}

/// What an append requires of the stream's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Expectation {
    /// No requirement.
    Any,
    /// The stream has no events yet.
    NoStream,
    /// The stream has at least one event.
    StreamExists,
    /// The stream's last event has exactly this sequence (0: no events).
    Exact(u64),
}

impl Expectation {
    /// Whether a stream whose last sequence is `current` meets it.
    pub fn is_met_by(self, current: u64) -> bool {
        match self {
            Expectation::Any => true,
            Expectation::NoStream => current == 0,
            Expectation::StreamExists => current > 0,
            Expectation::Exact(expected) => current == expected,
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expectation::Any => f.write_str("any sequence"),
            Expectation::NoStream => f.write_str("no stream"),
            Expectation::StreamExists => f.write_str("an existing stream"),
            Expectation::Exact(sequence) => write!(f, "sequence {sequence}"),
        }
    }
}
