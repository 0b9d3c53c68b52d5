//! The local notification handlers as a destination of the outbox
//! ([`LocalHandlers`]): every notification to every handler whose
//! subscription matches it, many at once.
//!
//! A call's work is split into queues, one per (handler, stream): a queue
//! takes its notifications in outbox order, one at a time, each retried as
//! [`handler_retry`](super::HostConfig::handler_retry) says until its
//! handler takes it or it is given up as a dead letter, and only then the
//! next. Queues run concurrently, at most
//! [`handler_concurrency`](super::HostConfig::handler_concurrency) handler
//! runs at a time (each also holds a call slot of the runtime), so a slow
//! or failing handler holds back the later notifications of its stream for
//! itself, and nothing else. A notification's outcome is reported as soon
//! as every one of its handlers is done with it, so that the dispatcher's
//! checkpoint follows; a (handler, notification) that was handled is
//! recorded before that, and is not run again when the notification comes
//! again (the completion records, written a batch at a time).
//!
//! It must not decide what a handler run is (that is [`super::notify`]) nor
//! move checkpoints or keep dead letters (the dispatcher's).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use futures_util::future::join_all;
use tokio::sync::Semaphore;

use super::Inner;
use super::notify::{IncomingNotification, handler_name, run};
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
}

impl LocalHandlers {
    pub(super) fn new(host: Weak<Inner>) -> Self {
        LocalHandlers { host }
    }
}

/// One handler: a subscription of a component.
struct Handler<'a> {
    component: &'a Arc<LoadedComponent>,
    subscription: &'a SubscriptionRoute,
    /// What its completion records go by.
    name: String,
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

#[async_trait::async_trait]
impl NotificationSink for LocalHandlers {
    async fn deliver(
        &self,
        notifications: &[Notification],
        progress: &Progress,
    ) -> Vec<NotificationOutcome> {
        let Some(inner) = self.host.upgrade() else {
            // The host is shutting down: nothing is delivered, all stays.
            return Vec::new();
        };
        let routes = inner.registry.routes();
        let handlers: Vec<Handler<'_>> = routes
            .components()
            .flat_map(|component| {
                component
                    .subscriptions()
                    .iter()
                    .map(move |subscription| Handler {
                        component,
                        subscription,
                        name: handler_name(component, subscription),
                    })
            })
            .collect();

        // The queues, in the order of their first notification, so that
        // the earliest notifications get the first turns.
        let mut queues: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut queue_of: HashMap<(usize, Option<&StreamId>), usize> = HashMap::new();
        let mut tallies: Vec<Tally> = Vec::with_capacity(notifications.len());
        let mut incoming: Vec<Option<IncomingNotification>> =
            Vec::with_capacity(notifications.len());
        for (index, notification) in notifications.iter().enumerate() {
            let mut tally = Tally::default();
            for (handler, candidate) in handlers.iter().enumerate() {
                if !candidate
                    .subscription
                    .matches(notification.event_type(), notification.subject())
                {
                    continue;
                }
                tally.pending += 1;
                let key = (handler, notification.stream());
                let queue = *queue_of.entry(key).or_insert_with(|| {
                    queues.push((handler, Vec::new()));
                    queues.len() - 1
                });
                queues[queue].1.push(index);
            }
            incoming.push((tally.pending > 0).then(|| IncomingNotification::from(notification)));
            tallies.push(tally);
        }
        // Nobody here wants these: taken, at no cost.
        for (index, tally) in tallies.iter().enumerate() {
            if tally.pending == 0 {
                progress.report(index, outcome(notifications, index, tally));
            }
        }
        let done = tallies.iter().filter(|tally| tally.pending == 0).count();
        if done == notifications.len() {
            return tallies
                .iter()
                .enumerate()
                .map(|(index, tally)| outcome(notifications, index, tally))
                .collect();
        }

        let tallies = Mutex::new(tallies);
        let turns = Semaphore::new(inner.config.handler_concurrency.get());
        let completions = Completions::default();
        let drain = |(handler, queue): (usize, Vec<usize>)| {
            let handler = &handlers[handler];
            let (inner, incoming, tallies, turns, completions) =
                (&inner, &incoming, &tallies, &turns, &completions);
            async move {
                for index in queue {
                    let Some(notification) = &incoming[index] else {
                        continue;
                    };
                    let (error, attempts) =
                        handle(inner, handler, notification, turns, completions).await;
                    let mut tallies = tallies.lock().unwrap_or_else(|e| e.into_inner());
                    let tally = &mut tallies[index];
                    tally.pending -= 1;
                    tally.attempts = tally.attempts.max(attempts);
                    if let Some(error) = error {
                        tally.errors.push(format!("{}: {error}", handler.name));
                    }
                    if tally.pending == 0 {
                        progress.report(index, outcome(notifications, index, tally));
                    }
                }
            }
        };
        join_all(queues.into_iter().map(drain)).await;
        let tallies = tallies.into_inner().unwrap_or_else(|e| e.into_inner());
        tallies
            .iter()
            .enumerate()
            .map(|(index, tally)| outcome(notifications, index, tally))
            .collect()
    }
}

/// The outcome of a notification every handler is done with.
fn outcome(notifications: &[Notification], index: usize, tally: &Tally) -> NotificationOutcome {
    NotificationOutcome {
        id: notifications[index].id(),
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

/// Delivers `notification` to `handler` unless it handled it before,
/// retrying as the host's `handler_retry` says, each attempt in a turn of
/// `turns`; records the completion. Returns the last error if it gave up,
/// and the attempts.
async fn handle(
    inner: &Arc<Inner>,
    handler: &Handler<'_>,
    notification: &IncomingNotification,
    turns: &Semaphore,
    completions: &Completions,
) -> (Option<String>, u32) {
    // A record can only be there if the notification came before, in an
    // earlier call; failing to look, run it: at least once allows that.
    if let Ok(true) = inner.store.is_completed(&handler.name, &notification.id).await {
        return (None, 1);
    }
    let retry = &inner.config.handler_retry;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = {
            // Never closed, so never an error.
            let _turn = turns.acquire().await;
            run(inner, handler.component, handler.subscription, notification).await
        };
        let Some(error) = error else {
            completions
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

/// Completion records on their way to the store, written one batch at a
/// time: whatever was recorded while a write was under way goes in the
/// next, so that a completion per handler run does not cost a store write
/// per handler run.
#[derive(Default)]
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
        // Empty: the write before this one took it.
        super::notify::record(inner, batch).await;
    }
}
