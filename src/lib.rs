//! Write cqrs-wasi command handlers and projections in plain Rust.
//!
//! A handler author declares commands, events and state as serde types,
//! implements [`CommandHandler`] and [`Projection`], and exports them with
//! [`export_component!`]. The SDK turns that into a `wasm32-wasip2`
//! component of the `cqrs-wasi:handlers` WIT package; the author never sees
//! JSON bytes or generated bindings.
//!
//! Commands and events are externally tagged serde enums: the variant name is
//! the command or event type, the variant's fields its JSON payload.
//!
//! ```
//! use cqrs_wasi::{CommandContext, CommandError, CommandHandler, Projection, RecordedEvent};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! pub enum CounterCommand { Increment { by: u32 } }
//!
//! #[derive(Serialize, Deserialize)]
//! pub enum CounterEvent { Incremented { by: u32 } }
//!
//! pub struct Counter;
//!
//! impl CommandHandler for Counter {
//!     const DOMAIN: &'static str = "Demo";
//!     const ENTITY_TYPE: &'static str = "Counter";
//!     type Command = CounterCommand;
//!     type Event = CounterEvent;
//!
//!     fn handle(command: CounterCommand, ctx: &CommandContext) -> Result<Vec<CounterEvent>, CommandError> {
//!         let total = ctx.project::<Total>()?;
//!         match command {
//!             CounterCommand::Increment { by } if total + u64::from(by) > 100 => {
//!                 Err(CommandError::rejected("a counter stops at 100"))
//!             }
//!             CounterCommand::Increment { by } => Ok(vec![CounterEvent::Incremented { by }]),
//!         }
//!     }
//! }
//!
//! pub struct Total;
//!
//! impl Projection for Total {
//!     const DOMAIN: &'static str = "Demo";
//!     const ENTITY_TYPE: &'static str = "Counter";
//!     const NAME: &'static str = "Total";
//!     type Event = CounterEvent;
//!     type State = u64;
//!
//!     fn apply(total: &mut u64, event: CounterEvent, _: &RecordedEvent) {
//!         match event { CounterEvent::Incremented { by } => *total += u64::from(by) }
//!     }
//! }
//!
//! cqrs_wasi::export_component! {
//!     commands: [Counter],
//!     projections: [Total],
//! }
//!
//! // Domain logic is tested natively, without wasm:
//! let ctx = CommandContext::with_history("Demo", "Counter", "c-1", &[CounterEvent::Incremented { by: 99 }])?;
//! assert!(Counter::handle(CounterCommand::Increment { by: 2 }, &ctx).is_err());
//! # Ok::<(), serde_json::Error>(())
//! ```
#![deny(missing_docs)]

// The generated bindings name this crate by its path from a handler crate.
extern crate self as cqrs_wasi;

mod codec;
mod context;
#[cfg(target_arch = "wasm32")]
mod guest;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
mod notifications;
mod outbound;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use codec::variant_names;
pub use context::CommandContext;
pub use notifications::{
    HandlerError, Notification, NotificationContext, NotificationHandler, Subscription,
};
pub use outbound::{CommandOutcome, CustomEvent, PublishError, SendError, SentCommand};

/// Identity of an event stream: `domain / entity type / instance key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamId {
    /// `Bank` in `Bank/Account/acc-042`.
    pub domain: String,
    /// `Account` in `Bank/Account/acc-042`.
    pub entity_type: String,
    /// `acc-042` in `Bank/Account/acc-042`.
    pub instance_key: String,
}

impl StreamId {
    /// Builds a stream identity. The host validates the names.
    pub fn new(
        domain: impl Into<String>,
        entity_type: impl Into<String>,
        instance_key: impl Into<String>,
    ) -> Self {
        StreamId {
            domain: domain.into(),
            entity_type: entity_type.into(),
            instance_key: instance_key.into(),
        }
    }
}

/// Who and what caused an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventContext {
    /// Ties together everything one original request caused.
    pub correlation_id: Option<String>,
    /// The id of the command or notification that directly caused this.
    pub causation_id: Option<String>,
    /// On whose behalf.
    pub who: Option<String>,
    /// Where the command came from.
    pub source: Option<String>,
    /// Free text for humans.
    pub commentary: Option<String>,
    /// Digest of the component version that produced the event.
    pub handler_version: Option<String>,
}

/// An event as the store recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its type name: the variant name in the event enum.
    pub event_type: String,
    /// Its JSON payload.
    pub payload: Vec<u8>,
    /// 1, 2, 3, ... within the stream.
    pub sequence: u64,
    /// Store-wide position.
    pub position: u64,
    /// UUID, unique across the store.
    pub event_id: String,
    /// Microseconds since the Unix epoch (UTC).
    pub written_at: u64,
    /// Who and what caused it.
    pub context: EventContext,
}

impl RecordedEvent {
    /// Reads the event as a variant of the event enum `E`.
    pub fn decode<E: DeserializeOwned>(&self) -> serde_json::Result<E> {
        codec::decode(&self.event_type, &self.payload)
    }
}

/// Why reading from the event store failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A stream identity or projection name is malformed.
    InvalidName(String),
    /// No projection of that name exists for the entity type.
    UnknownProjection(String),
    /// The component may not read that domain.
    Denied(String),
    /// Anything else.
    Other(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::InvalidName(m) => write!(f, "invalid name: {m}"),
            StoreError::UnknownProjection(m) => write!(f, "unknown projection: {m}"),
            StoreError::Denied(m) => write!(f, "denied: {m}"),
            StoreError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for StoreError {}

/// Why a command produced no events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Refused by the domain's rules; the message is shown to the caller.
    Rejected(String),
    /// The payload is not one the handler accepts.
    InvalidPayload(String),
    /// Reading state failed.
    Store(StoreError),
    /// Anything else.
    Other(String),
}

impl CommandError {
    /// A refusal by the domain's rules, such as an overdraft.
    pub fn rejected(message: impl Into<String>) -> Self {
        CommandError::Rejected(message.into())
    }
}

impl From<StoreError> for CommandError {
    fn from(error: StoreError) -> Self {
        CommandError::Store(error)
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::Rejected(m) => write!(f, "rejected: {m}"),
            CommandError::InvalidPayload(m) => write!(f, "invalid payload: {m}"),
            CommandError::Store(e) => write!(f, "store: {e}"),
            CommandError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CommandError {}

/// Decides which events a command produces, for one entity type.
pub trait CommandHandler {
    /// The domain, such as `Bank`.
    const DOMAIN: &'static str;
    /// The entity type, such as `Account`.
    const ENTITY_TYPE: &'static str;
    /// The commands, as an externally tagged enum: each variant name is a
    /// command type the handler accepts.
    type Command: DeserializeOwned;
    /// The events, as an externally tagged enum: each variant name is an
    /// event type.
    type Event: Serialize;

    /// Decides. `ctx` reads the command's stream as of the moment the host
    /// started the call; the events returned are appended right after it, or
    /// the host calls `handle` again on the newer state.
    fn handle(
        command: Self::Command,
        ctx: &CommandContext,
    ) -> Result<Vec<Self::Event>, CommandError>;
}

/// A pure fold of an entity's events into a state.
pub trait Projection {
    /// The domain, such as `Bank`.
    const DOMAIN: &'static str;
    /// The entity type, such as `Account`.
    const ENTITY_TYPE: &'static str;
    /// The projection's name, such as `Balance`.
    const NAME: &'static str;
    /// The events it folds, as an externally tagged enum; only these event
    /// types are passed to it.
    type Event: DeserializeOwned;
    /// The state; `Default` is the state before any event.
    type State: Default + Serialize + DeserializeOwned;

    /// Folds one event into the state.
    fn apply(state: &mut Self::State, event: Self::Event, recorded: &RecordedEvent);
}

/// Folds `events` into `state` with projection `P`, skipping event types `P`
/// does not declare.
pub fn fold<P: Projection>(
    state: &mut P::State,
    events: &[RecordedEvent],
) -> serde_json::Result<()> {
    let declared = variant_names::<P::Event>();
    events
        .iter()
        .try_for_each(|recorded| fold_declared::<P>(state, recorded, declared))
}

/// Folds `recorded` into `state` with projection `P` if its type is one of
/// `declared`, `P`'s event types.
fn fold_declared<P: Projection>(
    state: &mut P::State,
    recorded: &RecordedEvent,
    declared: &[&str],
) -> serde_json::Result<()> {
    if declared.contains(&recorded.event_type.as_str()) {
        P::apply(state, recorded.decode()?, recorded);
    }
    Ok(())
}

/// Exports command handlers, projections and notification handlers as the
/// component's `cqrs-wasi:handlers` exports. Each list is optional.
///
/// ```ignore
/// cqrs_wasi::export_component! {
///     commands: [Account],
///     projections: [Balance],
///     notifications: [WelcomeNewAccounts],
/// }
/// ```
///
/// On targets other than wasm32 it expands to nothing, so the same crate
/// builds natively for unit tests.
#[macro_export]
macro_rules! export_component {
    (
        $(commands: [$($command:ty),* $(,)?] $(,)?)?
        $(projections: [$($projection:ty),* $(,)?] $(,)?)?
        $(notifications: [$($notification:ty),* $(,)?] $(,)?)?
    ) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Component;

            impl $crate::__private::Component for Component {
                fn command_routes() -> ::std::vec::Vec<$crate::__private::CommandRoutes> {
                    ::std::vec![$($($crate::__private::command_routes::<$command>()),*)?]
                }

                fn handle(
                    command: $crate::__private::Command,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<$crate::__private::NewEvent>,
                    $crate::__private::CommandError,
                > {
                    $($(
                        if $crate::__private::handles::<$command>(&command) {
                            return $crate::__private::handle::<$command>(command);
                        }
                    )*)?
                    ::std::result::Result::Err($crate::__private::unrouted(&command))
                }

                fn projections() -> ::std::vec::Vec<$crate::__private::ProjectionInfo> {
                    ::std::vec![$($($crate::__private::projection_info::<$projection>()),*)?]
                }

                fn apply(
                    projection: $crate::__private::ProjectionId,
                    state: ::std::option::Option<::std::vec::Vec<u8>>,
                    batch: $crate::__private::EventBatch,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, $crate::__private::ProjectionError> {
                    $($(
                        if $crate::__private::is::<$projection>(&projection) {
                            return $crate::__private::apply::<$projection>(state, batch);
                        }
                    )*)?
                    ::std::result::Result::Err($crate::__private::unknown_projection(&projection))
                }

                fn subscriptions() -> ::std::vec::Vec<$crate::__private::Subscription> {
                    ::std::vec![$($($crate::__private::subscription::<$notification>()),*)?]
                }

                fn notify(
                    subscription: ::std::string::String,
                    notification: $crate::__private::Notification,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $($(
                        if subscription == <$notification as $crate::NotificationHandler>::NAME {
                            return $crate::__private::notify::<$notification>(notification);
                        }
                    )*)?
                    ::std::result::Result::Err($crate::__private::unknown_subscription(&subscription))
                }
            }

            $crate::__private::bindings::__export_domain_component!(Component with_types_in $crate::__private::bindings);
        };
    };
}

/// Used by [`export_component!`]; not a public API.
#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub mod __private {
    pub use crate::guest::*;
    pub use wit_bindgen;
}
