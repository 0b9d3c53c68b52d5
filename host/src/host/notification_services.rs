//! What a notification handler's call may do: read as its component is
//! granted, send commands as it is granted (each an ordinary command, run
//! like one from the API), and publish custom events to the topics it is
//! granted (as outbox documents, delivered by the topic's dispatcher).
//!
//! It serves the `commands` and `publisher` imports; the reads are
//! [`Reads`]'.

use std::sync::Arc;

use super::commands::{CommandRequest, execute};
use super::reads::Reads;
use super::{HostError, Inner};
use crate::model::{
    CommandId, CommandType, Domain, EntityType, EventContext, NotificationKind, ProjectionType,
    RecordedEvent, StreamId,
};
use crate::notifications::model::Published;
use crate::runtime::{
    LoadedComponent, NotificationServices, SendOutcome, SendRequest, StoreReads, wit,
};
use crate::store::Document;

/// The notification that caused a call, carried onto the commands it sends.
pub(super) struct Origin {
    pub(super) id: String,
    pub(super) correlation_id: Option<String>,
    /// The trace it continues: where the handler's commands carry it when
    /// this host exports no spans of its own.
    pub(super) traceparent: Option<crate::model::TraceParent>,
}

/// The services of one notification handler's call.
pub(super) struct HandlerServices {
    reads: Reads,
    origin: Origin,
}

impl HandlerServices {
    pub(super) fn new(
        inner: &Arc<Inner>,
        component: &Arc<LoadedComponent>,
        origin: Origin,
    ) -> Arc<Self> {
        Arc::new(HandlerServices {
            reads: Reads::unpinned(inner, component),
            origin,
        })
    }

    fn inner(&self) -> &Arc<Inner> {
        self.reads.inner()
    }

    fn component(&self) -> &LoadedComponent {
        self.reads.component()
    }
}

#[async_trait::async_trait]
impl StoreReads for HandlerServices {
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, wit::StoreError> {
        self.reads.read_stream(stream, from, max_count).await
    }

    async fn stream_sequence(&self, stream: &StreamId) -> Result<u64, wit::StoreError> {
        self.reads.stream_sequence(stream).await
    }

    async fn list_instances(
        &self,
        domain: &Domain,
        entity_type: &EntityType,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<wit::InstancePage, wit::StoreError> {
        self.reads
            .list_instances(domain, entity_type, cursor, limit)
            .await
    }

    async fn run_projection(
        &self,
        projection_type: &ProjectionType,
        stream: &StreamId,
        as_of: Option<u64>,
    ) -> Result<Vec<u8>, wit::StoreError> {
        self.reads
            .run_projection(projection_type, stream, as_of)
            .await
    }
}

/// The largest `data` of a published event: Event Grid takes at most 1 MB
/// for the whole event.
const MAX_PUBLISHED_DATA: usize = 1 << 20;

#[async_trait::async_trait]
impl NotificationServices for HandlerServices {
    async fn send_command(&self, request: SendRequest) -> Result<SendOutcome, wit::SendError> {
        let component = self.component();
        let invalid = |e: crate::model::NameError| wit::SendError::Invalid(e.to_string());
        let stream = crate::runtime::stream_from_wit(&request.stream).map_err(invalid)?;
        let command_type = CommandType::new(request.command_type).map_err(invalid)?;
        let command_id = request
            .command_id
            .map(CommandId::new)
            .transpose()
            .map_err(invalid)?;
        if !self.inner().capabilities(component).may_send(
            stream.domain(),
            stream.entity_type(),
            &command_type,
        ) {
            tracing::warn!(component = component.name(), %stream, command = %command_type, "refused an ungranted command");
            return Err(wit::SendError::Denied(format!(
                "component {} may not send {} to {}/{}",
                component.name(),
                command_type,
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
            command_type,
            payload,
            command_id,
            context: EventContext {
                correlation_id: self.origin.correlation_id.clone(),
                source: Some(format!("notification {}", self.origin.id)),
                traceparent: self.origin.traceparent.clone(),
                ..EventContext::default()
            },
        };
        match execute(self.inner(), command).await {
            Ok(outcome) => Ok(SendOutcome {
                command_id: outcome.command_id.into_string(),
                events_appended: u32::try_from(outcome.events.len()).unwrap_or(u32::MAX),
                stream_sequence: outcome.stream_sequence,
                replayed: outcome.replayed,
            }),
            Err(error) => Err(to_send_error(error)),
        }
    }

    /// Checks the grant, the topic and the event, and adds it to the outbox
    /// for the topic's dispatcher.
    async fn publish(
        &self,
        topic: String,
        event: wit::CustomEvent,
    ) -> Result<(), wit::PublishError> {
        let component = self.component();
        let inner = self.inner();
        if !inner.capabilities(component).may_publish(&topic) {
            tracing::warn!(
                component = component.name(),
                topic,
                "refused an ungranted publish"
            );
            return Err(wit::PublishError::Denied(format!(
                "component {} may not publish to topic {topic:?}",
                component.name()
            )));
        }
        if topic.starts_with('@') || !inner.dispatcher.destinations().any(|d| d == topic) {
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
            traceparent: crate::telemetry::traceparent(
                &tracing::Span::current(),
                self.origin.traceparent.as_ref(),
            ),
        };
        let document = Document {
            id: published.id(),
            kind: NotificationKind::Published,
            topic: Some(topic),
            body: serde_json::value::to_raw_value(&published)
                .map_err(|e| wit::PublishError::Other(e.to_string()))?
                .into(),
        };
        inner
            .store
            .add_documents(vec![document])
            .await
            .map_err(|e| wit::PublishError::Other(e.to_string()))?;
        Ok(())
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
