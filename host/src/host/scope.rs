//! What a guest's imports see during one call: the streams its component
//! may read, pinned for a command handler's own stream, and for a
//! notification handler, the commands it may send and the topics it may
//! publish to.

use std::sync::Arc;

use super::commands::{CommandRequest, execute};
use super::projections::{ProjectionState, Slot, fold};
use super::{HostError, Inner};
use crate::model::{EventContext, NotificationKind, RecordedEvent, StreamId};
use crate::notifications::model::Published;
use crate::runtime::{GuestServices, LoadedComponent, SendOutcome, SendRequest, wit};
use crate::store::{Document, InstancePage, StoreError};

/// The [`GuestServices`] of one call.
pub(super) struct CallScope {
    inner: Arc<Inner>,
    component: Arc<LoadedComponent>,
    /// A command handler's own stream and the sequence the host will append
    /// after: its reads of that stream stop there.
    pinned: Option<(StreamId, u64)>,
    /// The notification a notification handler is handling; only then may
    /// the call send commands.
    notification: Option<Origin>,
    /// The projections a command handler ran over its own stream at the
    /// pinned sequence: the host may fold the command's events into them.
    projected: std::sync::Mutex<Vec<ProjectionState>>,
}

/// The notification that caused a call, carried onto the commands it sends.
pub(super) struct Origin {
    pub(super) id: String,
    pub(super) correlation_id: Option<String>,
}

impl CallScope {
    /// A command handler's call on `stream`, seen at sequence `seen`.
    pub(super) fn command(
        inner: &Arc<Inner>,
        component: &Arc<LoadedComponent>,
        stream: &StreamId,
        seen: u64,
    ) -> Arc<Self> {
        Arc::new(CallScope {
            inner: inner.clone(),
            component: component.clone(),
            pinned: Some((stream.clone(), seen)),
            notification: None,
            projected: std::sync::Mutex::default(),
        })
    }

    /// A notification handler's call on the notification `origin`.
    pub(super) fn notification(
        inner: &Arc<Inner>,
        component: &Arc<LoadedComponent>,
        origin: Origin,
    ) -> Arc<Self> {
        Arc::new(CallScope {
            inner: inner.clone(),
            component: component.clone(),
            pinned: None,
            notification: Some(origin),
            projected: std::sync::Mutex::default(),
        })
    }

    /// The states [`CallScope::projected`] records, taken.
    pub(super) fn take_projected(&self) -> Vec<ProjectionState> {
        std::mem::take(&mut *self.projected.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn pinned(&self, stream: &StreamId) -> Option<u64> {
        self.pinned
            .as_ref()
            .and_then(|(own, seen)| (own == stream).then_some(*seen))
    }

    /// Refuses a read of a domain the component is not granted; the guest
    /// sees the refusal and the log records it.
    fn check_read(&self, domain: &str) -> Result<(), wit::StoreError> {
        if self.inner.capabilities(&self.component).may_read(domain) {
            return Ok(());
        }
        tracing::warn!(
            component = self.component.name(),
            domain,
            "refused a read of an ungranted domain"
        );
        Err(wit::StoreError::Denied(format!(
            "component {} may not read domain {domain}",
            self.component.name()
        )))
    }
}

#[async_trait::async_trait]
impl GuestServices for CallScope {
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, wit::StoreError> {
        self.check_read(stream.domain())?;
        let max_count = match self.pinned(stream) {
            Some(seen) => {
                let first = from.max(1);
                let available = if first > seen { 0 } else { seen - first + 1 };
                max_count.min(usize::try_from(available).unwrap_or(usize::MAX))
            }
            None => max_count,
        };
        if max_count == 0 {
            return Ok(Vec::new());
        }
        self.inner
            .store
            .read_stream(stream, from, max_count)
            .await
            .map_err(|e| to_store_error(e.into()))
    }

    async fn stream_sequence(&self, stream: &StreamId) -> Result<u64, wit::StoreError> {
        self.check_read(stream.domain())?;
        match self.pinned(stream) {
            Some(seen) => Ok(seen),
            None => self
                .inner
                .store
                .stream_sequence(stream)
                .await
                .map_err(|e| to_store_error(e.into())),
        }
    }

    async fn list_instances(
        &self,
        domain: &str,
        entity_type: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage, wit::StoreError> {
        self.check_read(domain)?;
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
        self.check_read(stream.domain())?;
        let as_of = match (self.pinned(stream), as_of) {
            (Some(seen), Some(as_of)) => Some(as_of.min(seen)),
            (Some(seen), None) => Some(seen),
            (None, as_of) => as_of,
        };
        // This call's slot covers the projection's instance.
        let state = fold(&self.inner, stream, projection_type, as_of, Slot::Held)
            .await
            .map_err(to_store_error)?;
        let answer = state.state.get().as_bytes().to_vec();
        if self.pinned(stream) == Some(state.sequence) {
            let mut projected = self.projected.lock().unwrap_or_else(|e| e.into_inner());
            if !projected
                .iter()
                .any(|p| p.projection_type == state.projection_type)
            {
                projected.push(state);
            }
        }
        Ok(answer)
    }

    async fn send_command(&self, request: SendRequest) -> Result<SendOutcome, wit::SendError> {
        let Some(origin) = &self.notification else {
            return Err(wit::SendError::Denied(
                "a command handler may not send commands; a notification handler may".to_owned(),
            ));
        };
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
                correlation_id: origin.correlation_id.clone(),
                source: Some(format!("notification {}", origin.id)),
                ..EventContext::default()
            },
        };
        match execute(&self.inner, command).await {
            Ok(outcome) => Ok(SendOutcome {
                command_id: outcome.command_id,
                events_appended: u32::try_from(outcome.events.len()).unwrap_or(u32::MAX),
                stream_sequence: outcome.stream_sequence,
                replayed: outcome.replayed,
            }),
            Err(error) => Err(to_send_error(error)),
        }
    }

    async fn publish(
        &self,
        topic: String,
        event: wit::CustomEvent,
    ) -> Result<(), wit::PublishError> {
        self.publish_to_outbox(topic, event).await
    }
}

/// The largest `data` of a published event: Event Grid takes at most 1 MB
/// for the whole event.
const MAX_PUBLISHED_DATA: usize = 1 << 20;

impl CallScope {
    /// `publisher.publish`: checks the grant, the topic and the event, and
    /// adds it to the outbox for the topic's dispatcher.
    async fn publish_to_outbox(
        &self,
        topic: String,
        event: wit::CustomEvent,
    ) -> Result<(), wit::PublishError> {
        if self.notification.is_none() {
            return Err(wit::PublishError::Denied(
                "a command handler may not publish; its events are its notifications".to_owned(),
            ));
        }
        if !self.inner.capabilities(&self.component).may_publish(&topic) {
            tracing::warn!(
                component = self.component.name(),
                topic,
                "refused an ungranted publish"
            );
            return Err(wit::PublishError::Denied(format!(
                "component {} may not publish to topic {topic:?}",
                self.component.name()
            )));
        }
        if topic.starts_with('@') || !self.inner.dispatcher.destinations().any(|d| d == topic) {
            return Err(wit::PublishError::Invalid(format!(
                "no topic is named {topic:?}"
            )));
        }
        let invalid = |what: &str| wit::PublishError::Invalid(what.to_owned());
        if event.key.is_empty() || event.key.len() > 256 {
            return Err(invalid("the key must be 1 to 256 bytes"));
        }
        if event.event_type.is_empty() || event.event_type.len() > 256 {
            return Err(invalid("the event type must be 1 to 256 bytes"));
        }
        if event.subject.len() > 1024 || event.data_version.len() > 64 {
            return Err(invalid(
                "the subject may hold 1024 bytes and the data version 64",
            ));
        }
        if event.data.len() > MAX_PUBLISHED_DATA {
            return Err(wit::PublishError::Invalid(format!(
                "the data is {} bytes; the limit is {MAX_PUBLISHED_DATA}",
                event.data.len()
            )));
        }
        let data = crate::model::json_document(event.data)
            .map_err(|e| wit::PublishError::Invalid(format!("the data is not JSON: {e}")))?;
        let published = Published {
            topic: topic.clone(),
            key: event.key,
            event_type: event.event_type,
            subject: event.subject,
            data: data.into(),
            data_version: event.data_version,
            time: time::OffsetDateTime::now_utc(),
        };
        let document = Document {
            id: published.id(),
            kind: NotificationKind::Published,
            topic: Some(topic),
            body: serde_json::value::to_raw_value(&published)
                .map_err(|e| wit::PublishError::Other(e.to_string()))?
                .into(),
        };
        self.inner
            .store
            .add_documents(vec![document])
            .await
            .map_err(|e| wit::PublishError::Other(e.to_string()))?;
        Ok(())
    }
}

/// How a host error looks to a guest that caused it through an import.
fn to_store_error(error: HostError) -> wit::StoreError {
    match error {
        HostError::InvalidName(e) | HostError::Store(StoreError::InvalidName(e)) => {
            wit::StoreError::InvalidName(e.to_string())
        }
        e @ HostError::NoProjection { .. } => wit::StoreError::UnknownProjection(e.to_string()),
        e => wit::StoreError::Other(e.to_string()),
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
