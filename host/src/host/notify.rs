//! Delivering notifications to the notification handlers that subscribe to
//! them: one handler run, and every matching handler for a notification
//! that came through the webhook. The outbox's local destination, which
//! runs many at once, is [`super::local_handlers`].
//!
//! Each (handler, notification id) that was handled gets a completion
//! record in the store, so a notification delivered again — a retry, a
//! redelivery after a crash, Event Grid delivering twice — is acknowledged
//! without running that handler again. The records are written after the
//! handler ran: a crash in between runs it again, which is what at least
//! once allows.

use std::sync::Arc;

use serde_json::value::RawValue;
use tracing::Instrument;

use super::notification_services::{HandlerServices, Origin};
use super::{HostError, Inner};
use crate::model::TraceParent;
use crate::notifications::Notification;
use crate::runtime::{LoadedComponent, SubscriptionRoute, wit};
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
    let mut deliveries = Vec::new();
    let mut completions = Vec::new();
    for component in routes.components() {
        for subscription in component.subscriptions() {
            if !subscription.matches(&notification.event_type, &notification.subject) {
                continue;
            }
            let handler = handler_name(component, subscription);
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
            let error = run(inner, component, subscription, notification).await;
            if error.is_none() {
                completions.push((handler, notification.id.clone()));
            }
            deliveries.push(delivery(error, false));
        }
    }
    (deliveries, completions)
}

/// The name a handler's completion records go by: `component/subscription`.
pub(super) fn handler_name(
    component: &LoadedComponent,
    subscription: &SubscriptionRoute,
) -> String {
    format!("{}/{}", component.name(), subscription.name)
}

/// Runs `subscription` of `component` on `notification` once, in a call
/// slot: `None` when it handled the notification, else why not (logged).
pub(super) async fn run(
    inner: &Arc<Inner>,
    component: &Arc<LoadedComponent>,
    subscription: &SubscriptionRoute,
    notification: &IncomingNotification,
) -> Option<String> {
    let guest_notification = wit::Notification {
        id: &notification.id,
        event_type: &notification.event_type,
        subject: &notification.subject,
        data: notification.data.get().as_bytes(),
        time: &notification.time,
    };
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
        Ok(Ok(())) => return None,
        Ok(Err(message)) => message,
        Err(error) => error.to_string(),
    };
    tracing::warn!(
        component = component.name(),
        subscription = subscription.name,
        notification = notification.id,
        "notification not handled: {error}"
    );
    Some(error)
}

/// Records completions. Failing that, the handlers ran all the same; they
/// may run again on a redelivery, which at least once allows.
pub(super) async fn record(inner: &Inner, completions: Vec<(String, String)>) {
    if completions.is_empty() {
        return;
    }
    if let Err(error) = inner.store.record_completions(completions).await {
        tracing::warn!(%error, "completion records were not written; a redelivery will run the handlers again");
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
