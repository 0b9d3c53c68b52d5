//! Conversions between the host's model and the WIT types guests see.

use super::bindings::wit;
use crate::model::{EventContext, NameError, RecordedEvent, StreamId};

pub(crate) fn stream_from_wit(stream: &wit::StreamId) -> Result<StreamId, NameError> {
    StreamId::new(
        stream.domain.as_str(),
        stream.entity_type.as_str(),
        stream.instance_key.as_str(),
    )
}

pub(crate) fn stream_to_wit(stream: &StreamId) -> wit::StreamId {
    wit::StreamId {
        domain: stream.domain().to_owned(),
        entity_type: stream.entity_type().to_owned(),
        instance_key: stream.instance_key().to_owned(),
    }
}

pub(crate) fn context_to_wit(context: &EventContext) -> wit::EventContext {
    wit::EventContext {
        correlation_id: context.correlation_id.clone(),
        causation_id: context.causation_id.clone(),
        who: context.who.clone(),
        source: context.source.clone(),
        commentary: context.commentary.clone(),
        handler_version: context.handler_version.clone(),
    }
}

pub(crate) fn event_to_wit(event: &RecordedEvent) -> wit::Event {
    wit::Event {
        stream: stream_to_wit(&event.stream),
        event_type: event.event_type.clone(),
        payload: event.payload.get().as_bytes().to_vec(),
        sequence: event.sequence,
        position: event.position,
        event_id: event.event_id.to_string(),
        written_at: u64::try_from(event.written_at.unix_timestamp_nanos() / 1_000).unwrap_or(0),
        context: context_to_wit(&event.context),
    }
}
