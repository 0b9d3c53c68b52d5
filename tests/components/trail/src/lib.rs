//! Test fixture: `Test/Trail`, whose command appends as many events as it
//! asks for, and whose `Trail` projection keeps, for each event, what the
//! fold was given with it (sequence, position, id, time and context), so
//! that a test can compare every event a fold saw with the stored one.

use cqrs_wasi::{CommandContext, CommandError, CommandHandler, Projection, RecordedEvent};
use serde::{Deserialize, Serialize};

/// The one command.
#[derive(Debug, Deserialize)]
pub enum TrailCommand {
    /// Appends `count` events.
    Mark {
        /// How many events; may be zero.
        count: u32,
    },
}

/// The one event.
#[derive(Debug, Serialize, Deserialize)]
pub enum TrailEvent {
    /// The `index`-th event (from 0) of its command.
    Marked {
        /// Its place among its command's events.
        index: u32,
    },
}

/// The `Trail` command handler.
pub struct Trail;

impl CommandHandler for Trail {
    const DOMAIN: &'static str = "Test";
    const ENTITY_TYPE: &'static str = "Trail";
    type Command = TrailCommand;
    type Event = TrailEvent;

    fn handle(command: TrailCommand, _: &CommandContext) -> Result<Vec<TrailEvent>, CommandError> {
        let TrailCommand::Mark { count } = command;
        Ok((0..count)
            .map(|index| TrailEvent::Marked { index })
            .collect())
    }
}

/// What a fold was given with one event.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    /// `Marked.index`.
    pub index: u32,
    /// The stream, as `domain/entity type/instance key`.
    pub stream: String,
    /// The event's sequence.
    pub sequence: u64,
    /// Its store-wide position.
    pub position: u64,
    /// Its id.
    pub event_id: String,
    /// When it was written, in microseconds since the epoch.
    pub written_at: u64,
    /// Its context's correlation id.
    pub correlation_id: Option<String>,
    /// Its context's causation id (the command's id).
    pub causation_id: Option<String>,
    /// Its context's `who`.
    pub who: Option<String>,
}

/// The `Trail` projection: every event as the fold saw it, in order.
pub struct Events;

impl Projection for Events {
    const DOMAIN: &'static str = "Test";
    const ENTITY_TYPE: &'static str = "Trail";
    const NAME: &'static str = "Trail";
    type Event = TrailEvent;
    type State = Vec<Seen>;

    fn apply(state: &mut Vec<Seen>, event: TrailEvent, recorded: &RecordedEvent) {
        let TrailEvent::Marked { index } = event;
        let stream = &recorded.stream;
        state.push(Seen {
            index,
            stream: format!(
                "{}/{}/{}",
                stream.domain, stream.entity_type, stream.instance_key
            ),
            sequence: recorded.sequence,
            position: recorded.position,
            event_id: recorded.event_id.clone(),
            written_at: recorded.written_at,
            correlation_id: recorded.context.correlation_id.clone(),
            causation_id: recorded.context.causation_id.clone(),
            who: recorded.context.who.clone(),
        });
    }
}

cqrs_wasi::export_component! {
    commands: [Trail],
    projections: [Events],
}
