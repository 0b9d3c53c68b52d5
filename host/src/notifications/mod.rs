//! Notifications: the change feed and state propagation of DESIGN.md
//! ("Notifications" and "Delivery guarantees").
//!
//! This module owns two things:
//!
//! - [`model`]: what a notification *is* — its three kinds, its
//!   deterministic id, its `eventType` / `subject` / `data`, and its exact
//!   JSON in the Event Grid schema and in CloudEvents 1.0, including the
//!   1 MB rule (a too-large notification goes out without its payload and
//!   flagged).
//! - [`eventgrid`]: the client side of publishing to an Event Grid topic —
//!   authentication, batching under 1 MB, retries with backoff, and a
//!   per-notification outcome that tells delivered, dead-lettered and
//!   gave-up apart.
//!
//! What it must not do: touch the store, decide *when* a notification is
//! raised, or remember what was delivered. The outbox, the dispatcher that
//! drains it, the dead-letter list, local notification-handler delivery and
//! the `/api/eventgrid` webhook receiver live elsewhere and build on these
//! types; nothing here keeps state between calls, so a crash loses nothing
//! that the outbox has not already made durable.

pub mod eventgrid;
pub mod model;

pub use eventgrid::{
    Auth, DeliveryOutcome, EventGridConfig, EventGridPublisher, NotificationOutcome, PublishReport,
    PublisherError, RetryPolicy, Secret,
};
pub use model::{
    EncodedNotification, EventSchema, Notification, NotificationError, NotificationKind,
    ProjectionCompleted, notification_id,
};
