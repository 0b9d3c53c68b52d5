//! Notification handlers: "when X happens, then do Y".
//!
//! A handler subscribes with Event Grid's filters, receives notifications
//! (at least once: the same notification may come again), and reacts by
//! sending commands through its [`NotificationContext`]. Deriving the
//! command id from the notification id makes a redelivery harmless.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{RecordedEvent, StoreError, StreamId, codec};

/// A notification as a handler receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Deterministic: a redelivery carries the same id.
    pub id: String,
    /// `{Domain}.{EntityType}.{EventType}`, `....NewEntity`, or
    /// `....Projection.{ProjectionType}`.
    pub event_type: String,
    /// `eventsourcing/{Domain as path}/{EntityType}/{...}/{InstanceKey}`.
    pub subject: String,
    /// The `data` object, JSON.
    pub data: Vec<u8>,
    /// When it happened, RFC 3339.
    pub time: String,
}

impl Notification {
    /// Reads the `data` object, or the fields of it a handler needs.
    pub fn data<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.data)
    }
}

/// What a handler subscribes to. Matching is case-insensitive, as in Event
/// Grid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Only these event types; empty: all.
    pub included_event_types: Vec<String>,
    /// Only subjects that begin with this.
    pub subject_begins_with: Option<String>,
    /// Only subjects that end with this.
    pub subject_ends_with: Option<String>,
}

impl Subscription {
    /// Notifications of these event types.
    pub fn event_types(types: &[&str]) -> Self {
        Subscription {
            included_event_types: types.iter().map(|t| (*t).to_owned()).collect(),
            ..Subscription::default()
        }
    }
}

/// Why a handler did not handle a notification; the host delivers it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError(pub String);

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError(error.to_string())
    }
}

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

/// Reacts to notifications.
pub trait NotificationHandler {
    /// Names the handler (its subscription) within the component.
    const NAME: &'static str;

    /// What it subscribes to.
    fn subscription() -> Subscription;

    /// Reacts to one notification. May be called more than once for the
    /// same notification.
    fn handle(notification: &Notification, ctx: &NotificationContext) -> Result<(), HandlerError>;
}

/// What a notification handler can do: send commands and read streams.
#[derive(Debug)]
pub struct NotificationContext {
    source: Source,
}

#[derive(Debug)]
enum Source {
    #[cfg(target_arch = "wasm32")]
    Host,
    /// Records what is sent, for native tests.
    Recorder(RefCell<Vec<SentCommand>>),
}

impl NotificationContext {
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn from_host() -> Self {
        NotificationContext {
            source: Source::Host,
        }
    }

    /// A context that records the commands sent, for testing handlers
    /// natively. Each send succeeds with a fresh outcome.
    pub fn recording() -> Self {
        NotificationContext {
            source: Source::Recorder(RefCell::default()),
        }
    }

    /// The commands sent so far through a recording context.
    pub fn sent(&self) -> Vec<SentCommand> {
        match &self.source {
            #[cfg(target_arch = "wasm32")]
            Source::Host => Vec::new(),
            Source::Recorder(sent) => sent.borrow().clone(),
        }
    }

    /// Sends `command` (a variant of a command enum) to `stream` and waits
    /// for its outcome. Pass an id derived from the notification's, so that
    /// a redelivery replays instead of running the command again.
    pub fn send<C: Serialize>(
        &self,
        stream: &StreamId,
        command: &C,
        command_id: Option<String>,
    ) -> Result<CommandOutcome, SendError> {
        let (command_type, payload) =
            codec::encode(command).map_err(|e| SendError::Invalid(e.to_string()))?;
        let sent = SentCommand {
            stream: stream.clone(),
            command_type,
            payload,
            command_id,
        };
        match &self.source {
            #[cfg(target_arch = "wasm32")]
            Source::Host => crate::guest::send(sent),
            Source::Recorder(log) => {
                let mut log = log.borrow_mut();
                log.push(sent);
                Ok(CommandOutcome {
                    command_id: format!("recorded-{}", log.len()),
                    events_appended: 1,
                    stream_sequence: 1,
                    replayed: false,
                })
            }
        }
    }

    /// Every event of `stream`, if the component is granted its domain. A
    /// recording context has no streams.
    #[cfg_attr(not(target_arch = "wasm32"), allow(unused_variables))]
    pub fn events_of(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>, StoreError> {
        match &self.source {
            #[cfg(target_arch = "wasm32")]
            Source::Host => crate::guest::read_all_of(stream),
            Source::Recorder(_) => Ok(Vec::new()),
        }
    }
}
