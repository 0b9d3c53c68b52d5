//! What a handler sends out of its component: commands to other streams
//! and custom events to topics, with what became of them.
//!
//! Plain data, shared by the contexts that send
//! ([`NotificationContext`](crate::NotificationContext)) and by the calls
//! into the host that carry them; it must not call anything itself.

use serde::Serialize;

use crate::StreamId;

/// Why a command sent from a handler failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The target's rules refused it; retrying will not help.
    Rejected(String),
    /// The command is malformed or has no handler.
    Invalid(String),
    /// The component may not send that command.
    Denied(String),
    /// Anything else; a retry may succeed.
    Other(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Rejected(m) => write!(f, "rejected: {m}"),
            SendError::Invalid(m) => write!(f, "invalid: {m}"),
            SendError::Denied(m) => write!(f, "denied: {m}"),
            SendError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for SendError {}

/// What a sent command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// The command's id.
    pub command_id: String,
    /// How many events it appended.
    pub events_appended: u32,
    /// The stream's last sequence after it.
    pub stream_sequence: u64,
    /// True when the id had run before and nothing ran now.
    pub replayed: bool,
}

/// A custom event for a topic (see [`NotificationContext::publish`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomEvent {
    /// The event's id is derived from the topic and this key, so publishing
    /// the same key again is the same event to every receiver.
    pub key: String,
    /// `eventType` / `type`.
    pub event_type: String,
    /// `subject`.
    pub subject: String,
    /// `data`, JSON.
    pub data: Vec<u8>,
    /// `dataVersion`.
    pub data_version: String,
}

impl CustomEvent {
    /// An event with `data` serialized as JSON and data version `1.0`.
    pub fn new<T: Serialize>(
        key: impl Into<String>,
        event_type: impl Into<String>,
        subject: impl Into<String>,
        data: &T,
    ) -> serde_json::Result<Self> {
        Ok(CustomEvent {
            key: key.into(),
            event_type: event_type.into(),
            subject: subject.into(),
            data: serde_json::to_vec(data)?,
            data_version: "1.0".to_owned(),
        })
    }
}

/// Why publishing failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// The component may not publish to that topic.
    Denied(String),
    /// No such topic, or the event is malformed or too large.
    Invalid(String),
    /// Anything else; a retry may succeed.
    Other(String),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Denied(m) => write!(f, "denied: {m}"),
            PublishError::Invalid(m) => write!(f, "invalid: {m}"),
            PublishError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for PublishError {}

/// A command a handler sent, as a test context records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCommand {
    /// Its target.
    pub stream: StreamId,
    /// Its type.
    pub command_type: String,
    /// Its JSON payload.
    pub payload: Vec<u8>,
    /// Its idempotency key.
    pub command_id: Option<String>,
}
