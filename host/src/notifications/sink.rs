//! Where notifications go: the [`NotificationSink`] contract every
//! destination fulfils (an Event Grid topic, the local notification
//! handlers, a sink an embedding program supplies), and the per-notification
//! outcome the dispatcher acts on.
//!
//! A sink delivers and reports; it must not remember anything. Keeping
//! undelivered notifications, recording dead letters and moving checkpoints
//! are the dispatcher's ([`super::dispatch`]).

use std::fmt;

use uuid::Uuid;

use super::model::Notification;

/// A destination of notifications.
///
/// [`deliver`](Self::deliver) is called with notifications in outbox order
/// and retries what is worth retrying itself; whatever it reports as
/// [`DeliveryOutcome::GaveUp`] or [`DeliveryOutcome::NotAttempted`] is
/// offered again later, so a sink sees a notification at least once, and
/// possibly more often: it deduplicates by [`Notification::id`] if it must.
#[async_trait::async_trait]
pub trait NotificationSink: Send + Sync + fmt::Debug {
    /// Delivers `notifications` in order and says what became of each, one
    /// outcome per notification, in the same order.
    async fn deliver(&self, notifications: &[Notification]) -> Vec<NotificationOutcome>;
}

/// What became of one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The destination took it.
    Delivered,
    /// The destination refused it for good: it goes to the dead letters
    /// with the reason, and the notifications after it go on.
    DeadLettered {
        /// The HTTP status, when the destination answered with one.
        status: Option<u16>,
        /// Why: the response body (at most
        /// [`MAX_DEAD_LETTER_BODY`](super::eventgrid::MAX_DEAD_LETTER_BODY)
        /// bytes) or the handler's error.
        reason: String,
    },
    /// Every attempt failed in a way worth retrying: keep it and deliver it
    /// again later.
    GaveUp {
        /// The last failure: a status and body, or a transport error.
        last_error: String,
    },
    /// Not tried, because an earlier one of the same call gave up: keep it
    /// and deliver it again later.
    NotAttempted,
}

impl DeliveryOutcome {
    /// Why it was not delivered, as operators read it (`HTTP 400: …`, a
    /// handler's error, the last transport error); `None` when delivered
    /// or not attempted.
    pub fn reason(&self) -> Option<String> {
        match self {
            DeliveryOutcome::DeadLettered {
                status: Some(status),
                reason,
            } => Some(format!("HTTP {status}: {reason}")),
            DeliveryOutcome::DeadLettered {
                status: None,
                reason,
            } => Some(reason.clone()),
            DeliveryOutcome::GaveUp { last_error } => Some(last_error.clone()),
            DeliveryOutcome::Delivered | DeliveryOutcome::NotAttempted => None,
        }
    }
}

/// One notification's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationOutcome {
    /// The notification's id.
    pub id: Uuid,
    /// What became of it.
    pub outcome: DeliveryOutcome,
    /// How many deliveries carried it (more than 1: it was retried, or
    /// re-sent alone to isolate a refusal).
    pub attempts: u32,
    /// Whether it was sent without its payload (the 1 MB rule).
    pub payload_omitted: bool,
}
