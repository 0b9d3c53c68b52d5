//! Notifications: the change feed and state propagation of DESIGN.md
//! ("Notifications" and "Delivery guarantees").
//!
//! This module owns:
//!
//! - [`model`]: what a notification *is* — its kinds, its
//!   deterministic id, its `eventType` / `subject` / `data`, and its exact
//!   JSON in the Event Grid schema and in CloudEvents 1.0, including the
//!   1 MB rule (a too-large notification goes out without its payload and
//!   flagged).
//! - [`raise`]: which kinds are raised, per domain and entity type.
//! - [`sink`]: the contract of a destination, and per-notification outcomes
//!   that tell delivered, dead-lettered and gave-up apart.
//! - [`eventgrid`]: the client side of publishing to an Event Grid topic —
//!   authentication, batching under 1 MB, retries with backoff.
//! - [`dispatch`]: draining the store's outbox to the destinations, a task
//!   and a checkpoint each, dead letters and their re-drive, and delivery
//!   metrics; `round` is one round of one destination, which moves its
//!   checkpoint as the sink reports.
//! - `retention`: pruning what every destination has delivered, once it
//!   is older than the retention.
//!
//! What it must not do: decide *when* a notification is raised (the host
//! does, and the store writes the outbox rows in the transaction of the
//! events), or run handlers: local notification handlers are a sink the
//! host supplies. Only [`dispatch`] and its rounds keep state, and only in the store, so
//! a crash loses nothing the outbox has not already made durable.

pub mod dispatch;
pub mod eventgrid;
pub(crate) mod follow;
pub mod model;
pub mod raise;
pub(crate) mod retention;
mod round;
pub mod sink;

pub use crate::model::KindSet;
pub use dispatch::{Destination, DestinationStatus, Dispatcher, RedriveError};
pub use eventgrid::{
    Auth, EventGridConfig, EventGridPublisher, PublishReport, PublisherError, RetryPolicy, Secret,
};
pub use model::{
    EncodedNotification, EventSchema, Notification, NotificationError, NotificationKind,
    ProjectionCompleted, notification_id,
};
pub use raise::{RaisePolicy, RaiseRule};
pub use sink::{DeliveryOutcome, NotificationOutcome, NotificationSink, Progress};
