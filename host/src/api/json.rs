//! The JSON the API answers with.
//!
//! The API owns its wire shapes: each response is a type of this module,
//! built from the host's types by borrowing, so that a change to the host or
//! the store (a field renamed, a record kept in another form) cannot change
//! a response by accident, and a response is changed here or nowhere. Field
//! order is part of the shape: clients and the README's tour read it.
//!
//! This module only converts; it must not decide anything.

use serde::Serialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::host::{CommandOutcome, ComponentInfo, ProjectionState};
use crate::model::{EventContext, RecordedEvent, StreamId};
use crate::notifications::DestinationStatus;
use crate::registry::VersionInfo;
use crate::store::{AppendedEvent, DeadLetter, InstancePage};

/// RFC 3339, as every timestamp of the API is written.
fn rfc3339<S: serde::Serializer>(time: &OffsetDateTime, out: S) -> Result<S::Ok, S::Error> {
    time::serde::rfc3339::serialize(time, out)
}

/// `{"domain", "entityType", "instanceKey"}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Stream<'a> {
    domain: &'a str,
    entity_type: &'a str,
    instance_key: &'a str,
}

impl<'a> From<&'a StreamId> for Stream<'a> {
    fn from(stream: &'a StreamId) -> Self {
        Stream {
            domain: stream.domain(),
            entity_type: stream.entity_type(),
            instance_key: stream.instance_key(),
        }
    }
}

/// An event's context; absent fields are left out.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Context<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    causation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    who: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commentary: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    handler_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
}

impl<'a> From<&'a EventContext> for Context<'a> {
    fn from(context: &'a EventContext) -> Self {
        Context {
            correlation_id: context.correlation_id.as_deref(),
            causation_id: context.causation_id.as_deref(),
            who: context.who.as_deref(),
            source: context.source.as_deref(),
            commentary: context.commentary.as_deref(),
            handler_version: context.handler_version.as_deref(),
            traceparent: context.traceparent.as_ref().map(|t| t.as_str()),
        }
    }
}

/// A stored event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Event<'a> {
    stream: Stream<'a>,
    event_id: Uuid,
    event_type: &'a str,
    sequence: u64,
    position: u64,
    #[serde(serialize_with = "rfc3339")]
    written_at: OffsetDateTime,
    payload: &'a RawValue,
    context: Context<'a>,
}

impl<'a> From<&'a RecordedEvent> for Event<'a> {
    fn from(event: &'a RecordedEvent) -> Self {
        Event {
            stream: (&event.stream).into(),
            event_id: event.event_id,
            event_type: &event.event_type,
            sequence: event.sequence,
            position: event.position,
            written_at: event.written_at,
            payload: &event.payload,
            context: (&event.context).into(),
        }
    }
}

/// A page of a stream's events.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EventsPage<'a> {
    pub(super) stream: Stream<'a>,
    pub(super) events: Vec<Event<'a>>,
    /// Where the next page starts, when this one was full.
    pub(super) next_from: Option<u64>,
}

/// Where an appended event landed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Appended<'a> {
    event_id: Uuid,
    event_type: &'a str,
    sequence: u64,
    position: u64,
    #[serde(serialize_with = "rfc3339")]
    written_at: OffsetDateTime,
}

impl<'a> From<&'a AppendedEvent> for Appended<'a> {
    fn from(event: &'a AppendedEvent) -> Self {
        Appended {
            event_id: event.event_id,
            event_type: &event.event_type,
            sequence: event.sequence,
            position: event.position,
            written_at: event.written_at,
        }
    }
}

/// What a command did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Outcome<'a> {
    command_id: &'a str,
    stream: Stream<'a>,
    events: Vec<Appended<'a>>,
    stream_sequence: u64,
    replayed: bool,
}

impl<'a> From<&'a CommandOutcome> for Outcome<'a> {
    fn from(outcome: &'a CommandOutcome) -> Self {
        Outcome {
            command_id: outcome.command_id.as_str(),
            stream: (&outcome.stream).into(),
            events: outcome.events.iter().map(Appended::from).collect(),
            stream_sequence: outcome.stream_sequence,
            replayed: outcome.replayed,
        }
    }
}

/// A projection's state at one point of its stream.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Projection<'a> {
    stream: Stream<'a>,
    projection_type: &'a str,
    sequence: u64,
    projection_version: &'a str,
    state: &'a RawValue,
}

impl<'a> From<&'a ProjectionState> for Projection<'a> {
    fn from(state: &'a ProjectionState) -> Self {
        Projection {
            stream: (&state.stream).into(),
            projection_type: state.projection_type.as_str(),
            sequence: state.sequence,
            projection_version: &state.projection_version,
            state: &state.state,
        }
    }
}

/// A page of instance keys.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Instances<'a> {
    instance_keys: &'a [String],
    next_cursor: Option<&'a str>,
}

impl<'a> From<&'a InstancePage> for Instances<'a> {
    fn from(page: &'a InstancePage) -> Self {
        Instances {
            instance_keys: &page.instance_keys,
            next_cursor: page.next_cursor.as_deref(),
        }
    }
}

/// One deployed version of a component.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Version<'a> {
    digest: &'a str,
    #[serde(serialize_with = "rfc3339")]
    deployed_at: OffsetDateTime,
    live: bool,
}

/// A live component and its versions.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Component<'a> {
    name: &'a str,
    digest: &'a str,
    commands: &'a [String],
    projections: &'a [String],
    versions: Vec<Version<'a>>,
}

impl<'a> From<&'a ComponentInfo> for Component<'a> {
    fn from(info: &'a ComponentInfo) -> Self {
        Component {
            name: &info.name,
            digest: &info.digest,
            commands: &info.commands,
            projections: &info.projections,
            versions: info
                .versions
                .iter()
                .map(|version: &VersionInfo| Version {
                    digest: &version.digest,
                    deployed_at: version.deployed_at,
                    live: version.live,
                })
                .collect(),
        }
    }
}

/// Where a destination of the outbox stands.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Destination<'a> {
    destination: &'a str,
    next_position: u64,
    lag: u64,
}

impl<'a> From<&'a DestinationStatus> for Destination<'a> {
    fn from(status: &'a DestinationStatus) -> Self {
        Destination {
            destination: &status.destination,
            next_position: status.next_position,
            lag: status.lag,
        }
    }
}

/// A notification a destination refused.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeadLetterJson<'a> {
    destination: &'a str,
    notification_id: Uuid,
    position: u64,
    event_type: &'a str,
    subject: &'a str,
    reason: &'a str,
    attempts: u32,
    #[serde(serialize_with = "rfc3339")]
    dead_at: OffsetDateTime,
}

impl<'a> From<&'a DeadLetter> for DeadLetterJson<'a> {
    fn from(letter: &'a DeadLetter) -> Self {
        DeadLetterJson {
            destination: &letter.destination,
            notification_id: letter.notification_id,
            position: letter.position,
            event_type: &letter.event_type,
            subject: &letter.subject,
            reason: &letter.reason,
            attempts: letter.attempts,
            dead_at: letter.dead_at,
        }
    }
}
