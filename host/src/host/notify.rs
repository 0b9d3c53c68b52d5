//! Delivering a notification to the notification handlers that subscribe
//! to it, and what those handlers may do: read streams and send commands.
//!
//! Delivery here is one attempt per matching handler; keeping at least once
//! (retries, dead letters, completion records) is the caller's part.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use super::commands::{CommandRequest, to_store_error};
use super::{HostError, Inner};
use crate::model::{EventContext, RecordedEvent, StreamId};
use crate::runtime::{GuestServices, LoadedComponent, SendOutcome, SendRequest, wit};
use crate::store::InstancePage;

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
            let scope = Arc::new(NotificationScope {
                inner: inner.clone(),
                component: component.clone(),
                notification_id: notification.id.clone(),
                correlation_id: correlation_id(&notification.data),
            });
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

/// What a notification handler's imports see: every stream it is granted,
/// and the commands it is granted to send, caused by the notification.
struct NotificationScope {
    inner: Arc<Inner>,
    component: Arc<LoadedComponent>,
    notification_id: String,
    correlation_id: Option<String>,
}

#[async_trait::async_trait]
impl GuestServices for NotificationScope {
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, wit::StoreError> {
        self.inner.check_read(&self.component, stream.domain())?;
        self.inner
            .store
            .read_stream(stream, from, max_count)
            .await
            .map_err(|e| to_store_error(e.into()))
    }

    async fn stream_sequence(&self, stream: &StreamId) -> Result<u64, wit::StoreError> {
        self.inner.check_read(&self.component, stream.domain())?;
        self.inner
            .store
            .stream_sequence(stream)
            .await
            .map_err(|e| to_store_error(e.into()))
    }

    async fn list_instances(
        &self,
        domain: &str,
        entity_type: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage, wit::StoreError> {
        self.inner.check_read(&self.component, domain)?;
        self.inner
            .store
            .list_instances(domain, entity_type, cursor, limit)
            .await
            .map_err(|e| to_store_error(e.into()))
    }

    async fn run_projection(
        &self,
        projection_type: &str,
        stream: &StreamId,
        as_of: Option<u64>,
    ) -> Result<Vec<u8>, wit::StoreError> {
        self.inner.check_read(&self.component, stream.domain())?;
        // This call's slot covers the projection's instance.
        super::projections::fold(
            &self.inner,
            stream,
            projection_type,
            as_of,
            super::projections::Slot::Held,
        )
        .await
        .map(|state| state.state.get().as_bytes().to_vec())
        .map_err(to_store_error)
    }

    async fn send_command(&self, request: SendRequest) -> Result<SendOutcome, wit::SendError> {
        let stream = crate::runtime::stream_from_wit(&request.stream)
            .map_err(|e| wit::SendError::Invalid(e.to_string()))?;
        if !self.inner.capabilities(&self.component).may_send(
            stream.domain(),
            stream.entity_type(),
            &request.command_type,
        ) {
            tracing::warn!(component = self.component.name(), %stream, command = request.command_type, "refused an ungranted command");
            return Err(wit::SendError::Denied(format!(
                "component {} may not send {} to {}/{}",
                self.component.name(),
                request.command_type,
                stream.domain(),
                stream.entity_type()
            )));
        }
        let payload = crate::model::json_document(request.payload)
            .map_err(|e| wit::SendError::Invalid(format!("the payload is not JSON: {e}")))?;
        // The command runs in an instance of its own, under a call slot of
        // its own: a handler's command is an ordinary command.
        let command = CommandRequest {
            stream,
            command_type: request.command_type,
            payload,
            command_id: request.command_id,
            context: EventContext {
                correlation_id: self.correlation_id.clone(),
                causation_id: None,
                source: Some(format!("notification {}", self.notification_id)),
                ..EventContext::default()
            },
        };
        let outcome = super::commands::execute(&self.inner, command).await;
        match outcome {
            Ok(outcome) => Ok(SendOutcome {
                command_id: outcome.command_id,
                events_appended: u32::try_from(outcome.events.len()).unwrap_or(u32::MAX),
                stream_sequence: outcome.stream_sequence,
                replayed: outcome.replayed,
            }),
            Err(error) => Err(to_send_error(error)),
        }
    }
}

/// How a failed command looks to the handler that sent it.
fn to_send_error(error: HostError) -> wit::SendError {
    let message = error.to_string();
    match error {
        HostError::Rejected { .. } => wit::SendError::Rejected(message),
        HostError::InvalidName(_)
        | HostError::InvalidPayload { .. }
        | HostError::NoHandler { .. }
        | HostError::CommandIdReused { .. } => wit::SendError::Invalid(message),
        HostError::NotGranted { .. } => wit::SendError::Denied(message),
        _ => wit::SendError::Other(message),
    }
}
