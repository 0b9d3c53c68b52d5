//! Calls from the component into the host: the `event-store`, `commands`
//! and `publisher` imports, in the SDK's types.
//!
//! The contexts handlers get ([`CommandContext`](crate::CommandContext),
//! [`NotificationContext`](crate::NotificationContext)) read and send
//! through here; this module must not know about handlers or exports.

use super::bindings::cqrs_wasi::handlers::{commands, event_store, publisher, types as wit};
use super::convert::{event_from_wit, store_error_from_wit, stream_to_wit};
use crate::outbound::{CommandOutcome, CustomEvent, PublishError, SendError, SentCommand};
use crate::{RecordedEvent, StoreError, StreamId};

pub(crate) fn stream_sequence(stream: &StreamId) -> Result<u64, StoreError> {
    event_store::stream_sequence(&stream_to_wit(stream)).map_err(store_error_from_wit)
}

/// How many events one `read-stream` call asks the host for.
const READ_PAGE: u32 = 1024;

/// Every event of `stream`, a page at a time.
pub(crate) fn read_all_of(stream: &StreamId) -> Result<Vec<RecordedEvent>, StoreError> {
    let stream = stream_to_wit(stream);
    let mut events: Vec<RecordedEvent> = Vec::new();
    loop {
        let from = events.last().map_or(1, |e| e.sequence + 1);
        let page =
            event_store::read_stream(&stream, from, READ_PAGE).map_err(store_error_from_wit)?;
        let done = page.len() < READ_PAGE as usize;
        events.extend(page.into_iter().map(event_from_wit));
        if done {
            return Ok(events);
        }
    }
}

/// Sends a command through the `commands` import.
pub(crate) fn send(sent: SentCommand) -> Result<CommandOutcome, SendError> {
    let request = commands::CommandRequest {
        stream: stream_to_wit(&sent.stream),
        command_type: sent.command_type,
        payload: sent.payload,
        command_id: sent.command_id,
    };
    commands::send(&request)
        .map(|outcome| CommandOutcome {
            command_id: outcome.command_id,
            events_appended: outcome.events_appended,
            stream_sequence: outcome.stream_sequence,
            replayed: outcome.replayed,
        })
        .map_err(|error| match error {
            wit::SendError::Rejected(m) => SendError::Rejected(m),
            wit::SendError::Invalid(m) => SendError::Invalid(m),
            wit::SendError::Denied(m) => SendError::Denied(m),
            wit::SendError::Other(m) => SendError::Other(m),
        })
}

/// Publishes through the `publisher` import.
pub(crate) fn publish(topic: &str, event: CustomEvent) -> Result<(), PublishError> {
    let event = wit::CustomEvent {
        key: event.key,
        event_type: event.event_type,
        subject: event.subject,
        data: event.data,
        data_version: event.data_version,
    };
    publisher::publish(topic, &event).map_err(|error| match error {
        wit::PublishError::Denied(m) => PublishError::Denied(m),
        wit::PublishError::Invalid(m) => PublishError::Invalid(m),
        wit::PublishError::Other(m) => PublishError::Other(m),
    })
}

pub(crate) fn run_projection(
    projection_type: &str,
    stream: &StreamId,
) -> Result<Vec<u8>, StoreError> {
    event_store::run_projection(projection_type, &stream_to_wit(stream), None)
        .map_err(store_error_from_wit)
}
