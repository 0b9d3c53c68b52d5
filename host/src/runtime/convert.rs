//! Conversions between the host's model and the WIT types guests see.
//!
//! What goes to a guest's exports borrows from the host's model (the
//! `*_param` functions); what an import hands back is owned.

use uuid::fmt::Hyphenated;

use super::bindings::wit;
use crate::model::{EventContext, NameError, RecordedEvent, StreamId};

/// The text of an event id, which [`event_param`] writes and borrows.
pub(crate) type EventIdText = [u8; Hyphenated::LENGTH];

pub(crate) fn stream_from_wit(stream: &wit::StreamId) -> Result<StreamId, NameError> {
    StreamId::new(
        stream.domain.as_str(),
        stream.entity_type.as_str(),
        stream.instance_key.as_str(),
    )
}

pub(crate) fn stream_param(stream: &StreamId) -> wit::StreamIdParam<'_> {
    wit::StreamIdParam {
        domain: stream.domain(),
        entity_type: stream.entity_type(),
        instance_key: stream.instance_key(),
    }
}

pub(crate) fn context_param(context: &EventContext) -> wit::EventContextParam<'_> {
    wit::EventContextParam {
        correlation_id: context.correlation_id.as_deref(),
        causation_id: context.causation_id.as_deref(),
        who: context.who.as_deref(),
        source: context.source.as_deref(),
        commentary: context.commentary.as_deref(),
        handler_version: context.handler_version.as_deref(),
    }
}

/// `event` as a guest's export takes it, its id written into `id`.
pub(crate) fn event_param<'a>(
    event: &'a RecordedEvent,
    id: &'a mut EventIdText,
) -> wit::EventParam<'a> {
    wit::EventParam {
        stream: stream_param(&event.stream),
        event_type: &event.event_type,
        payload: event.payload.get().as_bytes(),
        sequence: event.sequence,
        position: event.position,
        event_id: event.event_id.hyphenated().encode_lower(id),
        written_at: micros_since_epoch(event),
        context: context_param(&event.context),
    }
}

/// `event` as the `event-store` import returns it.
pub(crate) fn event_to_wit(event: &RecordedEvent) -> wit::Event {
    let context = &event.context;
    wit::Event {
        stream: wit::StreamId {
            domain: event.stream.domain().to_owned(),
            entity_type: event.stream.entity_type().to_owned(),
            instance_key: event.stream.instance_key().to_owned(),
        },
        event_type: event.event_type.clone(),
        payload: event.payload.get().as_bytes().to_vec(),
        sequence: event.sequence,
        position: event.position,
        event_id: event.event_id.to_string(),
        written_at: micros_since_epoch(event),
        context: wit::EventContext {
            correlation_id: context.correlation_id.clone(),
            causation_id: context.causation_id.clone(),
            who: context.who.clone(),
            source: context.source.clone(),
            commentary: context.commentary.clone(),
            handler_version: context.handler_version.clone(),
        },
    }
}

fn micros_since_epoch(event: &RecordedEvent) -> u64 {
    u64::try_from(event.written_at.unix_timestamp_nanos() / 1_000).unwrap_or(0)
}
