//! The component side of the boundary: wit-bindgen bindings for the
//! `domain-component` world and their translation to the SDK's types.
//!
//! Only this module touches generated bindings or JSON bytes; it exists only
//! on wasm32. Everything [`export_component!`](crate::export_component)
//! expands to calls into here.

use serde::de::DeserializeOwned;

use crate::notifications::{NotificationContext, NotificationHandler};
use crate::{CommandContext, CommandHandler, Projection, RecordedEvent, codec};

#[doc(hidden)]
pub mod bindings;
mod convert;
pub(crate) mod imports;

use convert::{command_error_to_wit, context_from_wit, stream_from_wit};

use bindings::cqrs_wasi::handlers::types as wit;
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
