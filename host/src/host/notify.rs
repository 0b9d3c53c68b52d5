//! Delivering notifications to the notification handlers that subscribe to
//! them, locally (as a destination of the outbox) and from the webhook.
//!
//! Each (handler, notification id) that was handled gets a completion
//! record in the store, so a notification delivered again — a retry, a
//! redelivery after a crash, Event Grid delivering twice — is acknowledged
//! without running that handler again. The records are written after the
//! handler ran: a crash in between runs it again, which is what at least
//! once allows.

use std::sync::{Arc, Weak};

use serde_json::value::RawValue;
use tracing::Instrument;

use super::notification_services::{HandlerServices, Origin};
use super::{HostError, Inner};
use crate::model::TraceParent;
use crate::notifications::{DeliveryOutcome, Notification, NotificationOutcome, NotificationSink};
use crate::runtime::wit;
use crate::telemetry;

/// A notification as handlers receive it, whichever schema carried it.
#[derive(Debug, Clone)]
pub struct IncomingNotification {
    /// Deterministic: a redelivery carries the same id.
    pub id: String,
    /// `{Domain}.{EntityType}.{EventType}` and the like.
    pub event_type: String,
    /// `eventsourcing/...`.
    pub subject: String,
    /// The `data` object.
    pub data: Box<RawValue>,
    /// When it happened, RFC 3339.
    pub time: String,
    /// The trace it continues: the `traceparent` of the span that raised
    /// it, if it came with one. Handlers do not see it; their commands'
    /// events record their own span in the same trace.
    pub traceparent: Option<TraceParent>,
}

impl From<&Notification> for IncomingNotification {
    fn from(notification: &Notification) -> Self {
        IncomingNotification {
            id: notification.id().to_string(),
            event_type: notification.event_type().to_owned(),
            subject: notification.subject().to_owned(),
            data: notification.data(),
            time: notification.time().to_owned(),
            traceparent: notification.traceparent().cloned(),
        }
    }
}

/// How one handler took one notification.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The handler's component.
    pub component: String,
    /// The handler's subscription.
    pub subscription: String,
    /// `None` when it handled the notification; otherwise why not, and it
    /// should get it again.
    pub error: Option<String>,
    /// It had handled this notification before, so it was not run again.
    pub duplicate: bool,
}

/// Delivers `notification` to every matching handler that has not handled
/// it yet, and records the completions.
pub(super) async fn deliver(
    inner: &Arc<Inner>,
    notification: &IncomingNotification,
) -> Vec<Delivery> {
    let (deliveries, completions) = deliver_once(inner, notification).await;
    record(inner, completions).await;
    deliveries
}

/// One attempt at every matching handler that has not handled
/// `notification`; returns how each did and the completions to record.
async fn deliver_once(
    inner: &Arc<Inner>,
    notification: &IncomingNotification,
) -> (Vec<Delivery>, Vec<(String, String)>) {
    let routes = inner.registry.routes();
    let guest_notification = wit::Notification {
        id: &notification.id,
        event_type: &notification.event_type,
        subject: &notification.subject,
        data: notification.data.get().as_bytes(),
        time: &notification.time,
    };
    let mut deliveries = Vec::new();
    let mut completions = Vec::new();
    for component in routes.components() {
        for subscription in component.subscriptions() {
            if !subscription.matches(&notification.event_type, &notification.subject) {
                continue;
            }
            let handler = format!("{}/{}", component.name(), subscription.name);
            let delivery = |error, duplicate| Delivery {
                component: component.name().to_owned(),
                subscription: subscription.name.clone(),
                error,
                duplicate,
            };
            match inner.store.is_completed(&handler, &notification.id).await {
                Ok(true) => {
                    deliveries.push(delivery(None, true));
                    continue;
                }
                Ok(false) => {}
                Err(error) => {
                    deliveries.push(delivery(Some(error.to_string()), false));
                    continue;
                }
            }
            let services = HandlerServices::new(
                inner,
                component,
                Origin {
                    id: notification.id.clone(),
                    correlation_id: correlation_id(&notification.data),
                    traceparent: notification.traceparent.clone(),
                },
            );
            let span = tracing::debug_span!(
                "notification.handle",
                otel.kind = "consumer",
                component = component.name(),
                subscription = %subscription.name,
                notification = %notification.id,
            );
            telemetry::continue_trace(&span, notification.traceparent.as_ref());
            let outcome = async {
                let _slot = inner.runtime.reserve().await?;
                let mut lease = component.notification_handler().await?;
                Ok::<_, HostError>(
                    lease
                        .notify(services, &subscription.name, &guest_notification)
                        .await?,
                )
            }
            .instrument(span)
            .await;
            let error = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(message)) => Some(message),
                Err(error) => Some(error.to_string()),
            };
            match &error {
                None => completions.push((handler, notification.id.clone())),
                Some(error) => tracing::warn!(
                    component = component.name(),
                    subscription = subscription.name,
                    notification = notification.id,
                    "notification not handled: {error}"
                ),
            }
            deliveries.push(delivery(error, false));
        }
    }
    (deliveries, completions)
}

/// Records completions. Failing that, the handlers ran all the same; they
/// may run again on a redelivery, which at least once allows.
async fn record(inner: &Inner, completions: Vec<(String, String)>) {
    if completions.is_empty() {
        return;
    }
    if let Err(error) = inner.store.record_completions(completions).await {
        tracing::warn!(%error, "completion records were not written; a redelivery will run the handlers again");
    }
}

/// The local notification handlers as a destination of the outbox:
/// notifications in order, each retried as the host's
/// [`handler_retry`](super::HostConfig::handler_retry) says while a handler
/// fails (handlers that succeeded are not run again), then dead-lettered
/// with every failing handler's error.
#[derive(Debug)]
pub(super) struct LocalHandlers {
    host: Weak<Inner>,
}

impl LocalHandlers {
    pub(super) fn new(host: Weak<Inner>) -> Self {
        LocalHandlers { host }
    }
}

#[async_trait::async_trait]
impl NotificationSink for LocalHandlers {
    async fn deliver(&self, notifications: &[Notification]) -> Vec<NotificationOutcome> {
        let Some(inner) = self.host.upgrade() else {
            // The host is shutting down: nothing is delivered, all stays.
            return Vec::new();
        };
        let retry = &inner.config.handler_retry;
        let routes = inner.registry.routes();
        let mut outcomes = Vec::with_capacity(notifications.len());
        let mut completions = Vec::new();
        for notification in notifications {
            let subscribed = routes.components().any(|component| {
                component.subscriptions().iter().any(|subscription| {
                    subscription.matches(notification.event_type(), notification.subject())
                })
            });
            if !subscribed {
                // Nobody here wants it: taken, at no cost.
                outcomes.push(NotificationOutcome {
                    id: notification.id(),
                    outcome: DeliveryOutcome::Delivered,
                    attempts: 1,
                    payload_omitted: false,
                });
                continue;
            }
            let incoming = IncomingNotification::from(notification);
            let mut attempts = 0;
            let outcome = loop {
                attempts += 1;
                let (deliveries, done) = deliver_once(&inner, &incoming).await;
                completions.extend(done);
                let errors: Vec<String> = deliveries
                    .iter()
                    .filter_map(|d| {
                        let error = d.error.as_ref()?;
                        Some(format!("{}/{}: {error}", d.component, d.subscription))
                    })
                    .collect();
                if errors.is_empty() {
                    break DeliveryOutcome::Delivered;
                }
                if attempts >= retry.max_attempts.get() {
                    break DeliveryOutcome::DeadLettered {
                        status: None,
                        reason: errors.join("; "),
                    };
                }
                // So that the retry skips the handlers that succeeded.
                record(&inner, std::mem::take(&mut completions)).await;
                tokio::time::sleep(retry.delay(attempts, None)).await;
            };
            outcomes.push(NotificationOutcome {
                id: notification.id(),
                outcome,
                attempts,
                payload_omitted: false,
            });
        }
        record(&inner, completions).await;
        outcomes
    }
}

/// The correlation id the notification carries in its data, if any.
fn correlation_id(data: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Correlated {
        correlation_id: Option<String>,
    }
    serde_json::from_str::<Correlated>(data.get())
        .ok()
        .and_then(|c| c.correlation_id)
}
