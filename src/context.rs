//! What a command handler can read while it decides: its stream, as of the
//! moment the host started the call.
//!
//! Inside a component the reads go to the host's `event-store` import; in a
//! native unit test they come from a history the test supplies. Handler code
//! is the same in both.

use serde::Serialize;

use crate::{EventContext, Projection, RecordedEvent, StoreError, StreamId};

/// The command being handled and read access to its stream.
#[derive(Debug)]
pub struct CommandContext {
    stream: StreamId,
    command_id: String,
    context: EventContext,
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// Reads go to the host; it pins them to the sequence it saw when the
    /// call started.
    #[cfg(target_arch = "wasm32")]
    Host,
    /// A supplied history, for native tests.
    History(Vec<RecordedEvent>),
    /// The stream's sequence and projection states computed beforehand by a
    /// native runner (see [`crate::native`]); no events.
    #[cfg(not(target_arch = "wasm32"))]
    Prepared {
        sequence: u64,
        states: Vec<(String, Vec<u8>)>,
    },
}

impl CommandContext {
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn from_host(stream: StreamId, command_id: String, context: EventContext) -> Self {
        CommandContext {
            stream,
            command_id,
            context,
            source: Source::Host,
        }
    }

    /// A context whose stream holds `events` (sequences 1, 2, ...), for
    /// testing handlers natively.
    pub fn with_history<E: Serialize>(
        domain: &str,
        entity_type: &str,
        instance_key: &str,
        events: &[E],
    ) -> serde_json::Result<Self> {
        let stream = StreamId::new(domain, entity_type, instance_key);
        let history = events
            .iter()
            .zip(1..)
            .map(|(event, sequence)| {
                let (event_type, payload) = crate::codec::encode(event)?;
                Ok(RecordedEvent {
                    stream: stream.clone(),
                    event_type,
                    payload,
                    sequence,
                    position: sequence,
                    event_id: format!("00000000-0000-4000-8000-{sequence:012}"),
                    written_at: 0,
                    context: EventContext::default(),
                })
            })
            .collect::<serde_json::Result<_>>()?;
        Ok(CommandContext {
            stream,
            command_id: "test-command".to_owned(),
            context: EventContext::default(),
            source: Source::History(history),
        })
    }

    /// A context for a native runner that computed, before the call, what
    /// the handler may ask: the stream's `sequence` and the JSON `states` of
    /// projections by name, just as a host answers a component's
    /// `stream-sequence` and `run-projection` calls. Reading the events
    /// themselves fails: such a runner serves states, not histories.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn prepared(
        stream: StreamId,
        command_id: String,
        context: EventContext,
        sequence: u64,
        states: Vec<(String, Vec<u8>)>,
    ) -> Self {
        CommandContext {
            stream,
            command_id,
            context,
            source: Source::Prepared { sequence, states },
        }
    }

    /// The stream the command addresses.
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// The command's id.
    pub fn command_id(&self) -> &str {
        &self.command_id
    }

    /// The command's context (correlation id, who, ...).
    pub fn context(&self) -> &EventContext {
        &self.context
    }

    /// The sequence of the stream's last event; 0 when the stream is new.
    pub fn sequence(&self) -> Result<u64, StoreError> {
        match &self.source {
            #[cfg(target_arch = "wasm32")]
            Source::Host => crate::guest::imports::stream_sequence(&self.stream),
            Source::History(events) => Ok(events.last().map_or(0, |e| e.sequence)),
            #[cfg(not(target_arch = "wasm32"))]
            Source::Prepared { sequence, .. } => Ok(*sequence),
        }
    }

    /// Every event of the command's stream, in order.
    pub fn events(&self) -> Result<Vec<RecordedEvent>, StoreError> {
        self.events_of(&self.stream)
    }

    /// Every event of another stream, in order, if the component is granted
    /// its domain (by default only the domains it declares). In a test
    /// context, streams other than the command's are empty.
    pub fn events_of(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>, StoreError> {
        match &self.source {
            #[cfg(target_arch = "wasm32")]
            Source::Host => crate::guest::imports::read_all_of(stream),
            Source::History(events) if *stream == self.stream => Ok(events.clone()),
            Source::History(_) => Ok(Vec::new()),
            #[cfg(not(target_arch = "wasm32"))]
            Source::Prepared { .. } => Err(StoreError::Other(
                "a prepared context holds projection states, not events".to_owned(),
            )),
        }
    }

    /// The state of projection `P` over the stream. In a component the host
    /// computes it (and may serve it from a snapshot).
    pub fn project<P: Projection>(&self) -> Result<P::State, StoreError> {
        match &self.source {
            #[cfg(target_arch = "wasm32")]
            Source::Host => {
                let state = crate::guest::imports::run_projection(P::NAME, &self.stream)?;
                serde_json::from_slice(&state).map_err(|e| {
                    StoreError::Other(format!("state of projection {} unreadable: {e}", P::NAME))
                })
            }
            Source::History(events) => {
                let mut state = P::State::default();
                crate::fold::<P>(&mut state, events)
                    .map_err(|e| StoreError::Other(format!("event unreadable: {e}")))?;
                Ok(state)
            }
            #[cfg(not(target_arch = "wasm32"))]
            Source::Prepared { states, .. } => {
                let Some((_, state)) = states.iter().find(|(name, _)| name == P::NAME) else {
                    return Err(StoreError::UnknownProjection(P::NAME.to_owned()));
                };
                serde_json::from_slice(state).map_err(|e| {
                    StoreError::Other(format!("state of projection {} unreadable: {e}", P::NAME))
                })
            }
        }
    }
}
