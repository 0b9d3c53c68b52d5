//! Translations between the generated WIT types and the SDK's own.

use super::bindings::cqrs_wasi::handlers::types as wit;
use crate::{RecordedEvent, StreamId};

pub(super) fn stream_to_wit(stream: &StreamId) -> wit::StreamId {
    wit::StreamId {
        domain: stream.domain.clone(),
        entity_type: stream.entity_type.clone(),
        instance_key: stream.instance_key.clone(),
    }
}

pub(super) fn stream_from_wit(stream: wit::StreamId) -> StreamId {
    StreamId {
        domain: stream.domain,
        entity_type: stream.entity_type,
        instance_key: stream.instance_key,
    }
}

pub(super) fn context_from_wit(context: wit::EventContext) -> crate::EventContext {
    crate::EventContext {
        correlation_id: context.correlation_id,
        causation_id: context.causation_id,
        who: context.who,
        source: context.source,
        commentary: context.commentary,
        handler_version: context.handler_version,
    }
}

pub(super) fn event_from_wit(event: wit::Event) -> RecordedEvent {
    RecordedEvent {
        stream: stream_from_wit(event.stream),
        event_type: event.event_type,
        payload: event.payload,
        sequence: event.sequence,
        position: event.position,
        event_id: event.event_id,
        written_at: event.written_at,
        context: context_from_wit(event.context),
    }
}

pub(super) fn store_error_from_wit(error: wit::StoreError) -> crate::StoreError {
    match error {
        wit::StoreError::InvalidName(m) => crate::StoreError::InvalidName(m),
        wit::StoreError::UnknownProjection(m) => crate::StoreError::UnknownProjection(m),
        wit::StoreError::Denied(m) => crate::StoreError::Denied(m),
        wit::StoreError::Other(m) => crate::StoreError::Other(m),
    }
}

pub(super) fn store_error_to_wit(error: crate::StoreError) -> wit::StoreError {
    match error {
        crate::StoreError::InvalidName(m) => wit::StoreError::InvalidName(m),
        crate::StoreError::UnknownProjection(m) => wit::StoreError::UnknownProjection(m),
        crate::StoreError::Denied(m) => wit::StoreError::Denied(m),
        crate::StoreError::Other(m) => wit::StoreError::Other(m),
    }
}

pub(super) fn command_error_to_wit(error: crate::CommandError) -> wit::CommandError {
    match error {
        crate::CommandError::Rejected(m) => wit::CommandError::Rejected(m),
        crate::CommandError::InvalidPayload(m) => wit::CommandError::InvalidPayload(m),
        crate::CommandError::Store(e) => wit::CommandError::Store(store_error_to_wit(e)),
        crate::CommandError::Other(m) => wit::CommandError::Other(m),
    }
}
