//! The vocabulary every layer shares: stream identity, events, expectations,
//! notification kinds.
//!
//! This module owns name validation, so a [`StreamId`] that exists is a valid
//! one. It knows nothing of wasm, storage or HTTP.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

/// The longest name (domain, entity type, instance key, type name) accepted.
pub const MAX_NAME_BYTES: usize = 128;

/// Event type names that the notification subjects reserve.
pub const RESERVED_EVENT_TYPES: [&str; 2] = ["NewEntity", "Projection"];

/// Which part of an identity a name is, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// `Bank`, `Retail.Bank`.
    Domain,
    /// `Account`.
    EntityType,
    /// `acc-042`, `user@example.com`.
    InstanceKey,
    /// `MoneyDeposited`.
    EventType,
    /// `Deposit`.
    CommandType,
    /// `Balance`.
    ProjectionType,
    /// A caller-chosen command id (`Idempotency-Key`).
    CommandId,
    /// The name a component is deployed under.
    ComponentName,
    /// The name of a notification handler's subscription.
    SubscriptionName,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Domain => "domain",
            NameKind::EntityType => "entity type",
            NameKind::InstanceKey => "instance key",
            NameKind::EventType => "event type",
            NameKind::CommandType => "command type",
            NameKind::ProjectionType => "projection type",
            NameKind::CommandId => "command id",
            NameKind::ComponentName => "component name",
            NameKind::SubscriptionName => "subscription name",
        })
    }
}

/// A name that failed validation; nothing was read or written because of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {name:?}: {reason}")]
pub struct NameError {
    /// What the name was meant to be.
    pub kind: NameKind,
    /// The offending name, cut to a printable length.
    pub name: String,
    /// Why it was refused.
    pub reason: &'static str,
}

/// Checks that `name` is a valid name of the given kind.
///
/// All names hold ASCII letters, digits, `_` and `-`, and at most
/// [`MAX_NAME_BYTES`] bytes. A domain may also hold `.` between parts
/// (`Retail.Bank`); an instance key and a command id may also hold `.`, `:`
/// and `@`. Event types may not be one of [`RESERVED_EVENT_TYPES`].
pub fn validate_name(kind: NameKind, name: &str) -> Result<(), NameError> {
    let refuse = |reason| {
        Err(NameError {
            kind,
            name: name.chars().take(2 * MAX_NAME_BYTES).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("must not be empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return refuse("longer than 128 bytes");
    }
    let extra: &[char] = match kind {
        NameKind::Domain => &['.'],
        NameKind::InstanceKey | NameKind::CommandId => &['.', ':', '@'],
        _ => &[],
    };
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(&c))
    {
        return refuse(match kind {
            NameKind::Domain => "only letters, digits, '_', '-' and '.' are allowed",
            NameKind::InstanceKey | NameKind::CommandId => {
                "only letters, digits, '_', '-', '.', ':' and '@' are allowed"
            }
            _ => "only letters, digits, '_' and '-' are allowed",
        });
    }
    if kind == NameKind::Domain && name.split('.').any(str::is_empty) {
        return refuse("dots must separate non-empty parts");
    }
    if kind == NameKind::EventType && RESERVED_EVENT_TYPES.contains(&name) {
        return refuse("reserved for notifications");
    }
    Ok(())
}

/// Admits a JSON document into the system: it must parse, and every number
/// in it must fit an IEEE 754 double (interoperable JSON, RFC 7493), so that
/// every consumer's JSON library reads what was stored. Every payload and
/// state, from clients and guests alike, comes in through here.
pub fn json_document(bytes: Vec<u8>) -> Result<Box<RawValue>, serde_json::Error> {
    let text = String::from_utf8(bytes).map_err(|e| {
        serde::de::Error::custom(format!(
            "not UTF-8 at byte {}",
            e.utf8_error().valid_up_to()
        ))
    })?;
    serde_json::from_str::<Interoperable>(&text)?;
    RawValue::from_string(text)
}

/// Reads a document without keeping it, failing on numbers a double cannot
/// hold (which `serde_json`'s `RawValue` and `IgnoredAny` let through).
struct Interoperable;

impl<'de> Deserialize<'de> for Interoperable {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(InteroperableVisitor)
    }
}

struct InteroperableVisitor;

impl<'de> serde::de::Visitor<'de> for InteroperableVisitor {
    type Value = Interoperable;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Interoperable, E> {
        Ok(Interoperable)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Interoperable, E> {
        Ok(Interoperable)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Interoperable, E> {
        Ok(Interoperable)
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Interoperable, E> {
        if value.is_finite() {
            Ok(Interoperable)
        } else {
            Err(E::custom("number out of range"))
        }
    }

    fn visit_str<E>(self, _: &str) -> Result<Interoperable, E> {
        Ok(Interoperable)
    }

    fn visit_unit<E>(self) -> Result<Interoperable, E> {
        Ok(Interoperable)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<Interoperable, A::Error> {
        while seq.next_element::<Interoperable>()?.is_some() {}
        Ok(Interoperable)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<Interoperable, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, Interoperable>()?
            .is_some()
        {}
        Ok(Interoperable)
    }
}

/// Identity of an event stream: `domain / entity type / instance key`.
///
/// Constructed only through [`StreamId::new`], so every value is valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamId {
    domain: String,
    entity_type: String,
    instance_key: String,
}

impl StreamId {
    /// Validates the three parts and builds the identity.
    pub fn new(
        domain: impl Into<String>,
        entity_type: impl Into<String>,
        instance_key: impl Into<String>,
    ) -> Result<Self, NameError> {
        let (domain, entity_type, instance_key) =
            (domain.into(), entity_type.into(), instance_key.into());
        validate_name(NameKind::Domain, &domain)?;
        validate_name(NameKind::EntityType, &entity_type)?;
        validate_name(NameKind::InstanceKey, &instance_key)?;
        Ok(StreamId {
            domain,
            entity_type,
            instance_key,
        })
    }

    /// `Bank` in `Bank/Account/acc-042`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `Account` in `Bank/Account/acc-042`.
    pub fn entity_type(&self) -> &str {
        &self.entity_type
    }

    /// `acc-042` in `Bank/Account/acc-042`.
    pub fn instance_key(&self) -> &str {
        &self.instance_key
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Parts {
            domain: String,
            entity_type: String,
            instance_key: String,
        }
        let parts = Parts::deserialize(deserializer)?;
        StreamId::new(parts.domain, parts.entity_type, parts.instance_key)
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.domain, self.entity_type, self.instance_key
        )
    }
}

/// Who and what caused an event; carried from a command to its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EventContext {
    /// Ties together everything that one original request caused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the command (or notification) that directly caused this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The user or system on whose behalf the command ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    /// Where the command came from (`http`, `cli`, a component name, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Free text for humans reading the stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commentary: Option<String>,
    /// Digest of the handler component version that produced the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler_version: Option<String>,
}

/// An event to append. Its id is the idempotency key of the append.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewEvent {
    /// Unique across the store; appending it again is a no-op.
    pub event_id: Uuid,
    /// A validated name, never one of [`RESERVED_EVENT_TYPES`].
    pub event_type: String,
    /// A JSON document.
    pub payload: Box<RawValue>,
}

/// A fresh id for an event or a command: a UUID v7, which begins with the
/// time it was made.
///
/// The stores keep a unique index on event ids and command ids. Random ids
/// (v4) land on a random leaf of those indexes, so every append dirties
/// leaves of its own, which a commit then writes, syncs and checkpoints.
/// Ids that grow with time land at the indexes' right edge, where the
/// appends of a group commit share pages: on SQLite, figure 5 of
/// BENCHMARKS.md went from 14k to 30-33k appends/s.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

impl NewEvent {
    /// An event with a fresh id ([`new_id`]), after validating its type name.
    pub fn new(event_type: impl Into<String>, payload: Box<RawValue>) -> Result<Self, NameError> {
        let event_type = event_type.into();
        validate_name(NameKind::EventType, &event_type)?;
        Ok(NewEvent {
            event_id: new_id(),
            event_type,
            payload,
        })
    }
}

/// An event as the store recorded it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedEvent {
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Unique across the store.
    pub event_id: Uuid,
    /// Its type name.
    pub event_type: String,
    /// 1, 2, 3, ... within its stream, with no gaps.
    pub sequence: u64,
    /// Store-wide, increasing in commit order.
    pub position: u64,
    /// When the store wrote it (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub written_at: OffsetDateTime,
    /// A JSON document.
    pub payload: Box<RawValue>,
    /// Who and what caused it.
    pub context: EventContext,
}

/// What an append requires of the stream's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Expectation {
    /// No requirement.
    Any,
    /// The stream has no events yet.
    NoStream,
    /// The stream has at least one event.
    StreamExists,
    /// The stream's last event has exactly this sequence (0: no events).
    Exact(u64),
}

impl Expectation {
    /// Whether a stream whose last sequence is `current` meets it.
    pub fn is_met_by(self, current: u64) -> bool {
        match self {
            Expectation::Any => true,
            Expectation::NoStream => current == 0,
            Expectation::StreamExists => current > 0,
            Expectation::Exact(expected) => current == expected,
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expectation::Any => f.write_str("any sequence"),
            Expectation::NoStream => f.write_str("no stream"),
            Expectation::StreamExists => f.write_str("an existing stream"),
            Expectation::Exact(sequence) => write!(f, "sequence {sequence}"),
        }
    }
}

/// The kinds of notification, as every layer names them: the store's
/// outbox rows, the raise policy, the dispatcher, and the wire form.
///
/// Their string forms ([`as_str`](Self::as_str)) are stored in the outbox,
/// are `data.notificationKind` and the first part of a notification id's
/// name, so they never change. Every `match` over a kind names each one, so
/// that a new kind makes the compiler point at every place that must decide
/// about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    /// A stream was created (its first event was appended): `"NewEntity"`.
    NewEntity,
    /// An event was appended to a stream: `"EventAppended"`.
    EventAppended,
    /// A projection ran over a stream: `"ProjectionCompleted"`.
    ProjectionCompleted,
    /// A notification handler published a custom event to a topic:
    /// `"Published"`.
    Published,
}

impl NotificationKind {
    /// Every kind, in a fixed order: a set's kinds come in this order, and
    /// so do the outbox rows an append writes for one event.
    pub const ALL: [NotificationKind; 4] = [
        NotificationKind::NewEntity,
        NotificationKind::EventAppended,
        NotificationKind::ProjectionCompleted,
        NotificationKind::Published,
    ];

    /// `"NewEntity"`, `"EventAppended"`, `"ProjectionCompleted"` or
    /// `"Published"`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::NewEntity => "NewEntity",
            NotificationKind::EventAppended => "EventAppended",
            NotificationKind::ProjectionCompleted => "ProjectionCompleted",
            NotificationKind::Published => "Published",
        }
    }

    /// Whether it is part of the change feed: an append writes its outbox
    /// rows, each pointing at an event, in the append's transaction. The
    /// other kinds are documents the host adds later.
    pub fn is_change_feed(self) -> bool {
        match self {
            NotificationKind::NewEntity | NotificationKind::EventAppended => true,
            NotificationKind::ProjectionCompleted | NotificationKind::Published => false,
        }
    }

    /// Whether a stream's changes raise it, as a raise policy decides per
    /// domain and entity type. A published event is not: a notification
    /// handler raises it when it publishes.
    pub fn is_raised_by_streams(self) -> bool {
        match self {
            NotificationKind::NewEntity
            | NotificationKind::EventAppended
            | NotificationKind::ProjectionCompleted => true,
            NotificationKind::Published => false,
        }
    }

    /// The kind's bit in a [`KindSet`].
    const fn bit(self) -> u8 {
        match self {
            NotificationKind::NewEntity => 1,
            NotificationKind::EventAppended => 1 << 1,
            NotificationKind::ProjectionCompleted => 1 << 2,
            NotificationKind::Published => 1 << 3,
        }
    }
}

impl fmt::Display for NotificationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NotificationKind {
    type Err = UnknownNotificationKind;

    /// The inverse of [`as_str`](Self::as_str) (exact, case-sensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NotificationKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownNotificationKind(s.chars().take(64).collect()))
    }
}

/// A string that names no [`NotificationKind`] (cut to a printable length).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown notification kind {0:?}")]
pub struct UnknownNotificationKind(pub String);

/// A set of [`NotificationKind`]s: those a stream raises, which an append
/// carries to the store (it writes the rows of the change-feed kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KindSet(u8);

impl KindSet {
    /// No kind.
    pub const NONE: KindSet = KindSet(0);
    /// Every kind.
    pub const ALL: KindSet = {
        let mut bits = 0;
        let mut index = 0;
        while index < NotificationKind::ALL.len() {
            bits |= NotificationKind::ALL[index].bit();
            index += 1;
        }
        KindSet(bits)
    };

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: NotificationKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// The kinds in the set, in the order of [`NotificationKind::ALL`].
    pub fn iter(self) -> impl Iterator<Item = NotificationKind> {
        NotificationKind::ALL
            .into_iter()
            .filter(move |&kind| self.contains(kind))
    }
}

impl FromIterator<NotificationKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = NotificationKind>>(kinds: I) -> Self {
        KindSet(kinds.into_iter().fold(0, |set, kind| set | kind.bit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_sort_in_the_order_they_were_made() {
        // As the stores index them: as text.
        let ids: Vec<String> = (0..10_000).map(|_| new_id().to_string()).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn stream_names_follow_the_design_rules() {
        assert!(StreamId::new("Retail.Bank", "Account", "user@example.com:1").is_ok());
        assert!(StreamId::new("Bank", "Account", "a/b").is_err());
        assert!(StreamId::new("Bank.", "Account", "a").is_err());
        assert!(StreamId::new("Bank", "Acc.ount", "a").is_err());
        assert!(StreamId::new("Bank", "Account", "x".repeat(129)).is_err());
        assert!(StreamId::new("Bank", "Account", "x".repeat(128)).is_ok());
        assert!(StreamId::new("", "Account", "a").is_err());
        assert!(StreamId::new("Bänk", "Account", "a").is_err());
    }

    #[test]
    fn reserved_event_types_are_refused() {
        let err = validate_name(NameKind::EventType, "NewEntity").unwrap_err();
        assert_eq!(err.reason, "reserved for notifications");
        assert!(validate_name(NameKind::EventType, "MoneyDeposited").is_ok());
    }

    #[test]
    fn json_documents_must_be_interoperable() {
        assert!(json_document(br#"{"a": [1, -2.5e10, "x", null, true]}"#.to_vec()).is_ok());
        // A finding of the `http_command` fuzz target: RawValue admits it.
        for refused in [
            &b"33333E333333333"[..],
            b"[1e400]",
            b"{\"a\": -1e999}",
            b"{",
            b"\xff",
        ] {
            assert!(json_document(refused.to_vec()).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn expectations() {
        assert!(Expectation::NoStream.is_met_by(0));
        assert!(!Expectation::NoStream.is_met_by(1));
        assert!(Expectation::StreamExists.is_met_by(3));
        assert!(Expectation::Exact(3).is_met_by(3));
        assert!(!Expectation::Exact(2).is_met_by(3));
        assert!(Expectation::Any.is_met_by(0));
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in NotificationKind::ALL {
            assert_eq!(kind.as_str().parse::<NotificationKind>().unwrap(), kind);
        }
        assert!("newentity".parse::<NotificationKind>().is_err());
    }

    #[test]
    fn a_kind_set_holds_the_kinds_it_was_made_of_in_a_fixed_order() {
        use NotificationKind::*;
        let set: KindSet = [Published, NewEntity].into_iter().collect();
        assert!(set.contains(NewEntity) && set.contains(Published));
        assert!(!set.contains(EventAppended) && !set.contains(ProjectionCompleted));
        assert_eq!(set.iter().collect::<Vec<_>>(), [NewEntity, Published]);
        assert_eq!(KindSet::NONE.iter().count(), 0);
        assert_eq!(
            KindSet::ALL.iter().collect::<Vec<_>>(),
            NotificationKind::ALL
        );
    }
}
