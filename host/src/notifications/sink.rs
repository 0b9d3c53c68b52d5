//! Where notifications go: the [`NotificationSink`] contract every
//! destination fulfils (an Event Grid topic, the local notification
//! handlers, a sink an embedding program supplies), and the per-notification
//! outcome the dispatcher acts on.
//!
//! A sink delivers and reports, as it goes ([`Progress`]) and when it is
//! done; it must not remember anything. Keeping undelivered notifications,
//! recording dead letters and moving checkpoints are the dispatcher's
//! ([`super::dispatch`]).

use std::fmt;

use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::model::Notification;

/// A destination of notifications.
///
/// [`deliver`](Self::deliver) is called with notifications in outbox order
/// and retries what is worth retrying itself; whatever it reports as
/// [`DeliveryOutcome::GaveUp`] or [`DeliveryOutcome::NotAttempted`] is
/// offered again later, so a sink sees a notification at least once, and
/// possibly more often: it deduplicates by [`Notification::id`] if it must.
///
/// A sink that reports each outcome to its [`Progress`] as soon as it
/// knows it lets the dispatcher move the destination's checkpoint past it
/// before the call returns, so that a crash in the middle of a long call
/// delivers again only what was in flight. One that does not is correct
/// all the same: its answer counts when it returns.
#[async_trait::async_trait]
pub trait NotificationSink: Send + Sync + fmt::Debug {
    /// Delivers `notifications` in order and says what became of each, one
    /// outcome per notification, in the same order. Outcomes known earlier
    /// may be reported to `progress` first, each once and as the answer
    /// will give it.
    async fn deliver(
        &self,
        notifications: &[Notification],
        progress: &Progress,
    ) -> Vec<NotificationOutcome>;

    /// Whether the dispatcher may call [`deliver`](Self::deliver) again,
    /// with the notifications that follow, while earlier calls are still
    /// delivering, so that what holds up one notification does not hold up
    /// every later one. Such a sink keeps whatever order it promises
    /// across calls itself; it sees each call's first poll in call order.
    /// `false` (the default): one call at a time.
    fn overlapping(&self) -> bool {
        false
    }
}

/// Where a sink reports outcomes during one [`NotificationSink::deliver`]
/// call, as they become known, and learns how far the destination's
/// checkpoint has moved.
///
/// Cheap to clone, for a sink that reports from tasks of its own.
#[derive(Debug, Clone)]
pub struct Progress {
    reports: Option<mpsc::UnboundedSender<(usize, NotificationOutcome)>>,
    checkpoint: watch::Receiver<usize>,
    /// Where the call's notifications start among the round's.
    offset: usize,
}

impl Progress {
    /// A progress nobody follows (a call outside a dispatcher's round):
    /// reports go nowhere, and [`passed`](Self::passed) answers at once.
    pub fn untracked() -> Progress {
        Progress {
            reports: None,
            checkpoint: watch::Sender::new(usize::MAX).subscribe(),
            offset: 0,
        }
    }

    /// Reports the outcome of `notifications[index]`.
    pub fn report(&self, index: usize, outcome: NotificationOutcome) {
        if let Some(reports) = &self.reports {
            // Nobody listens any more when the round has ended early: the
            // call's answer is all that counts then.
            let _ = reports.send((self.offset + index, outcome));
        }
    }

    /// Waits until the destination's checkpoint is stored past the first
    /// `count` notifications of the call (every one of them reported, or
    /// this waits until the call ends). `false`: it will not be in this
    /// call (the store failed, or another dispatcher took the
    /// destination), so a sink that waits before sending more should send
    /// nothing more and answer.
    pub async fn passed(&self, count: usize) -> bool {
        let count = self.offset.saturating_add(count);
        let mut checkpoint = self.checkpoint.clone();
        checkpoint.wait_for(|&passed| passed >= count).await.is_ok()
    }
}

/// The dispatcher's end of the [`Progress`] of every call of a round: the
/// reports, by index among the round's notifications, and where it says
/// the checkpoint stands. Dropping it ends [`Progress::passed`]'s waits
/// with `false`.
#[derive(Debug)]
pub(super) struct Reports {
    sender: mpsc::UnboundedSender<(usize, NotificationOutcome)>,
    receiver: mpsc::UnboundedReceiver<(usize, NotificationOutcome)>,
    checkpoint: watch::Sender<usize>,
}

impl Reports {
    pub(super) fn new() -> Reports {
        let (sender, receiver) = mpsc::unbounded_channel();
        Reports {
            sender,
            receiver,
            checkpoint: watch::Sender::new(0),
        }
    }

    /// The progress of a call whose notifications start at `offset` among
    /// the round's.
    pub(super) fn progress(&self, offset: usize) -> Progress {
        Progress {
            reports: Some(self.sender.clone()),
            checkpoint: self.checkpoint.subscribe(),
            offset,
        }
    }

    /// Every report sent since the last call, waiting for at least one
    /// (forever, while this holds a sender).
    pub(super) async fn next(&mut self) -> Option<Vec<(usize, NotificationOutcome)>> {
        let first = self.receiver.recv().await?;
        let mut reports = vec![first];
        while let Ok(more) = self.receiver.try_recv() {
            reports.push(more);
        }
        Some(reports)
    }

    /// The checkpoint is stored past the round's first `count`
    /// notifications.
    pub(super) fn passed(&self, count: usize) {
        self.checkpoint.send_if_modified(|passed| {
            let moved = count > *passed;
            *passed = (*passed).max(count);
            moved
        });
    }
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
