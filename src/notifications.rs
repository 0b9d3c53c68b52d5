//! Notification handlers: "when X happens, then do Y".
//!
//! A handler subscribes with Event Grid's filters, receives notifications
//! (at least once: the same notification may come again), and reacts by
//! sending commands, or publishing custom events to a topic, through its
//! [`NotificationContext`]. Deriving the command id (or the event key) from
//! the notification id makes a redelivery harmless.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::outbound::{CommandOutcome, CustomEvent, PublishError, SendError, SentCommand};
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
    /// Records what is sent and published, for native tests.
    Recorder {
        sent: RefCell<Vec<SentCommand>>,
        published: RefCell<Vec<(String, CustomEvent)>>,
    },
}

impl NotificationContext {
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn from_host() -> Self {
        NotificationContext {
            source: Source::Host,
        }
    }

    /// A context that records the commands sent and the events published,
    /// for testing handlers natively. Each succeeds.
    pub fn recording() -> Self {
        NotificationContext {
            source: Source::Recorder {
                sent: RefCell::default(),
                published: RefCell::default(),
            },
        }
    }

    /// The commands sent so far through a recording context.
    pub fn sent(&self) -> Vec<SentCommand> {
        match &self.source {
            #[cfg(target_arch = "wasm32")]
            Source::Host => Vec::new(),
            Source::Recorder { sent, .. } => sent.borrow().clone(),
        }
    }

    /// The events published so far through a recording context, with their
    /// topics.
    pub fn published(&self) -> Vec<(String, CustomEvent)> {
        match &self.source {
            #[cfg(target_arch = "wasm32")]
            Source::Host => Vec::new(),
            Source::Recorder { published, .. } => published.borrow().clone(),
        }
    }

    /// Publishes `event` to the host's topic `topic` (which the component
    /// must be granted). The host keeps it in its outbox and delivers it at
    /// least once.
    pub fn publish(&self, topic: &str, event: CustomEvent) -> Result<(), PublishError> {
        match &self.source {
            #[cfg(target_arch = "wasm32")]
            Source::Host => crate::guest::imports::publish(topic, event),
            Source::Recorder { published, .. } => {
                published.borrow_mut().push((topic.to_owned(), event));
                Ok(())
            }
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
            Source::Host => crate::guest::imports::send(sent),
            Source::Recorder { sent: log, .. } => {
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
            Source::Host => crate::guest::imports::read_all_of(stream),
            Source::Recorder { .. } => Ok(Vec::new()),
        }
    }
}
