//! Conversions between the host's model and the WIT types guests see.
//!
//! What goes to a guest's exports borrows from the host's model (the
//! `*_param` functions); what an import hands back is owned.

use uuid::fmt::Hyphenated;

use super::bindings::{projection, wit};
use crate::model::{EventContext, NameError, RecordedEvent, StreamId};

/// The text of an event id, which [`batch_events`] writes and borrows.
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

/// `events` as an `event-batch` of `projection.apply` lists them, each id
/// written into its place in `ids`, and each context pushed onto
/// `contexts` once for each run of events that carry it, as the events of
/// one command do.
pub(crate) fn batch_events<'a>(
    events: &[&'a RecordedEvent],
    ids: &'a mut [EventIdText],
    contexts: &mut Vec<wit::EventContextParam<'a>>,
) -> Vec<projection::BatchEvent<'a>> {
    let mut last: Option<&EventContext> = None;
    events
        .iter()
        .zip(ids)
        .map(|(&event, id)| {
            if last != Some(&event.context) {
                contexts.push(context_param(&event.context));
                last = Some(&event.context);
            }
            projection::BatchEvent {
                event_type: &event.event_type,
                payload: event.payload.get().as_bytes(),
                sequence: event.sequence,
                position: event.position,
                event_id: event.event_id.hyphenated().encode_lower(id),
                written_at: micros_since_epoch(event),
                // No list longer than `u32::MAX` crosses the boundary: a
                // batch that long fails to lower before any index is read.
                context: u32::try_from(contexts.len() - 1).unwrap_or(u32::MAX),
            }
        })
        .collect()
}

/// `event` as the `event-store` import returns it.
pub(crate) fn event_to_wit(event: &RecordedEvent) -> wit::Event {
    let context = &event.context;
    wit::Event {
        stream: wit::StreamId {
            domain: event.stream.domain().to_string(),
            entity_type: event.stream.entity_type().to_string(),
            instance_key: event.stream.instance_key().to_string(),
        },
        event_type: event.event_type.to_string(),
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

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;
    use time::OffsetDateTime;
    use uuid::Uuid;

    use super::*;

    fn event(sequence: u64, command: &str) -> RecordedEvent {
        RecordedEvent {
            stream: StreamId::new("Test", "Trail", "t-1").expect("valid names"),
            event_id: Uuid::new_v4(),
            event_type: crate::model::EventType::new("Marked").expect("a valid name"),
            sequence,
            position: sequence,
            written_at: OffsetDateTime::UNIX_EPOCH,
            payload: RawValue::from_string("{}".to_owned()).expect("JSON"),
            context: EventContext {
                causation_id: Some(command.to_owned()),
                ..EventContext::default()
            },
        }
    }

    #[test]
    fn a_batch_gives_each_run_of_one_context_once() {
        let events: Vec<RecordedEvent> = [(1, "a"), (2, "a"), (3, "b"), (4, "a"), (5, "a")]
            .into_iter()
            .map(|(sequence, command)| event(sequence, command))
            .collect();
        let events: Vec<&RecordedEvent> = events.iter().collect();
        let mut ids = vec![[0; _]; events.len()];
        let mut contexts = Vec::new();
        let batch = batch_events(&events, &mut ids, &mut contexts);

        let indices: Vec<u32> = batch.iter().map(|e| e.context).collect();
        assert_eq!(indices, [0, 0, 1, 2, 2]);
        let causes: Vec<Option<&str>> = contexts.iter().map(|c| c.causation_id).collect();
        assert_eq!(causes, [Some("a"), Some("b"), Some("a")]);
        for (lowered, event) in batch.iter().zip(&events) {
            assert_eq!(lowered.event_id, event.event_id.to_string());
            assert_eq!(lowered.sequence, event.sequence);
        }
    }
}
