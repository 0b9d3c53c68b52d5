//! The dispatcher: drains the store's outbox to every destination, at least
//! once, in position order.
//!
//! Each [`Destination`] has its own checkpoint in the store and its own task.
//! A round claims the destination (so one dispatcher drains it at a time,
//! across hosts too), reads the rows after its checkpoint, turns them into
//! [`Notification`]s, hands them to the destination's [`NotificationSink`],
//! records what was refused as dead letters, and moves the checkpoint past
//! everything that was delivered or dead-lettered — but never past a
//! notification the sink gave up on, which the next round offers again. A
//! crash anywhere therefore loses nothing and at worst delivers twice, with
//! the same ids. Between rounds the task waits for the store's signal that
//! rows were added, looking again now and then in case a signal was lost.
//!
//! It owns the checkpoints' movement, the dead letters and their re-drive,
//! and the delivery metrics. It must not decide what a notification looks
//! like (that is [`super::model`]) or how a destination is reached.

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::task::AbortHandle;
use tracing::Instrument;
use uuid::Uuid;

use super::eventgrid::RetryPolicy;
use super::follow::{Round, follow};
use super::model::{Notification, NotificationKind, ProjectionCompleted, Published};
use super::sink::{DeliveryOutcome, NotificationSink};
use crate::store::{DeadLetter, EventStore, OutboxEntry, OutboxRecord, StoreError};

/// How many rows one round takes at most.
const BATCH: usize = 512;

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
/// dropped.
pub struct Dispatcher {
    store: Arc<dyn EventStore>,
    destinations: Vec<Destination>,
    metrics: Metrics,
    registry: Registry,
    tasks: std::sync::Mutex<Vec<AbortHandle>>,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("destinations", &self.destinations)
            .finish_non_exhaustive()
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
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
            tasks: std::sync::Mutex::default(),
        }
    }

    /// Starts one task per destination on the current tokio runtime.
    pub fn start(self: &Arc<Self>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for (index, destination) in self.destinations.iter().enumerate() {
            let retry = destination.retry.clone();
            let task = follow(
                format!("dispatch to {}", destination.name),
                Arc::downgrade(self),
                self.store.outbox_changes(),
                move |failed_rounds| retry.delay(failed_rounds, None),
                move |dispatcher: Arc<Dispatcher>| async move {
                    dispatcher.round(&dispatcher.destinations[index]).await
                },
            );
            tasks.push(task.abort_handle());
        }
    }

    /// One round for `destination` (see the [module docs](self)).
    async fn round(&self, destination: &Destination) -> Result<Round, StoreError> {
        let Some(claim) = self.store.claim(&destination.name).await? else {
            return Ok(Round::Idle);
        };
        let from = claim.next_position();
        let records = self.store.read_outbox(from, BATCH).await?;
        let Some(last) = records.last() else {
            self.store.release(claim, from).await?;
            return Ok(Round::Idle);
        };
        let after_all = last.position + 1;
        let mut dead = Vec::new();
        // The notifications for the sink, and the outbox position of each.
        let mut positions = Vec::with_capacity(records.len());
        let mut notifications = Vec::with_capacity(records.len());
        for record in &records {
            if !for_destination(record, destination) {
                continue;
            }
            match notification_of(record) {
                Ok(notification) => {
                    positions.push(record.position);
                    notifications.push(notification);
                }
                Err(reason) => dead.push(dead_letter(destination, record.position, None, reason)),
            }
        }
        let outcomes = if notifications.is_empty() {
            Vec::new()
        } else {
            let span = tracing::debug_span!(
                "outbox.dispatch",
                destination = destination.name,
                from = from,
                notifications = notifications.len(),
            );
            // Filed under the first notification's trace, linked from the
            // others' (as an Event Grid post is).
            crate::telemetry::continue_batch(
                &span,
                notifications.iter().map(Notification::traceparent),
            );
            destination
                .sink
                .deliver(&notifications)
                .instrument(span)
                .await
        };
        let label = DestinationLabel {
            destination: destination.name.clone(),
        };
        let mut next = after_all;
        for (index, (position, notification)) in positions.iter().zip(&notifications).enumerate() {
            // A sink that answered for fewer notifications than it was given
            // did not deliver the rest.
            let Some(outcome) = outcomes.get(index) else {
                next = *position;
                break;
            };
            let retries = outcome.attempts.saturating_sub(1);
            self.metrics
                .retried
                .get_or_create(&label)
                .inc_by(u64::from(retries));
            match &outcome.outcome {
                DeliveryOutcome::Delivered => {
                    self.metrics.published.get_or_create(&label).inc();
                }
                refused @ DeliveryOutcome::DeadLettered { .. } => {
                    let mut letter = dead_letter(
                        destination,
                        *position,
                        Some(notification),
                        refused.reason().unwrap_or_default(),
                    );
                    letter.attempts = outcome.attempts;
                    dead.push(letter);
                }
                DeliveryOutcome::GaveUp { .. } | DeliveryOutcome::NotAttempted => {
                    next = *position;
                    break;
                }
            }
        }
        if !dead.is_empty() {
            dead.retain(|letter| letter.position < next);
            self.metrics
                .dead_lettered
                .get_or_create(&label)
                .inc_by(dead.len() as u64);
            for letter in &dead {
                tracing::warn!(
                    destination = destination.name,
                    notification = %letter.notification_id,
                    "a notification was dead-lettered: {}",
                    letter.reason
                );
            }
            // Before the checkpoint moves past them: a crash in between
            // delivers them again, and they are dead-lettered again.
            self.store.add_dead_letters(dead).await?;
        }
        self.store.release(claim, next).await?;
        Ok(if next < after_all {
            Round::Stalled
        } else {
            Round::Progress
        })
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
            .deliver(std::slice::from_ref(&notification))
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
                    target,
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

/// The notification an outbox row announces, or why it cannot be sent.
pub fn notification_of(record: &OutboxRecord) -> Result<Notification, String> {
    let built = match &record.entry {
        OutboxEntry::NewEntity(event) => Notification::new_entity(event),
        OutboxEntry::EventAppended(event) => Notification::event_appended(event),
        OutboxEntry::Document(document) => match document.kind {
            NotificationKind::ProjectionCompleted => {
                let completed: ProjectionCompleted = serde_json::from_str(document.body.get())
                    .map_err(|error| {
                        format!(
                            "outbox row {} is not a projection result: {error}",
                            record.position
                        )
                    })?;
                Notification::projection_completed(completed)
            }
            NotificationKind::Published => {
                let published: Published =
                    serde_json::from_str(document.body.get()).map_err(|error| {
                        format!(
                            "outbox row {} is not a published event: {error}",
                            record.position
                        )
                    })?;
                Notification::published(published)
            }
            // The store writes these as rows of their events, never as
            // documents.
            NotificationKind::NewEntity | NotificationKind::EventAppended => {
                return Err(format!(
                    "outbox row {} holds a {:?} document, which this host cannot send",
                    record.position,
                    document.kind.as_str()
                ));
            }
        },
        OutboxEntry::Unknown { kind } => {
            return Err(format!(
                "outbox row {} is of kind {kind:?}, which this host does not know",
                record.position
            ));
        }
    };
    built.map_err(|error| format!("outbox row {}: {error}", record.position))
}

/// Whether `record` goes to `destination`: a document for one topic goes
/// to that topic only, everything else everywhere.
fn for_destination(record: &OutboxRecord, destination: &Destination) -> bool {
    match &record.entry {
        OutboxEntry::Document(document) => document
            .topic
            .as_ref()
            .is_none_or(|topic| *topic == destination.name),
        _ => true,
    }
}

fn dead_letter(
    destination: &Destination,
    position: u64,
    notification: Option<&Notification>,
    reason: String,
) -> DeadLetter {
    DeadLetter {
        destination: destination.name.clone(),
        // A row that is no notification still needs an id of its own.
        notification_id: notification.map_or(Uuid::from_u64_pair(0, position), Notification::id),
        position,
        event_type: notification.map_or_else(String::new, |n| n.event_type().to_owned()),
        subject: notification.map_or_else(String::new, |n| n.subject().to_owned()),
        reason,
        attempts: 1,
        dead_at: OffsetDateTime::now_utc(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::value::RawValue;

    use super::*;
    use crate::model::{EventContext, Expectation, KindSet, NewEvent, StreamId};
    use crate::notifications::sink::NotificationOutcome;
    use crate::store::{AppendRequest, Outbox, SqliteConfig, SqliteStore};

    /// Takes every notification, and remembers their event types.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl NotificationSink for Recorder {
        async fn deliver(&self, notifications: &[Notification]) -> Vec<NotificationOutcome> {
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
}
