//! The component side of the boundary: wit-bindgen bindings for the
//! `domain-component` world and their translation to the SDK's types.
//!
//! Only this module touches generated bindings or JSON bytes; it exists only
//! on wasm32. Everything [`export_component!`](crate::export_component)
//! expands to calls into here.

use serde::de::DeserializeOwned;

use crate::notifications::{
    CustomEvent, NotificationContext, NotificationHandler, PublishError, SendError, SentCommand,
};
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

use bindings::cqrs_wasi::handlers::{commands, event_store, publisher, types as wit};
use bindings::exports::cqrs_wasi::handlers::{command_handler, notification_handler, projection};

pub use command_handler::CommandRoutes;
pub use notification_handler::Subscription;
pub use projection::{EventBatch, ProjectionId, ProjectionInfo};
pub use wit::{Command, CommandError, NewEvent, Notification, ProjectionError};

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
        batch: EventBatch,
    ) -> Result<Vec<u8>, ProjectionError>;
    /// `notification-handler.describe`.
    fn subscriptions() -> Vec<Subscription>;
    /// `notification-handler.handle`.
    fn notify(subscription: String, notification: Notification) -> Result<(), String>;
}

impl<T: Component> notification_handler::Guest for T {
    fn describe() -> Vec<Subscription> {
        T::subscriptions()
    }

    fn handle(subscription: String, notification: Notification) -> Result<(), String> {
        T::notify(subscription, notification)
    }
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
        batch: EventBatch,
    ) -> Result<Vec<u8>, ProjectionError> {
        T::apply(projection, state, batch)
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
    batch: EventBatch,
) -> Result<Vec<u8>, ProjectionError> {
    let mut state: P::State = match state {
        None => P::State::default(),
        Some(json) => serde_json::from_slice(&json)
            .map_err(|e| ProjectionError::InvalidState(e.to_string()))?,
    };
    let mut contexts: Vec<crate::EventContext> =
        batch.contexts.into_iter().map(context_from_wit).collect();
    // One event at a time, in one `RecordedEvent` that each event's fields
    // move into. The stream is the batch's; a context is swapped in from
    // `contexts` (and the one it replaces back) when the next event carries
    // another, so none is copied.
    let mut recorded = RecordedEvent {
        stream: stream_from_wit(batch.stream),
        event_type: String::new(),
        payload: Vec::new(),
        sequence: 0,
        position: 0,
        event_id: String::new(),
        written_at: 0,
        context: crate::EventContext::default(),
    };
    let declared = codec::variant_names::<P::Event>();
    let mut held: Option<usize> = None;
    for event in batch.events {
        let wanted = event.context as usize;
        if held != Some(wanted) {
            if wanted >= contexts.len() {
                return Err(ProjectionError::InvalidEvent(format!(
                    "event {} names context {wanted}, but the batch gives {}",
                    event.sequence,
                    contexts.len()
                )));
            }
            if let Some(held) = held {
                std::mem::swap(&mut recorded.context, &mut contexts[held]);
            }
            std::mem::swap(&mut recorded.context, &mut contexts[wanted]);
            held = Some(wanted);
        }
        recorded.event_type = event.event_type;
        recorded.payload = event.payload;
        recorded.sequence = event.sequence;
        recorded.position = event.position;
        recorded.event_id = event.event_id;
        recorded.written_at = event.written_at;
        crate::fold_declared::<P>(&mut state, &recorded, declared)
            .map_err(|e| ProjectionError::InvalidEvent(e.to_string()))?;
    }
    serde_json::to_vec(&state).map_err(|e| ProjectionError::Other(e.to_string()))
}

/// What notification handler `N` subscribes to.
pub fn subscription<N: NotificationHandler>() -> Subscription {
    let subscription = N::subscription();
    Subscription {
        name: N::NAME.to_owned(),
        included_event_types: subscription.included_event_types,
        subject_begins_with: subscription.subject_begins_with,
        subject_ends_with: subscription.subject_ends_with,
    }
}

/// Runs notification handler `N`.
pub fn notify<N: NotificationHandler>(notification: Notification) -> Result<(), String> {
    let notification = crate::notifications::Notification {
        id: notification.id,
        event_type: notification.event_type,
        subject: notification.subject,
        data: notification.data,
        time: notification.time,
    };
    N::handle(&notification, &NotificationContext::from_host()).map_err(|e| e.0)
}

/// The error for a subscription this component does not have.
pub fn unknown_subscription(name: &str) -> String {
    format!("this component has no notification handler {name}")
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

/// How many events one `read-stream` call asks the host for.
const READ_PAGE: u32 = 1024;

/// Every event of `stream`, a page at a time.
pub(crate) fn read_all_of(stream: &StreamId) -> Result<Vec<RecordedEvent>, crate::StoreError> {
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
pub(crate) fn send(sent: SentCommand) -> Result<crate::CommandOutcome, SendError> {
    let request = commands::CommandRequest {
        stream: stream_to_wit(&sent.stream),
        command_type: sent.command_type,
        payload: sent.payload,
        command_id: sent.command_id,
    };
    commands::send(&request)
        .map(|outcome| crate::CommandOutcome {
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

fn event_from_wit(event: wit::Event) -> RecordedEvent {
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
