//! Delivering a notification to the notification handlers that subscribe
//! to it.
//!
//! Delivery here is one attempt per matching handler; keeping at least once
//! (retries, dead letters, completion records) is the caller's part.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use super::scope::{CallScope, Origin};
use super::{HostError, Inner};
use crate::runtime::wit;

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
}

/// How one handler took one notification.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The handler's component.
    pub component: String,
    /// The handler's subscription.
    pub subscription: String,
    /// `None` when it handled the notification; otherwise why not, and it
    /// should get it again.
    pub error: Option<String>,
}

pub(super) async fn deliver(
    inner: &Arc<Inner>,
    notification: &IncomingNotification,
) -> Vec<Delivery> {
    let routes = inner.registry.routes();
    let guest_notification = wit::Notification {
        id: notification.id.clone(),
        event_type: notification.event_type.clone(),
        subject: notification.subject.clone(),
        data: notification.data.get().as_bytes().to_vec(),
        time: notification.time.clone(),
    };
    let mut deliveries = Vec::new();
    for component in routes.components() {
        for subscription in component.subscriptions() {
            if !subscription.matches(&notification.event_type, &notification.subject) {
                continue;
            }
            let scope = CallScope::notification(
                inner,
                component,
                Origin {
                    id: notification.id.clone(),
                    correlation_id: correlation_id(&notification.data),
                },
            );
            let outcome = async {
                let _slot = inner.runtime.reserve().await?;
                Ok::<_, HostError>(
                    component
                        .notify(
                            &inner.runtime,
                            scope,
                            &subscription.name,
                            &guest_notification,
                        )
                        .await?,
                )
            }
            .await;
            let error = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(message)) => Some(message),
                Err(error) => Some(error.to_string()),
            };
            if let Some(error) = &error {
                tracing::warn!(
                    component = component.name(),
                    subscription = subscription.name,
                    notification = notification.id,
                    "notification not handled: {error}"
                );
            }
            deliveries.push(Delivery {
                component: component.name().to_owned(),
                subscription: subscription.name.clone(),
                error,
            });
        }
    }
    deliveries
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
