//! The dispatcher: drains the store's outbox to every destination, at least
//! once, in position order.
//!
//! Each [`Destination`] has its own checkpoint in the store and its own
//! task, which runs [rounds](super::round) one after another: a round
//! claims the destination (so one dispatcher drains it at a time, across
//! hosts too), hands what the outbox holds after the checkpoint to the
//! destination's [`NotificationSink`], and moves the checkpoint as the sink
//! reports, past what was delivered or dead-lettered, never past what it
//! gave up on. A crash anywhere therefore loses nothing, and delivers again
//! only what was in flight, with the same ids. Between rounds the task
//! waits for the store's signal that rows were added, looking again now and
//! then in case a signal was lost.
//!
//! It owns the destinations' tasks, the re-drive of dead letters, the
//! delivery metrics and the destinations' status. It must not decide what
//! a notification looks like (that is [`super::model`]) or how a
//! destination is reached.

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use uuid::Uuid;

use super::eventgrid::RetryPolicy;
use super::follow::{Followers, Round};
use super::round::{self, Counts, dead_letter, notification_of};
use super::sink::{DeliveryOutcome, NotificationSink, Progress};
use crate::store::{EventStore, StoreError};

/// One place the outbox is drained to.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Its name: the key of its checkpoint and dead letters. Must stay the
    /// same across restarts, or it starts over from the first row.
    pub name: String,
    /// Where notifications go.
    pub sink: Arc<dyn NotificationSink>,
    /// The pause after a round that could not deliver everything, by
    /// consecutive failed round.
    pub retry: RetryPolicy,
}

impl Destination {
    /// A destination with the default pauses between failed rounds.
    pub fn new(name: impl Into<String>, sink: Arc<dyn NotificationSink>) -> Destination {
        Destination {
            name: name.into(),
            sink,
            retry: RetryPolicy::default(),
        }
    }
}

/// Where a destination stands, for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationStatus {
    /// The destination's name.
    pub destination: String,
    /// The first outbox position it has not taken.
    pub next_position: u64,
    /// Rows written but not taken yet.
    pub lag: u64,
}

/// Why a dead letter could not be re-driven.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    /// No destination has that name.
    #[error("no destination is named {0:?}")]
    UnknownDestination(String),
    /// The destination holds no dead letter with that id.
    #[error("destination {destination:?} has no dead letter {id}")]
    NoSuchDeadLetter {
        /// The destination named.
        destination: String,
        /// The id named.
        id: Uuid,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DestinationLabel {
    destination: String,
}

/// Delivery counters, by destination.
#[derive(Debug, Default)]
struct Metrics {
    published: Family<DestinationLabel, Counter>,
    retried: Family<DestinationLabel, Counter>,
    dead_lettered: Family<DestinationLabel, Counter>,
    lag: Family<DestinationLabel, Gauge>,
}

/// Drains the outbox to its destinations. Its tasks stop when it is
/// dropped, or [stopped](Dispatcher::stop).
pub struct Dispatcher {
    store: Arc<dyn EventStore>,
    destinations: Vec<Destination>,
    metrics: Metrics,
    registry: Registry,
    followers: Followers,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("destinations", &self.destinations)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher of `store`'s outbox to `destinations` (names must be
    /// unique). Nothing runs until [`start`](Self::start).
    pub fn new(store: Arc<dyn EventStore>, destinations: Vec<Destination>) -> Dispatcher {
        let metrics = Metrics::default();
        let mut registry = Registry::with_prefix("cqrs_wasi_notifications");
        registry.register(
            "published",
            "Notifications delivered, by destination",
            metrics.published.clone(),
        );
        registry.register(
            "retried",
            "Deliveries repeated after a failure, by destination",
            metrics.retried.clone(),
        );
        registry.register(
            "dead_lettered",
            "Notifications refused for good and kept as dead letters, by destination",
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "outbox_lag",
            "Outbox rows a destination has not taken yet",
            metrics.lag.clone(),
        );
        Dispatcher {
            store,
            destinations,
            metrics,
            registry,
            followers: Followers::default(),
        }
    }

    /// Starts one task per destination on the current tokio runtime.
    pub fn start(self: &Arc<Self>) {
        for (index, destination) in self.destinations.iter().enumerate() {
            let retry = destination.retry.clone();
            self.followers.follow(
                format!("dispatch to {}", destination.name),
                Arc::downgrade(self),
                self.store.outbox_changes(),
                move |failed_rounds| retry.delay(failed_rounds, None),
                move |dispatcher: Arc<Dispatcher>| async move {
                    dispatcher.round(&dispatcher.destinations[index]).await
                },
            );
        }
    }

    /// Stops every destination's task: none starts another round, and one
    /// in a round finishes it if it can by `deadline`, or is abandoned
    /// with its checkpoint past what it had finished: what was in flight is
    /// delivered again after a restart. Returns how many rounds were
    /// abandoned.
    pub async fn stop(&self, deadline: tokio::time::Instant) -> usize {
        self.followers.stop(deadline).await
    }

    /// One round for `destination` (see [`round`](super::round)).
    async fn round(&self, destination: &Destination) -> Result<Round, StoreError> {
        let mut counts = Counts::default();
        let round = round::run(
            self.store.as_ref(),
            &destination.name,
            destination.sink.as_ref(),
            &mut counts,
        )
        .await;
        let label = DestinationLabel {
            destination: destination.name.clone(),
        };
        self.metrics
            .published
            .get_or_create(&label)
            .inc_by(counts.published);
        self.metrics
            .retried
            .get_or_create(&label)
            .inc_by(counts.retried);
        self.metrics
            .dead_lettered
            .get_or_create(&label)
            .inc_by(counts.dead_lettered);
        round
    }

    /// Where each destination stands.
    pub async fn status(&self) -> Result<Vec<DestinationStatus>, StoreError> {
        let head = self.store.outbox_head().await?;
        let checkpoints = self.store.checkpoints().await?;
        Ok(self
            .destinations
            .iter()
            .map(|destination| {
                let next_position = checkpoints
                    .iter()
                    .find(|(name, _)| *name == destination.name)
                    .map_or(1, |&(_, next)| next);
                DestinationStatus {
                    destination: destination.name.clone(),
                    next_position,
                    lag: (head + 1).saturating_sub(next_position),
                }
            })
            .collect())
    }

    /// The delivery metrics in the Prometheus text format, the outbox lag
    /// measured now.
    pub async fn encode_metrics(&self, out: &mut String) -> Result<(), StoreError> {
        for status in self.status().await? {
            self.metrics
                .lag
                .get_or_create(&DestinationLabel {
                    destination: status.destination,
                })
                .set(i64::try_from(status.lag).unwrap_or(i64::MAX));
        }
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.registry);
        Ok(())
    }

    /// Delivers a dead letter again. Delivered, it is removed; refused
    /// again, it stays with the new reason; not delivered for now, it stays
    /// as it was. Returns what became of it.
    pub async fn redrive(
        &self,
        destination: &str,
        id: Uuid,
    ) -> Result<DeliveryOutcome, RedriveError> {
        let target = self
            .destinations
            .iter()
            .find(|d| d.name == destination)
            .ok_or_else(|| RedriveError::UnknownDestination(destination.to_owned()))?;
        let letter = self
            .store
            .dead_letters()
            .await?
            .into_iter()
            .find(|letter| letter.destination == destination && letter.notification_id == id)
            .ok_or_else(|| RedriveError::NoSuchDeadLetter {
                destination: destination.to_owned(),
                id,
            })?;
        let record = self
            .store
            .read_outbox(letter.position, 1)
            .await?
            .into_iter()
            .find(|record| record.position == letter.position);
        let notification = match record.as_ref().map(notification_of) {
            Some(Ok(notification)) => notification,
            Some(Err(reason)) => {
                return Ok(DeliveryOutcome::DeadLettered {
                    status: None,
                    reason,
                });
            }
            None => {
                return Ok(DeliveryOutcome::DeadLettered {
                    status: None,
                    reason: format!("outbox row {} is gone", letter.position),
                });
            }
        };
        let label = DestinationLabel {
            destination: destination.to_owned(),
        };
        let outcome = target
            .sink
            .deliver(std::slice::from_ref(&notification), &Progress::untracked())
            .await
            .into_iter()
            .next()
            .map_or(DeliveryOutcome::NotAttempted, |o| o.outcome);
        match &outcome {
            DeliveryOutcome::Delivered => {
                self.metrics.published.get_or_create(&label).inc();
                self.store.remove_dead_letter(destination, id).await?;
                tracing::info!(destination, notification = %id, "a re-driven dead letter was delivered");
            }
            refused @ DeliveryOutcome::DeadLettered { .. } => {
                let mut again = dead_letter(
                    &target.name,
                    letter.position,
                    Some(&notification),
                    refused.reason().unwrap_or_default(),
                );
                again.attempts = letter.attempts + 1;
                self.store.add_dead_letters(vec![again]).await?;
            }
            DeliveryOutcome::GaveUp { .. } | DeliveryOutcome::NotAttempted => {}
        }
        Ok(outcome)
    }

    /// The destinations' names.
    pub fn destinations(&self) -> impl Iterator<Item = &str> {
        self.destinations.iter().map(|d| d.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::value::RawValue;

    use super::*;
    use crate::model::{EventContext, Expectation, KindSet, NewEvent, NotificationKind, StreamId};
    use crate::notifications::model::Notification;
    use crate::notifications::sink::NotificationOutcome;
    use crate::store::{AppendRequest, Outbox, SqliteConfig, SqliteStore};

    /// Takes every notification, and remembers their event types.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl NotificationSink for Recorder {
        async fn deliver(
            &self,
            notifications: &[Notification],
            _progress: &Progress,
        ) -> Vec<NotificationOutcome> {
            let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
            notifications
                .iter()
                .map(|notification| {
                    seen.push(notification.event_type().to_owned());
                    NotificationOutcome {
                        id: notification.id(),
                        outcome: DeliveryOutcome::Delivered,
                        attempts: 1,
                        payload_omitted: false,
                    }
                })
                .collect()
        }
    }

    async fn deposit(store: &SqliteStore, key: &str) {
        let request = AppendRequest {
            stream: StreamId::new("Bank", "Account", key).expect("a valid stream"),
            expectation: Expectation::Any,
            events: vec![
                NewEvent::new(
                    "MoneyDeposited",
                    RawValue::from_string(r#"{"amount":1}"#.to_owned()).expect("JSON"),
                )
                .expect("a valid event"),
            ],
            context: EventContext::default(),
            command: None,
            raise: [NotificationKind::EventAppended]
                .into_iter()
                .collect::<KindSet>(),
        };
        store.append(request).await.expect("the append");
    }

    /// A row this host cannot read (a newer host wrote a kind it does not
    /// know) is a poisoned notification like any other: dead-lettered with
    /// the reason, and the rows after it are delivered.
    #[tokio::test]
    async fn a_row_of_an_unknown_kind_is_dead_lettered_and_blocks_nothing() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("events.db");
        let store = Arc::new(SqliteStore::open(&path, SqliteConfig::default()).expect("a store"));
        deposit(&store, "a").await;
        rusqlite::Connection::open(&path)
            .and_then(|newer_host| {
                newer_host.execute(
                    "INSERT INTO outbox (kind, notification_id, body) \
                     VALUES ('ClassificationChanged', '8c5b0d4e-6f35-4c0b-9d24-2f4c1c2b7f10', '{}')",
                    [],
                )
            })
            .expect("a row written by another host");
        deposit(&store, "b").await;

        let recorder = Arc::new(Recorder::default());
        let destination = Destination::new("topic", recorder.clone());
        let dispatcher = Dispatcher::new(store.clone(), vec![destination.clone()]);
        assert!(matches!(
            dispatcher.round(&destination).await,
            Ok(Round::Progress)
        ));

        let delivered = recorder.0.lock().expect("not poisoned").clone();
        assert_eq!(
            delivered,
            ["Bank.Account.MoneyDeposited", "Bank.Account.MoneyDeposited"]
        );
        let letters = store.dead_letters().await.expect("dead letters");
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].position, 2);
        assert!(
            letters[0].reason.contains("\"ClassificationChanged\""),
            "{}",
            letters[0].reason
        );
        assert_eq!(
            store.checkpoints().await.expect("checkpoints"),
            [("topic".to_owned(), 4)]
        );
    }

    /// Reports each notification, and before going on looks at the
    /// checkpoint in the store.
    #[derive(Debug)]
    struct Watcher {
        store: Arc<SqliteStore>,
        seen: Mutex<Vec<Vec<(String, u64)>>>,
    }

    #[async_trait::async_trait]
    impl NotificationSink for Watcher {
        async fn deliver(
            &self,
            notifications: &[Notification],
            progress: &Progress,
        ) -> Vec<NotificationOutcome> {
            let mut outcomes = Vec::new();
            for (index, notification) in notifications.iter().enumerate() {
                let outcome = NotificationOutcome {
                    id: notification.id(),
                    outcome: DeliveryOutcome::Delivered,
                    attempts: 1,
                    payload_omitted: false,
                };
                progress.report(index, outcome.clone());
                outcomes.push(outcome);
                assert!(progress.passed(index + 1).await, "the checkpoint moves");
                let checkpoints = self.store.checkpoints().await.expect("checkpoints");
                self.seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(checkpoints);
            }
            outcomes
        }
    }

    /// The checkpoint is in the store past each notification the sink
    /// reports, before its call returns: a crash then would not deliver
    /// it again.
    #[tokio::test]
    async fn the_checkpoint_moves_past_each_report_before_the_call_returns() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(
            SqliteStore::open(dir.path().join("events.db"), SqliteConfig::default())
                .expect("a store"),
        );
        for key in ["a", "b", "c"] {
            deposit(&store, key).await;
        }
        let watcher = Arc::new(Watcher {
            store: store.clone(),
            seen: Mutex::default(),
        });
        let destination = Destination::new("topic", watcher.clone());
        let dispatcher = Dispatcher::new(store.clone(), vec![destination.clone()]);
        assert!(matches!(
            dispatcher.round(&destination).await,
            Ok(Round::Progress)
        ));
        let seen = watcher.seen.lock().expect("not poisoned").clone();
        let topic = |next| vec![("topic".to_owned(), next)];
        assert_eq!(seen, [topic(2), topic(3), topic(4)]);
    }
}
