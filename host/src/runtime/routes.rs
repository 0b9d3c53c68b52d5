//! What a component version declares it handles (from its `describe`), as
//! the registry routes by it: command types, projections with the event
//! types they fold, notification subscriptions with Event Grid's filters.
//!
//! Plain data, shared by wasm components and native handlers; it must not
//! call into either.

use crate::model::{CommandType, Domain, EntityType, EventType, ProjectionType};

/// A command type a component handles.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandRoute {
    /// `Bank`.
    pub domain: Domain,
    /// `Account`.
    pub entity_type: EntityType,
    /// `Deposit`.
    pub command_type: CommandType,
}

/// A projection a component computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionRoute {
    /// `Bank`.
    pub domain: Domain,
    /// `Account`.
    pub entity_type: EntityType,
    /// `Balance`.
    pub projection_type: ProjectionType,
    /// The event types it folds; the host passes it no others.
    pub event_types: Vec<EventType>,
}

/// A notification handler's subscription, with Event Grid's filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRoute {
    /// Names the handler within its component.
    pub name: String,
    /// Only these event types (case-insensitive); empty: all.
    pub included_event_types: Vec<String>,
    /// Only subjects beginning with this (case-insensitive).
    pub subject_begins_with: Option<String>,
    /// Only subjects ending with this (case-insensitive).
    pub subject_ends_with: Option<String>,
}

impl SubscriptionRoute {
    /// Whether a notification of `event_type` about `subject` matches.
    pub fn matches(&self, event_type: &str, subject: &str) -> bool {
        let starts = |text: &str, prefix: &str| {
            text.len() >= prefix.len()
                && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        };
        let ends = |text: &str, suffix: &str| {
            text.len() >= suffix.len()
                && text.as_bytes()[text.len() - suffix.len()..]
                    .eq_ignore_ascii_case(suffix.as_bytes())
        };
        (self.included_event_types.is_empty()
            || self
                .included_event_types
                .iter()
                .any(|t| t.eq_ignore_ascii_case(event_type)))
            && self
                .subject_begins_with
                .as_deref()
                .is_none_or(|p| starts(subject, p))
            && self
                .subject_ends_with
                .as_deref()
                .is_none_or(|s| ends(subject, s))
    }
}
