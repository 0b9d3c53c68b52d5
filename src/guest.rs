//! The component side of the boundary: wit-bindgen bindings for the
//! `domain-component` world and their translation to the SDK's types.
//!
//! Only this module touches generated bindings or JSON bytes; it exists only
//! on wasm32. Everything [`export_component!`](crate::export_component)
//! expands to calls into here.

use serde::de::DeserializeOwned;

use crate::{CommandContext, CommandHandler, Projection, RecordedEvent, StreamId, codec};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "domain-component",
        pub_export_macro: true,
        export_macro_name: "__export_domain_component",
        default_bindings_module: "cqrs_wasi::__private::bindings",
        runtime_path: "wit_bindgen::rt",
    });
}

use bindings::cqrs_wasi::handlers::{event_store, types as wit};
use bindings::exports::cqrs_wasi::handlers::{command_handler, projection};

pub use command_handler::CommandRoutes;
pub use projection::{ProjectionId, ProjectionInfo};
pub use wit::{Command, CommandError, Event, NewEvent, ProjectionError};

/// What [`export_component!`](crate::export_component) implements: the
/// component's routing tables and dispatch.
pub trait Component {
    /// `command-handler.describe`.
    fn command_routes() -> Vec<CommandRoutes>;
    /// `command-handler.handle`.
    fn handle(command: Command) -> Result<Vec<NewEvent>, CommandError>;
    /// `projection.describe`.
    fn projections() -> Vec<ProjectionInfo>;
    /// `projection.apply`.
    fn apply(
        projection: ProjectionId,
        state: Option<Vec<u8>>,
        events: Vec<Event>,
    ) -> Result<Vec<u8>, ProjectionError>;
}

impl<T: Component> command_handler::Guest for T {
    fn describe() -> Vec<CommandRoutes> {
        T::command_routes()
    }

    fn handle(command: Command) -> Result<Vec<NewEvent>, CommandError> {
        T::handle(command)
    }
}

impl<T: Component> projection::Guest for T {
    fn describe() -> Vec<ProjectionInfo> {
        T::projections()
    }

    fn apply(
        projection: ProjectionId,
        state: Option<Vec<u8>>,
        events: Vec<Event>,
    ) -> Result<Vec<u8>, ProjectionError> {
        T::apply(projection, state, events)
    }
}

fn type_names<T: DeserializeOwned>() -> Vec<String> {
    codec::variant_names::<T>()
        .iter()
        .map(|&name| name.to_owned())
        .collect()
}

/// The routes a command handler declares.
pub fn command_routes<H: CommandHandler>() -> CommandRoutes {
    CommandRoutes {
        domain: H::DOMAIN.to_owned(),
        entity_type: H::ENTITY_TYPE.to_owned(),
        command_types: type_names::<H::Command>(),
    }
}

/// Whether `H` handles `command`.
pub fn handles<H: CommandHandler>(command: &Command) -> bool {
    command.stream.domain == H::DOMAIN
        && command.stream.entity_type == H::ENTITY_TYPE
        && codec::variant_names::<H::Command>().contains(&command.command_type.as_str())
}

/// Runs `H` on `command`.
pub fn handle<H: CommandHandler>(command: Command) -> Result<Vec<NewEvent>, CommandError> {
    let decoded: H::Command = codec::decode(&command.command_type, &command.payload)
        .map_err(|e| CommandError::InvalidPayload(e.to_string()))?;
    let ctx = CommandContext::from_host(
        stream_from_wit(command.stream),
        command.command_id,
        context_from_wit(command.context),
    );
    let events = H::handle(decoded, &ctx).map_err(command_error_to_wit)?;
    events
        .iter()
        .map(|event| {
            let (event_type, payload) = codec::encode(event)
                .map_err(|e| CommandError::Other(format!("event not serializable: {e}")))?;
            Ok(NewEvent {
                event_type,
                payload,
            })
        })
        .collect()
}

/// The error for a command no listed handler takes. The host routes by
/// `describe`, so this means the host and component disagree.
pub fn unrouted(command: &Command) -> CommandError {
    CommandError::Other(format!(
        "this component does not handle {} on {}/{}",
        command.command_type, command.stream.domain, command.stream.entity_type
    ))
}

/// What projection `P` declares.
pub fn projection_info<P: Projection>() -> ProjectionInfo {
    ProjectionInfo {
        id: ProjectionId {
            domain: P::DOMAIN.to_owned(),
            entity_type: P::ENTITY_TYPE.to_owned(),
            projection_type: P::NAME.to_owned(),
        },
        event_types: type_names::<P::Event>(),
    }
}

/// Whether `id` names projection `P`.
pub fn is<P: Projection>(id: &ProjectionId) -> bool {
    id.domain == P::DOMAIN && id.entity_type == P::ENTITY_TYPE && id.projection_type == P::NAME
}

/// Folds a batch of events into `state` with `P`.
pub fn apply<P: Projection>(
    state: Option<Vec<u8>>,
    events: Vec<Event>,
) -> Result<Vec<u8>, ProjectionError> {
    let mut state: P::State = match state {
        None => P::State::default(),
        Some(json) => serde_json::from_slice(&json)
            .map_err(|e| ProjectionError::InvalidState(e.to_string()))?,
    };
    let events: Vec<RecordedEvent> = events.into_iter().map(event_from_wit).collect();
    crate::fold::<P>(&mut state, &events)
        .map_err(|e| ProjectionError::InvalidEvent(e.to_string()))?;
    serde_json::to_vec(&state).map_err(|e| ProjectionError::Other(e.to_string()))
}

/// The error for a projection this component does not compute.
pub fn unknown_projection(id: &ProjectionId) -> ProjectionError {
    ProjectionError::Other(format!(
        "this component does not compute projection {} of {}/{}",
        id.projection_type, id.domain, id.entity_type
    ))
}

pub(crate) fn stream_sequence(stream: &StreamId) -> Result<u64, crate::StoreError> {
    event_store::stream_sequence(&stream_to_wit(stream)).map_err(store_error_from_wit)
}

pub(crate) fn read_stream(
    stream: &StreamId,
    from: u64,
    max_count: u32,
) -> Result<Vec<RecordedEvent>, crate::StoreError> {
    event_store::read_stream(&stream_to_wit(stream), from, max_count)
        .map(|events| events.into_iter().map(event_from_wit).collect())
        .map_err(store_error_from_wit)
}

pub(crate) fn run_projection(
    projection_type: &str,
    stream: &StreamId,
) -> Result<Vec<u8>, crate::StoreError> {
    event_store::run_projection(projection_type, &stream_to_wit(stream), None)
        .map_err(store_error_from_wit)
}

fn stream_to_wit(stream: &StreamId) -> wit::StreamId {
    wit::StreamId {
        domain: stream.domain.clone(),
        entity_type: stream.entity_type.clone(),
        instance_key: stream.instance_key.clone(),
    }
}

fn stream_from_wit(stream: wit::StreamId) -> StreamId {
    StreamId {
        domain: stream.domain,
        entity_type: stream.entity_type,
        instance_key: stream.instance_key,
    }
}

fn context_from_wit(context: wit::EventContext) -> crate::EventContext {
    crate::EventContext {
        correlation_id: context.correlation_id,
        causation_id: context.causation_id,
        who: context.who,
        source: context.source,
        commentary: context.commentary,
        handler_version: context.handler_version,
    }
}

fn event_from_wit(event: Event) -> RecordedEvent {
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

fn store_error_from_wit(error: wit::StoreError) -> crate::StoreError {
    match error {
        wit::StoreError::InvalidName(m) => crate::StoreError::InvalidName(m),
        wit::StoreError::UnknownProjection(m) => crate::StoreError::UnknownProjection(m),
        wit::StoreError::Denied(m) => crate::StoreError::Denied(m),
        wit::StoreError::Other(m) => crate::StoreError::Other(m),
    }
}

fn store_error_to_wit(error: crate::StoreError) -> wit::StoreError {
    match error {
        crate::StoreError::InvalidName(m) => wit::StoreError::InvalidName(m),
        crate::StoreError::UnknownProjection(m) => wit::StoreError::UnknownProjection(m),
        crate::StoreError::Denied(m) => wit::StoreError::Denied(m),
        crate::StoreError::Other(m) => wit::StoreError::Other(m),
    }
}

fn command_error_to_wit(error: crate::CommandError) -> CommandError {
    match error {
        crate::CommandError::Rejected(m) => CommandError::Rejected(m),
        crate::CommandError::InvalidPayload(m) => CommandError::InvalidPayload(m),
        crate::CommandError::Store(e) => CommandError::Store(store_error_to_wit(e)),
        crate::CommandError::Other(m) => CommandError::Other(m),
    }
}
