//! The local notification handlers as a destination of the outbox
//! ([`LocalHandlers`]): every notification to every handler whose
//! subscription matches it, many at once.
//!
//! The work is kept in lanes, one per (handler, stream), each drained by a
//! task of its own while it holds work: a lane takes its notifications in
//! outbox order, one at a time, each retried as
//! [`handler_retry`](super::HostConfig::handler_retry) says until its
//! handler takes it or it is given up as a dead letter, and only then the
//! next. Lanes run concurrently, at most
//! [`handler_concurrency`](super::HostConfig::handler_concurrency) handler
//! runs at a time (each also holds a call slot of the runtime), and they
//! outlive the dispatcher's calls, which overlap: so a slow or failing
//! handler holds back the later notifications of its stream for itself,
//! and nothing else. A notification's outcome is reported as soon as every
//! one of its handlers is done with it, so that the dispatcher's checkpoint
//! follows. A (handler, notification) that was handled is recorded first
//! (the completion records, written a batch at a time), and is not run
//! again when the notification comes again.
//!
//! It must not decide what a handler run is (that is [`super::notify`]) nor
//! move checkpoints or keep dead letters (the dispatcher's).

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::{Semaphore, watch};

use super::Inner;
use super::notify::{IncomingNotification, handler_name, record, run};
use crate::model::StreamId;
use crate::notifications::{
    DeliveryOutcome, Notification, NotificationOutcome, NotificationSink, Progress,
};
use crate::runtime::{LoadedComponent, SubscriptionRoute};

/// The local notification handlers as a destination (see the
/// [module docs](self)).
#[derive(Debug)]
pub(super) struct LocalHandlers {
    host: Weak<Inner>,
    lanes: Arc<Lanes>,
}

impl LocalHandlers {
    /// The handlers of `host`, at most `concurrency` running at once.
    pub(super) fn new(host: Weak<Inner>, concurrency: NonZeroUsize) -> Self {
        LocalHandlers {
            lanes: Arc::new(Lanes {
                host: host.clone(),
                queues: Mutex::default(),
                turns: Semaphore::new(concurrency.get()),
                completions: Completions::default(),
            }),
            host,
        }
    }
}

/// One handler: a subscription of a component, as routed when the
/// notification was handed over.
struct Handler {
    component: Arc<LoadedComponent>,
    subscription: SubscriptionRoute,
    /// What its completion records go by.
    name: String,
}

/// What a lane is for: a handler, and the stream the notifications are
/// about (`None` for published custom events).
type LaneKey = (String, Option<StreamId>);

/// One notification for one handler, waiting in its lane.
struct Unit {
    call: Arc<Call>,
    index: usize,
    handler: Arc<Handler>,
}

/// The lanes of work and what they share.
#[derive(Debug)]
struct Lanes {
    host: Weak<Inner>,
    /// The waiting work of each lane that has a task draining it.
    queues: Mutex<HashMap<LaneKey, VecDeque<Unit>>>,
    /// Handler runs under way.
    turns: Semaphore,
    completions: Completions,
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unit")
            .field("index", &self.index)
            .field("handler", &self.handler.name)
            .finish_non_exhaustive()
    }
}

/// One call of the dispatcher: its notifications and where each stands.
struct Call {
    notifications: Vec<Option<IncomingNotification>>,
    ids: Vec<uuid::Uuid>,
    tallies: Mutex<Vec<Tally>>,
    progress: Progress,
    /// The notifications not finished yet.
    unfinished: watch::Sender<usize>,
}

/// Where one notification stands.
#[derive(Default)]
struct Tally {
    /// Its handlers not done with it yet.
    pending: usize,
    /// The errors of the handlers that gave up on it, `component/subscription: error`.
    errors: Vec<String>,
    /// The most attempts a handler took.
    attempts: u32,
}

impl Call {
    fn tallies(&self) -> MutexGuard<'_, Vec<Tally>> {
        self.tallies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The outcome of notification `index`, whose handlers are all done.
    fn outcome(&self, index: usize, tally: &Tally) -> NotificationOutcome {
        NotificationOutcome {
            id: self.ids[index],
            outcome: if tally.errors.is_empty() {
                DeliveryOutcome::Delivered
            } else {
                DeliveryOutcome::DeadLettered {
                    status: None,
                    reason: tally.errors.join("; "),
                }
            },
            attempts: tally.attempts.max(1),
            payload_omitted: false,
        }
    }

    /// `handler` is done with notification `index`: given up with `error`,
    /// or not.
    fn done(&self, index: usize, handler: &Handler, error: Option<String>, attempts: u32) {
        let mut tallies = self.tallies();
        let tally = &mut tallies[index];
        tally.pending -= 1;
        tally.attempts = tally.attempts.max(attempts);
        if let Some(error) = error {
            tally.errors.push(format!("{}: {error}", handler.name));
        }
        if tally.pending == 0 {
            self.progress.report(index, self.outcome(index, tally));
            self.unfinished.send_modify(|unfinished| *unfinished -= 1);
        }
    }
}

#[async_trait::async_trait]
impl NotificationSink for LocalHandlers {
    async fn deliver(
        &self,
        notifications: &[Notification],
        progress: &Progress,
    ) -> Vec<NotificationOutcome> {
        // Everything up to the wait runs at the call's first poll, so the
        // lanes take the calls' notifications in call order.
        let Some(inner) = self.host.upgrade() else {
            // The host is shutting down: nothing is delivered, all stays.
            return Vec::new();
        };
        let routes = inner.registry.routes();
        drop(inner);
        let handlers: Vec<Arc<Handler>> = routes
            .components()
            .flat_map(|component| {
                component.subscriptions().iter().map(|subscription| {
                    Arc::new(Handler {
                        component: Arc::clone(component),
                        subscription: subscription.clone(),
                        name: handler_name(component, subscription),
                    })
                })
            })
            .collect();
        let mut tallies = Vec::with_capacity(notifications.len());
        let mut units = Vec::new();
        let mut incoming = Vec::with_capacity(notifications.len());
        for (index, notification) in notifications.iter().enumerate() {
            let mut tally = Tally::default();
            for handler in &handlers {
                if handler
                    .subscription
                    .matches(notification.event_type(), notification.subject())
                {
                    tally.pending += 1;
                    units.push((index, Arc::clone(handler)));
                }
            }
            incoming.push((tally.pending > 0).then(|| IncomingNotification::from(notification)));
            tallies.push(tally);
        }
        let unfinished = tallies.iter().filter(|tally| tally.pending > 0).count();
        let call = Arc::new(Call {
            notifications: incoming,
            ids: notifications.iter().map(Notification::id).collect(),
            tallies: Mutex::new(tallies),
            progress: progress.clone(),
            unfinished: watch::Sender::new(unfinished),
        });
        // Nobody here wants these: taken, at no cost.
        for (index, tally) in call.tallies().iter().enumerate() {
            if tally.pending == 0 {
                progress.report(index, call.outcome(index, tally));
            }
        }
        for (index, handler) in units {
            let key = (handler.name.clone(), notifications[index].stream().cloned());
            self.lanes.enqueue(
                key,
                Unit {
                    call: Arc::clone(&call),
                    index,
                    handler,
                },
            );
        }

        let mut unfinished = call.unfinished.subscribe();
        // Cannot fail: `call` holds the sender.
        let _ = unfinished.wait_for(|&unfinished| unfinished == 0).await;
        let tallies = call.tallies();
        tallies
            .iter()
            .enumerate()
            .map(|(index, tally)| call.outcome(index, tally))
            .collect()
    }

    fn overlapping(&self) -> bool {
        true
    }
}

impl Lanes {
    fn queues(&self) -> MutexGuard<'_, HashMap<LaneKey, VecDeque<Unit>>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `unit` at the end of its lane, starting a task for the lane if
    /// it has none.
    fn enqueue(self: &Arc<Self>, key: LaneKey, unit: Unit) {
        let mut queues = self.queues();
        if let Some(queue) = queues.get_mut(&key) {
            queue.push_back(unit);
            return;
        }
        queues.insert(key.clone(), VecDeque::from([unit]));
        tokio::spawn(Arc::clone(self).drain(key));
    }

    /// Runs the lane's work in order until it has none, and then ends
    /// (under the lock, so that work enqueued later starts a new task).
    async fn drain(self: Arc<Self>, key: LaneKey) {
        loop {
            let unit = {
                let mut queues = self.queues();
                let next = queues.get_mut(&key).and_then(VecDeque::pop_front);
                if next.is_none() {
                    queues.remove(&key);
                }
                next
            };
            let Some(unit) = unit else {
                return;
            };
            let Some(inner) = self.host.upgrade() else {
                // The host is gone, and its dispatcher with it.
                self.queues().remove(&key);
                return;
            };
            let Some(notification) = &unit.call.notifications[unit.index] else {
                continue;
            };
            let (error, attempts) = self.handle(&inner, &unit.handler, notification).await;
            drop(inner);
            unit.call.done(unit.index, &unit.handler, error, attempts);
        }
    }

    /// Delivers `notification` to `handler` unless it handled it before,
    /// retrying as the host's `handler_retry` says, each attempt in a turn;
    /// records the completion. Returns the last error if it gave up, and
    /// the attempts.
    async fn handle(
        &self,
        inner: &Arc<Inner>,
        handler: &Handler,
        notification: &IncomingNotification,
    ) -> (Option<String>, u32) {
        // A record can only be there if the notification came before, in
        // an earlier round; failing to look, run it: at least once allows
        // that.
        if let Ok(true) = inner
            .store
            .is_completed(&handler.name, &notification.id)
            .await
        {
            return (None, 1);
        }
        let retry = &inner.config.handler_retry;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = {
                // Never closed, so never an error.
                let _turn = self.turns.acquire().await;
                run(
                    inner,
                    &handler.component,
                    &handler.subscription,
                    notification,
                )
                .await
            };
            let Some(error) = error else {
                self.completions
                    .record(inner, (handler.name.clone(), notification.id.clone()))
                    .await;
                return (None, attempts);
            };
            if attempts >= retry.max_attempts.get() {
                return (Some(error), attempts);
            }
            tokio::time::sleep(retry.delay(attempts, None)).await;
        }
    }
}

/// Completion records on their way to the store, written one batch at a
/// time: whatever was recorded while a write was under way goes in the
/// next, so that a completion per handler run does not cost a store write
/// per handler run.
#[derive(Debug, Default)]
struct Completions {
    pending: Mutex<Vec<(String, String)>>,
    writing: tokio::sync::Mutex<()>,
}

impl Completions {
    /// Records `completion`; returns once it is written (or failed to be,
    /// which is logged: the handler may then run again on a redelivery).
    async fn record(&self, inner: &Inner, completion: (String, String)) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(completion);
        let _writer = self.writing.lock().await;
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        // Empty when the write before this one took it.
        record(inner, batch).await;
    }
}
