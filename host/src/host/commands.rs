//! The command flow: route, replay a known command id, run the handler on a
//! pinned view of its stream, append what it returns right after what it
//! saw, and re-run on conflict.

use std::sync::Arc;

use serde_json::value::RawValue;
use tracing::{Instrument, Span};

use super::projections::{Appended, advance};
use super::reads::Reads;
use super::{HostConfig, HostError, Inner, parse_json};
use crate::model::{
    CommandId, CommandType, EventContext, Expectation, NameError, NewEvent, StreamId,
};
use crate::runtime::{LoadedComponent, wit};
use crate::store::{
    AppendOutcome, AppendRequest, AppendedEvent, CommandKey, CommandRecord, Fingerprint, StoreError,
};
use crate::telemetry;

/// A command for the host to run.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    /// The stream the command addresses.
    pub stream: StreamId,
    /// The command's type, such as `Deposit`.
    pub command_type: CommandType,
    /// The command's JSON payload.
    pub payload: Box<RawValue>,
    /// The idempotency key. A command id that already ran returns the
    /// recorded outcome without running the handler again, if it is the same
    /// command (type, stream and payload bytes); for any other command it is
    /// refused ([`HostError::CommandIdReused`]). `None`: a fresh one
    /// ([`new_id`](crate::model::new_id)).
    pub command_id: Option<CommandId>,
    /// Context carried onto the events. The correlation id defaults to the
    /// command id, the causation id is always the command id, and the
    /// handler version is set by the host.
    pub context: EventContext,
}

impl CommandRequest {
    /// A command with a JSON payload, a fresh command id and no context.
    pub fn new(
        stream: StreamId,
        command_type: impl Into<String>,
        payload: &str,
    ) -> Result<Self, RequestError> {
        Ok(CommandRequest {
            stream,
            command_type: CommandType::new(command_type)?,
            payload: crate::model::json_document(payload.as_bytes().to_vec())?,
            command_id: None,
            context: EventContext::default(),
        })
    }
}

/// Why a [`CommandRequest`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The command type is not a valid name.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The payload is not an interoperable JSON document.
    #[error("the payload is not JSON: {0}")]
    MalformedJson(#[from] serde_json::Error),
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct CommandOutcome {
    /// The command's id (given or generated).
    pub command_id: CommandId,
    /// The stream it addressed.
    pub stream: StreamId,
    /// The events appended, in order (possibly none).
    pub events: Vec<AppendedEvent>,
    /// The stream's last sequence after the command.
    pub stream_sequence: u64,
    /// True when this is the recorded outcome of an earlier execution of
    /// the same command id, and nothing ran now.
    pub replayed: bool,
}

/// Runs `request` in a span of its own: the request's (or the notification
/// handler's) child, or, for an embedder's command, the child of the
/// `traceparent` its context names.
pub(super) async fn execute(
    inner: &Arc<Inner>,
    request: CommandRequest,
) -> Result<CommandOutcome, HostError> {
    let span = tracing::debug_span!(
        "command",
        command = %request.command_type,
        stream = %request.stream,
    );
    telemetry::adopt(&span, request.context.traceparent.as_ref());
    run(inner, request).instrument(span).await
}

async fn run(inner: &Arc<Inner>, request: CommandRequest) -> Result<CommandOutcome, HostError> {
    let generated = request.command_id.is_none();
    let command_id = match request.command_id {
        Some(id) => id,
        None => CommandId::generated(crate::model::new_id()),
    };
    let key = CommandKey {
        fingerprint: Fingerprint::of(
            &request.command_type,
            &request.stream,
            request.payload.get().as_bytes(),
        ),
        command_id,
        command_type: request.command_type,
    };
    let stream = request.stream;

    // One command at a time per stream within this host: a handler re-run
    // because a neighbour won the race is wasted work. Across hosts sharing
    // a store, the expectation on append still decides.
    let _turn = inner.locks.lock(&stream).await;

    // A command id generated just now cannot have run before: skip the
    // store round trip.
    if !generated && let Some(record) = inner.store.command_record(&key.command_id).await? {
        return replay(&stream, &key, record);
    }

    let routes = inner.registry.routes();
    let Some(component) = routes
        .command_handler(stream.domain(), stream.entity_type(), &key.command_type)
        .cloned()
    else {
        return Err(HostError::NoHandler {
            domain: stream.domain().clone(),
            entity_type: stream.entity_type().clone(),
            command_type: key.command_type,
        });
    };

    let mut context = request.context;
    context
        .correlation_id
        .get_or_insert_with(|| key.command_id.to_string());
    context.causation_id = Some(key.command_id.to_string());
    context.handler_version = Some(component.digest().to_owned());
    // The events name this command's span, so that their notifications
    // continue its trace (or pass on the one it came with).
    context.traceparent = telemetry::traceparent(&Span::current(), context.traceparent.as_ref());

    let command = wit::Command {
        command_type: &key.command_type,
        stream: crate::runtime::stream_param(&stream),
        payload: request.payload.get().as_bytes(),
        command_id: &key.command_id,
        context: crate::runtime::context_param(&context),
    };

    let attempts = inner.config.command_attempts.max(1);
    let mut backoff = inner.config.retry_backoff;
    let mut lost = 0;
    // Where the handler runs next: this host's guess of the stream's head
    // (only ever for the first run), the head the store reported when the
    // guess proved stale, or (`None`) a fresh read.
    let mut next = inner.heads.guess(&stream).map(|seen| (seen, Seen::Guessed));
    loop {
        let (seen, how) = match next.take() {
            Some(next) => next,
            None => {
                let seen = inner.store.stream_sequence(&stream).await?;
                inner.heads.saw(&stream, seen);
                (seen, Seen::Known)
            }
        };
        let slot = inner.runtime.reserve().await?;
        let reads = Reads::pinned(inner, &component, &stream, seen);
        let mut lease = component.command_handler().await?;
        let answer = lease
            .handle(reads.clone(), &command)
            .instrument(tracing::debug_span!(
                "handler.call",
                component = component.name(),
                sequence = seen,
            ))
            .await?;
        // The projections the handler ran will be one command behind once
        // its events land; its instance can fold them.
        let projected = reads.take_projected();
        let events = match answer {
            Ok(events) => to_new_events(&inner.config, &component, events)?,
            Err(error) => {
                drop((lease, slot));
                // A refusal is recorded for good, so it must rest on the
                // stream as it is, not as guessed: no append checks it.
                if how == Seen::Guessed && matches!(error, wit::CommandError::Rejected(_)) {
                    let actual = inner.store.stream_sequence(&stream).await?;
                    if actual != seen {
                        inner.heads.moved_by_another(&stream, actual);
                        next = Some((actual, Seen::Known));
                        continue;
                    }
                }
                // Whatever a handler answered after a read the store could
                // not serve rests on what it did not see: the outage is the
                // answer, and nothing is recorded.
                if let Some(outage) = reads.outage() {
                    let message = format!("a read of the handler failed; it answered {error:?}");
                    return Err(StoreError::unavailable(outage, message).into());
                }
                return refused(inner, &stream, &key, &component, error).await;
            }
        };
        // The instance, and the call slot it counts against, are kept
        // through the append when there are states to fold its events into
        // (copied for that: cheaper than reading them back); otherwise they
        // go now.
        let mut kept =
            (!projected.is_empty() && !events.is_empty()).then(|| (lease, slot, events.clone()));
        let append = tracing::debug_span!("store.append", events = events.len(), expected = seen);
        let appended = inner
            .store
            .append(AppendRequest {
                stream: stream.clone(),
                expectation: Expectation::Exact(seen),
                events,
                context: context.clone(),
                command: Some(key.clone()),
                raise: inner.config.raise.kinds_for(&stream),
            })
            .instrument(append)
            .await;
        match appended {
            Ok(outcome) => {
                inner.heads.saw(&stream, outcome.stream_sequence);
                if let Some((lease, _slot, events)) = &mut kept {
                    let appended = Appended {
                        stream: &stream,
                        events,
                        context: &context,
                        outcome: &outcome,
                    };
                    advance(inner, &component, lease, projected, appended).await;
                }
                return Ok(outcome_of(&key, &stream, outcome, false));
            }
            Err(StoreError::Conflict { actual, .. }) if how == Seen::Guessed => {
                // Not a race lost just now: the guess was stale. The store
                // said where the stream is, so run again there, at once.
                tracing::debug!(%stream, seen, actual, "the stream's head was not where this host last saw it; running the handler again");
                inner.heads.moved_by_another(&stream, actual);
                next = Some((actual, Seen::Known));
            }
            Err(StoreError::Conflict { actual, .. }) => {
                drop(kept);
                lost += 1;
                tracing::debug!(%stream, attempt = lost, seen, actual, "append conflict; running the handler again");
                if lost == attempts {
                    return Err(HostError::Conflict { stream, attempts });
                }
                // Another writer is appending to the stream right now: give
                // it a moment, then read where it got to.
                tokio::time::sleep(jitter(backoff)).await;
                backoff = backoff.saturating_mul(2).min(MAX_RETRY_BACKOFF);
            }
            Err(StoreError::CommandAlreadyExecuted { record }) => {
                return replay(&stream, &key, *record);
            }
            Err(other) => return Err(store_error(&key, other)),
        }
    }
}

/// Where the sequence a handler runs at came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// This host's memory of the stream's head, which may be stale.
    Guessed,
    /// Read from the store, or reported by it with a conflict.
    Known,
}

/// The longest pause before a re-run. A host that lost the race for a stream
/// is usually racing another host's queue of commands to it, which runs back
/// to back: a longer pause would only delay its next chance, not improve it.
const MAX_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// A random duration between half of and all of `backoff`, so that hosts
/// racing for one stream do not retry in lockstep.
fn jitter(backoff: std::time::Duration) -> std::time::Duration {
    backoff.mul_f64(0.5 + fastrand::f64() / 2.0)
}

fn outcome_of(
    key: &CommandKey,
    stream: &StreamId,
    outcome: AppendOutcome,
    replayed: bool,
) -> CommandOutcome {
    CommandOutcome {
        command_id: key.command_id.clone(),
        stream: stream.clone(),
        events: outcome.events,
        stream_sequence: outcome.stream_sequence,
        replayed,
    }
}

/// The answer for a command id that already ran: the recorded outcome, if
/// it was the same command ([`CommandRecord::is_retry_of`]).
fn replay(
    stream: &StreamId,
    key: &CommandKey,
    record: CommandRecord,
) -> Result<CommandOutcome, HostError> {
    if !record.is_retry_of(stream, key) {
        return Err(reused(key, &record));
    }
    match record {
        CommandRecord::Appended { outcome, .. } => Ok(outcome_of(key, stream, outcome, true)),
        CommandRecord::Rejected { message, .. } => Err(HostError::Rejected { message }),
    }
}

/// The refusal of `key`, whose id is recorded for the other command of
/// `record`.
fn reused(key: &CommandKey, record: &CommandRecord) -> HostError {
    HostError::CommandIdReused {
        command_id: key.command_id.clone(),
        command_type: record.command_type().clone(),
        stream: record.stream().clone(),
    }
}

/// A store's failure of `key`'s append or rejection as the host's: the
/// store refuses an id recorded for another command itself, when that
/// record lands between the host's look-up and its write.
fn store_error(key: &CommandKey, error: StoreError) -> HostError {
    match error {
        StoreError::CommandIdReused { record } => reused(key, &record),
        other => other.into(),
    }
}

/// The answer to a command whose handler returned an error. A domain
/// refusal is recorded, so that a retry of the same command id gets the same
/// answer; if a concurrent execution of the id recorded first, its outcome
/// is the answer.
async fn refused(
    inner: &Inner,
    stream: &StreamId,
    key: &CommandKey,
    component: &LoadedComponent,
    error: wit::CommandError,
) -> Result<CommandOutcome, HostError> {
    Err(match error {
        wit::CommandError::Rejected(message) => {
            let record = inner
                .store
                .record_rejection(stream, key, &message)
                .await
                .map_err(|error| store_error(key, error))?;
            return replay(stream, key, record);
        }
        wit::CommandError::InvalidPayload(message) => HostError::InvalidPayload {
            command_type: key.command_type.clone(),
            message,
        },
        wit::CommandError::Store(error) => HostError::HandlerFailed {
            component: component.name().to_owned(),
            message: format!("reading the store failed: {}", store_error_message(&error)),
        },
        wit::CommandError::Other(message) => HostError::HandlerFailed {
            component: component.name().to_owned(),
            message,
        },
    })
}

fn store_error_message(error: &wit::StoreError) -> String {
    match error {
        wit::StoreError::InvalidName(m) => format!("invalid name: {m}"),
        wit::StoreError::UnknownProjection(m) => format!("unknown projection: {m}"),
        wit::StoreError::Denied(m) => format!("denied: {m}"),
        wit::StoreError::Other(m) => m.clone(),
    }
}

/// Validates what the handler returned: how many events and how large,
/// event type names, JSON payloads.
fn to_new_events(
    config: &HostConfig,
    component: &LoadedComponent,
    events: Vec<wit::NewEvent>,
) -> Result<Vec<NewEvent>, HostError> {
    let invalid = |message| HostError::InvalidOutput {
        component: component.name().to_owned(),
        message,
    };
    if events.len() > config.max_events_per_command {
        return Err(invalid(format!(
            "it returned {} events; a command may produce at most {}",
            events.len(),
            config.max_events_per_command
        )));
    }
    if let Some(event) = events
        .iter()
        .find(|e| e.payload.len() > config.max_event_bytes)
    {
        return Err(invalid(format!(
            "its {} event has a payload of {} bytes; the limit is {}",
            event.event_type,
            event.payload.len(),
            config.max_event_bytes
        )));
    }
    events
        .into_iter()
        .map(|event| {
            let payload = parse_json(component.name(), "an event payload", event.payload)?;
            NewEvent::new(event.event_type, payload).map_err(|e| HostError::InvalidOutput {
                component: component.name().to_owned(),
                message: e.to_string(),
            })
        })
        .collect()
}
