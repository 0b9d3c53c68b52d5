//! The notification model: the three kinds of notification, their
//! deterministic ids, and their wire form in the Event Grid schema and in
//! CloudEvents 1.0.
//!
//! This module is the one place that knows the wire contract of DESIGN.md
//! ("Notifications"): the `eventType` and `subject` formats, the `data`
//! fields, `dataVersion`, the id derivation and the 1 MB rule. It turns the
//! host's own types ([`RecordedEvent`], [`StreamId`], a projection's state)
//! into [`Notification`]s and those into JSON. It does no I/O and holds no
//! state: the same inputs always give byte-for-byte the same JSON, which is
//! what lets a retried publish, a redelivery after a crash and a recomputed
//! projection carry the same id and the same content.
//!
//! # Kinds
//!
//! | [`NotificationKind`] | `notificationKind` | `eventType` | `subject` |
//! |---|---|---|---|
//! | new entity | `"NewEntity"` | `{Domain}.{EntityType}.NewEntity` | `eventsourcing/{Domain/as/path}/{EntityType}/NewEntity/{InstanceKey}` |
//! | event appended | `"EventAppended"` | `{Domain}.{EntityType}.{EventType}` | `eventsourcing/{Domain/as/path}/{EntityType}/{EventType}/{InstanceKey}` |
//! | projection completed | `"ProjectionCompleted"` | `{Domain}.{EntityType}.Projection.{ProjectionType}` | `eventsourcing/{Domain/as/path}/{EntityType}/Projection.{ProjectionType}/{InstanceKey}` |
//!
//! A custom event a notification handler publishes
//! ([`NotificationKind::Published`]) has none of these formats: its
//! `eventType`, `subject` and `data` are the handler's (see [`Published`]).
//!
//! A dotted domain keeps its dots in `eventType` (`Retail.Bank.Account.NewEntity`)
//! and turns them into path levels in `subject`
//! (`eventsourcing/Retail/Bank/Account/NewEntity/acc-1`), so that a
//! subscriber can filter on any level with "subject begins with".
//!
//! # `data`
//!
//! camelCase, always in this order:
//!
//! - every kind: `notificationId`, `notificationKind`, `domainName`,
//!   `entityTypeName`, `instanceKey`, `correlationId`, `causationId`,
//!   `commentary` (the last three are `null` when the context has none, so
//!   the shape never varies);
//! - event appended, then: `eventType`, `sequenceNumber`, `eventPayload`,
//!   `writtenAt`;
//! - projection completed, then: `projectionTypeName`, `sequenceNumber` (the
//!   last sequence the state reflects), `asOfDate`, `value` (the state),
//!   `projectionVersion` (the digest of the projection component's version).
//!
//! `dataVersion` is [`DATA_VERSION`]. Timestamps are RFC 3339 in UTC.
//!
//! # The id
//!
//! `id` (and `data.notificationId`) is a UUID version 5 in the namespace
//! [`NOTIFICATION_NAMESPACE`] of the UTF-8 name
//!
//! ```text
//! {notificationKind}/{domain}/{entityType}/{instanceKey}/{sequence}
//! {notificationKind}/{domain}/{entityType}/{instanceKey}/{sequence}/{projectionType}   (projection completed)
//! ```
//!
//! with the domain as written (dots kept) and the sequence in decimal; a new
//! entity's sequence is 1, that of the event that created the stream. No
//! part of a valid name can hold `/`, so the name is unambiguous. For
//! example `EventAppended/Retail.Bank/Account/acc-1/3` or
//! `ProjectionCompleted/Bank/Account/acc-042/7/Balance`. See
//! [`notification_id`]. The projection's version is deliberately not part
//! of the identity: the state of a stream as of a sequence is one fact,
//! whichever version computed it.
//!
//! # The 1 MB rule
//!
//! Event Grid refuses an event over 1 MB. When a notification's JSON in the
//! chosen schema exceeds [`MAX_EVENT_BYTES`], [`Notification::encode`]
//! emits it without `data.eventPayload` (event appended) or `data.value`
//! (projection completed) and adds `"payloadOmitted": true` to `data`. The
//! flag is absent otherwise, so a notification that fits has exactly the
//! fields listed above. A receiver of a flagged notification reads the event
//! or runs the projection itself (stream and sequence are in `data`).
//!
//! # Traces
//!
//! A notification carries the `traceparent` its event's context recorded
//! (the span of the command that appended it), outside `data`, whose
//! fields are fixed: in CloudEvents as the distributed tracing extension
//! attribute `traceparent` (absent when there is none); in the Event Grid
//! schema, which has no place for it, only as the publish request's header
//! (`eventgrid.rs`). It is stored with the event, so every copy of a
//! notification carries the same one.

use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use uuid::{Uuid, uuid};

pub use crate::model::NotificationKind;
use crate::model::{EventContext, NameError, ProjectionType, RecordedEvent, StreamId, TraceParent};

/// The namespace of every notification id (UUID v5). Fixed forever: changing
/// it would change every id and defeat deduplication across versions.
pub const NOTIFICATION_NAMESPACE: Uuid = uuid!("208d8e4b-0aec-451b-9e21-ad92e78a00b8");

/// The `dataVersion` of every notification: the version of the `data` shape.
pub const DATA_VERSION: &str = "1.0";

/// The largest serialized event sent with its payload, in bytes.
///
/// Event Grid documents its limits on one event and on one publish request
/// (a JSON array of events) both as "1 MB". We read that as 10^6 bytes, the
/// stricter of the two readings, so a notification that fits here fits
/// whichever one the service applies. An event must also fit in a request
/// of its own, `[` and `]` around it: so 10^6 − 2 bytes. A larger event
/// could be neither refused by size here nor ever sent.
pub const MAX_EVENT_BYTES: usize = 1_000_000 - 2;

/// The `data` field added (with `true`) when the payload was left out.
pub const PAYLOAD_OMITTED_FIELD: &str = "payloadOmitted";

/// The CloudEvents `datacontenttype` of every notification.
const DATA_CONTENT_TYPE: &str = "application/json";

/// The CloudEvents spec version this module emits.
const CLOUDEVENTS_SPEC_VERSION: &str = "1.0";

/// Why a notification could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    /// A name (the projection type) is malformed.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// A new-entity notification was asked for an event that did not create
    /// its stream.
    #[error("event {sequence} of {stream} did not create the stream (only event 1 does)")]
    NotStreamCreation {
        /// The event's stream.
        stream: StreamId,
        /// The event's sequence.
        sequence: u64,
    },
    /// A timestamp is outside what RFC 3339 can write (years 0 to 9999).
    #[error("the {field} of a notification cannot be written in RFC 3339: {reason}")]
    UnrepresentableTime {
        /// Which timestamp.
        field: &'static str,
        /// The formatter's explanation.
        reason: String,
    },
}

/// A projection's result, as a projection-completed notification reports it.
///
/// Its JSON (camelCase) is how the outbox keeps it until it is sent.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionCompleted {
    /// The stream the projection ran over.
    pub stream: StreamId,
    /// The projection's name (`Balance`).
    pub projection_type: ProjectionType,
    /// The last sequence the state reflects (0: no events).
    pub sequence: u64,
    /// The point in time the state is as of: the time of the last event it
    /// reflects, or the time asked for by an as-of-time query. It is also
    /// the notification's `eventTime`, so that recomputing the same state
    /// gives the same JSON.
    #[serde(with = "time::serde::rfc3339")]
    pub as_of_date: OffsetDateTime,
    /// The state (JSON).
    pub value: Arc<RawValue>,
    /// The digest of the projection component version that computed it.
    pub projection_version: String,
    /// The request that ran the projection; its correlation id, causation id
    /// and commentary are carried.
    pub context: EventContext,
}

/// A custom event a notification handler published to a topic: unlike the
/// other kinds', its `eventType`, `subject`, `data` and `dataVersion` are
/// the handler's, sent as they are.
///
/// Its JSON (camelCase) is how the outbox keeps it until it is sent.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// The topic (destination) it is for.
    pub topic: String,
    /// The handler's key for it: its id is derived from topic and key.
    pub key: String,
    /// `eventType` / `type`.
    pub event_type: String,
    /// `subject`.
    pub subject: String,
    /// `data`.
    pub data: Arc<RawValue>,
    /// `dataVersion`.
    pub data_version: String,
    /// When it was published: `eventTime` / `time`.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// The trace of the handler call that published it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::model::lenient_traceparent"
    )]
    pub traceparent: Option<TraceParent>,
}

impl Published {
    /// Its id: [`published_id`] of its topic and key.
    pub fn id(&self) -> Uuid {
        published_id(&self.topic, &self.key)
    }
}

/// The id of the event published to `topic` under `key`: the UUID v5 of
/// `Published/{topic}/{key}` in [`NOTIFICATION_NAMESPACE`].
pub fn published_id(topic: &str, key: &str) -> Uuid {
    Uuid::new_v5(
        &NOTIFICATION_NAMESPACE,
        format!("Published/{topic}/{key}").as_bytes(),
    )
}

/// One notification, ready to be encoded in either schema.
///
/// Built only through [`new_entity`](Self::new_entity),
/// [`event_appended`](Self::event_appended),
/// [`projection_completed`](Self::projection_completed) and
/// [`published`](Self::published), so every value has a valid identity, its
/// derived id and representable timestamps.
#[derive(Debug, Clone)]
pub struct Notification {
    id: Uuid,
    /// The stream it is about; `None` for a published custom event.
    stream: Option<StreamId>,
    sequence: u64,
    /// Event Grid `eventType` / CloudEvents `type`.
    event_type: String,
    subject: String,
    /// RFC 3339, UTC: `eventTime` / `time`.
    time: String,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    commentary: Option<String>,
    /// The trace it continues (not part of its identity or its `data`).
    traceparent: Option<TraceParent>,
    body: Body,
}

/// What differs between the kinds.
#[derive(Debug, Clone)]
enum Body {
    NewEntity,
    EventAppended {
        event_type: String,
        payload: Arc<RawValue>,
        written_at: String,
    },
    ProjectionCompleted {
        projection_type: ProjectionType,
        as_of_date: String,
        value: Arc<RawValue>,
        projection_version: String,
    },
    Published {
        data: Arc<RawValue>,
        data_version: String,
    },
}

impl Notification {
    /// The new-entity notification of the event that created its stream.
    ///
    /// Fails unless `first` has sequence 1: only that event creates a stream.
    pub fn new_entity(first: &RecordedEvent) -> Result<Notification, NotificationError> {
        if first.sequence != 1 {
            return Err(NotificationError::NotStreamCreation {
                stream: first.stream.clone(),
                sequence: first.sequence,
            });
        }
        let written_at = rfc3339("writtenAt", first.written_at)?;
        Ok(Notification::build(
            NotificationKind::NewEntity,
            &first.stream,
            first.sequence,
            "NewEntity",
            written_at,
            &first.context,
            Body::NewEntity,
        ))
    }

    /// The event-appended notification of `event`.
    pub fn event_appended(event: &RecordedEvent) -> Result<Notification, NotificationError> {
        let written_at = rfc3339("writtenAt", event.written_at)?;
        Ok(Notification::build(
            NotificationKind::EventAppended,
            &event.stream,
            event.sequence,
            &event.event_type,
            written_at.clone(),
            &event.context,
            Body::EventAppended {
                event_type: event.event_type.to_string(),
                payload: Arc::from(event.payload.clone()),
                written_at,
            },
        ))
    }

    /// The projection-completed notification of a projection's result.
    pub fn projection_completed(
        projection: ProjectionCompleted,
    ) -> Result<Notification, NotificationError> {
        let as_of_date = rfc3339("asOfDate", projection.as_of_date)?;
        Ok(Notification::build(
            NotificationKind::ProjectionCompleted,
            &projection.stream,
            projection.sequence,
            &format!("Projection.{}", projection.projection_type),
            as_of_date.clone(),
            &projection.context,
            Body::ProjectionCompleted {
                projection_type: projection.projection_type,
                as_of_date,
                value: projection.value,
                projection_version: projection.projection_version,
            },
        ))
    }

    /// A custom event a handler published.
    pub fn published(published: Published) -> Result<Notification, NotificationError> {
        let time = rfc3339("time", published.time)?;
        Ok(Notification {
            id: published.id(),
            stream: None,
            sequence: 0,
            event_type: published.event_type,
            subject: published.subject,
            time,
            correlation_id: None,
            causation_id: None,
            commentary: None,
            traceparent: published.traceparent,
            body: Body::Published {
                data: published.data,
                data_version: published.data_version,
            },
        })
    }

    /// The one place that derives the id, `eventType` and `subject`.
    /// `leaf` is what follows the entity type: `NewEntity`, the event type,
    /// or `Projection.{ProjectionType}`.
    fn build(
        kind: NotificationKind,
        stream: &StreamId,
        sequence: u64,
        leaf: &str,
        time: String,
        context: &EventContext,
        body: Body,
    ) -> Notification {
        let projection_type = match &body {
            Body::ProjectionCompleted {
                projection_type, ..
            } => Some(projection_type.as_str()),
            _ => None,
        };
        Notification {
            id: notification_id(kind, stream, sequence, projection_type),
            event_type: format!("{}.{}.{leaf}", stream.domain(), stream.entity_type()),
            subject: format!(
                "eventsourcing/{}/{}/{leaf}/{}",
                stream.domain().replace('.', "/"),
                stream.entity_type(),
                stream.instance_key()
            ),
            stream: Some(stream.clone()),
            sequence,
            time,
            correlation_id: context.correlation_id.clone(),
            causation_id: context.causation_id.clone(),
            commentary: context.commentary.clone(),
            traceparent: context.traceparent.clone(),
            body,
        }
    }

    /// The deterministic id (see the [module docs](self)).
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Which kind it is.
    pub fn kind(&self) -> NotificationKind {
        match self.body {
            Body::NewEntity => NotificationKind::NewEntity,
            Body::EventAppended { .. } => NotificationKind::EventAppended,
            Body::ProjectionCompleted { .. } => NotificationKind::ProjectionCompleted,
            Body::Published { .. } => NotificationKind::Published,
        }
    }

    /// The stream it is about; `None` for a published custom event.
    pub fn stream(&self) -> Option<&StreamId> {
        self.stream.as_ref()
    }

    /// The sequence it is about: 1 for a new entity, the event's for an
    /// appended event, the as-of sequence for a projection.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The projection's name, for a projection-completed notification.
    pub fn projection_type(&self) -> Option<&ProjectionType> {
        match &self.body {
            Body::ProjectionCompleted {
                projection_type, ..
            } => Some(projection_type),
            _ => None,
        }
    }

    /// Event Grid `eventType` (CloudEvents `type`): `Bank.Account.MoneyDeposited`.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// `subject`: `eventsourcing/Bank/Account/MoneyDeposited/acc-042`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// `eventTime` (CloudEvents `time`), RFC 3339 in UTC.
    pub fn time(&self) -> &str {
        &self.time
    }

    /// The `traceparent` of the span that raised it: sent as the
    /// CloudEvents `traceparent` extension, and the parent of the spans
    /// that deliver it.
    pub fn traceparent(&self) -> Option<&TraceParent> {
        self.traceparent.as_ref()
    }

    /// Its `data` object, whole (payload included), as local handlers get it.
    pub fn data(&self) -> Box<RawValue> {
        let data = Data {
            notification: self,
            omit_payload: false,
        };
        // As in `render`: nothing in `data` can fail to serialize.
        serde_json::value::to_raw_value(&data).expect("notification data always serializes")
    }

    /// The JSON of this notification in `schema`, with the 1 MB rule
    /// applied: if it is larger than [`MAX_EVENT_BYTES`] and has a payload,
    /// the payload is left out and `data.payloadOmitted` is `true`. One that
    /// is still too large (a megabyte of commentary) is returned as it is:
    /// Event Grid refuses it with 413 and it is dead-lettered like any other
    /// refused notification.
    pub fn encode(&self, schema: &EventSchema) -> EncodedNotification {
        let full = self.render(schema, false);
        let has_payload = matches!(
            self.body,
            Body::EventAppended { .. } | Body::ProjectionCompleted { .. }
        );
        if full.len() <= MAX_EVENT_BYTES || !has_payload {
            return EncodedNotification {
                id: self.id,
                json: full,
                payload_omitted: false,
            };
        }
        EncodedNotification {
            id: self.id,
            json: self.render(schema, true),
            payload_omitted: true,
        }
    }

    fn render(&self, schema: &EventSchema, omit_payload: bool) -> String {
        let data = Data {
            notification: self,
            omit_payload,
        };
        let data_version = match &self.body {
            Body::Published { data_version, .. } => data_version,
            _ => DATA_VERSION,
        };
        let json = match schema {
            EventSchema::EventGrid => serde_json::to_string(&EventGridEvent {
                id: self.id,
                event_type: &self.event_type,
                subject: &self.subject,
                event_time: &self.time,
                data,
                data_version,
            }),
            EventSchema::CloudEvents { source } => serde_json::to_string(&CloudEvent {
                specversion: CLOUDEVENTS_SPEC_VERSION,
                event_type: &self.event_type,
                source,
                subject: &self.subject,
                id: self.id,
                time: &self.time,
                datacontenttype: DATA_CONTENT_TYPE,
                traceparent: self.traceparent.as_ref(),
                data,
            }),
        };
        // Only strings, integers, UUIDs and already-valid JSON (RawValue)
        // go in, and every map key is a string: serde_json cannot fail here.
        json.expect("a notification always serializes")
    }
}

/// The id of the notification with this identity (see the
/// [module docs](self) for the exact name hashed). `projection_type` is
/// given for [`NotificationKind::ProjectionCompleted`] only. A published
/// event's id is not derived from a stream: see [`published_id`].
pub fn notification_id(
    kind: NotificationKind,
    stream: &StreamId,
    sequence: u64,
    projection_type: Option<&str>,
) -> Uuid {
    let mut name = format!(
        "{kind}/{}/{}/{}/{sequence}",
        stream.domain(),
        stream.entity_type(),
        stream.instance_key()
    );
    if let Some(projection_type) = projection_type {
        name.push('/');
        name.push_str(projection_type);
    }
    Uuid::new_v5(&NOTIFICATION_NAMESPACE, name.as_bytes())
}

/// The event schema a topic takes, chosen per topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSchema {
    /// The Event Grid event schema: `id`, `eventType`, `subject`,
    /// `eventTime`, `data`, `dataVersion` (`topic` omitted: Event Grid fills
    /// it in for a topic endpoint).
    EventGrid,
    /// CloudEvents 1.0, JSON structured mode: `specversion`, `type`,
    /// `source`, `subject`, `id`, `time`, `datacontenttype`, `data`.
    CloudEvents {
        /// The `source` attribute: a URI reference naming this host or
        /// domain, configured per topic (`/cqrs-wasi/bank`).
        source: String,
    },
}

/// A notification's JSON in one schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedNotification {
    /// The notification's id.
    pub id: Uuid,
    /// One JSON object (an element of a publish request's array).
    pub json: String,
    /// Whether the payload was left out by the 1 MB rule.
    pub payload_omitted: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventGridEvent<'a> {
    id: Uuid,
    event_type: &'a str,
    subject: &'a str,
    event_time: &'a str,
    data: Data<'a>,
    data_version: &'a str,
}

#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    #[serde(rename = "type")]
    event_type: &'a str,
    source: &'a str,
    subject: &'a str,
    id: Uuid,
    time: &'a str,
    datacontenttype: &'static str,
    /// The distributed tracing extension.
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a TraceParent>,
    data: Data<'a>,
}

/// `data`, written by hand so that the field order is fixed and the
/// optional payload and flag are explicit.
struct Data<'a> {
    notification: &'a Notification,
    omit_payload: bool,
}

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let n = self.notification;
        let Some(stream) = &n.stream else {
            // A published custom event: its data as the handler wrote it.
            return match &n.body {
                Body::Published { data, .. } => data.serialize(serializer),
                _ => Err(serde::ser::Error::custom("a notification without a stream")),
            };
        };
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("notificationId", &n.id)?;
        map.serialize_entry("notificationKind", n.kind().as_str())?;
        map.serialize_entry("domainName", stream.domain())?;
        map.serialize_entry("entityTypeName", stream.entity_type())?;
        map.serialize_entry("instanceKey", stream.instance_key())?;
        map.serialize_entry("correlationId", &n.correlation_id)?;
        map.serialize_entry("causationId", &n.causation_id)?;
        map.serialize_entry("commentary", &n.commentary)?;
        match &n.body {
            Body::NewEntity => {}
            Body::EventAppended {
                event_type,
                payload,
                written_at,
            } => {
                map.serialize_entry("eventType", event_type)?;
                map.serialize_entry("sequenceNumber", &n.sequence)?;
                if !self.omit_payload {
                    map.serialize_entry("eventPayload", payload)?;
                }
                map.serialize_entry("writtenAt", written_at)?;
            }
            Body::ProjectionCompleted {
                projection_type,
                as_of_date,
                value,
                projection_version,
            } => {
                map.serialize_entry("projectionTypeName", projection_type)?;
                map.serialize_entry("sequenceNumber", &n.sequence)?;
                map.serialize_entry("asOfDate", as_of_date)?;
                if !self.omit_payload {
                    map.serialize_entry("value", value)?;
                }
                map.serialize_entry("projectionVersion", projection_version)?;
            }
            Body::Published { .. } => {}
        }
        if self.omit_payload {
            map.serialize_entry(PAYLOAD_OMITTED_FIELD, &true)?;
        }
        map.end()
    }
}

/// `time` in RFC 3339, in UTC. Formatted once, at construction, so that
/// encoding cannot fail.
fn rfc3339(field: &'static str, time: OffsetDateTime) -> Result<String, NotificationError> {
    time.to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| NotificationError::UnrepresentableTime {
            field,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::model::EventType;

    fn datetime(rfc3339: &str) -> OffsetDateTime {
        OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap()
    }

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn context() -> EventContext {
        EventContext {
            correlation_id: Some("corr-1".into()),
            causation_id: Some("cmd-1".into()),
            who: Some("ada".into()),
            source: Some("http".into()),
            commentary: Some("opening day".into()),
            handler_version: Some("sha256:abc".into()),
            traceparent: None,
        }
    }

    fn event(domain: &str, sequence: u64, event_type: &str, payload: &str) -> RecordedEvent {
        RecordedEvent {
            stream: StreamId::new(domain, "Account", "acc-042").unwrap(),
            event_id: uuid!("11111111-2222-4333-8444-555555555555"),
            event_type: EventType::new(event_type).unwrap(),
            sequence,
            position: 17,
            written_at: datetime("2024-05-01T10:00:00.123456+02:00"),
            payload: raw(payload),
            context: context(),
        }
    }

    fn projection(domain: &str, sequence: u64, value: &str) -> ProjectionCompleted {
        ProjectionCompleted {
            stream: StreamId::new(domain, "Account", "acc-042").unwrap(),
            projection_type: ProjectionType::new("Balance").expect("a valid name"),
            sequence,
            as_of_date: datetime("2024-05-01T08:05:00Z"),
            value: Arc::from(raw(value)),
            projection_version: "sha256:def".into(),
            context: EventContext::default(),
        }
    }

    fn cloud_events() -> EventSchema {
        EventSchema::CloudEvents {
            source: "/cqrs-wasi/test".into(),
        }
    }

    fn encoded(notification: &Notification, schema: &EventSchema) -> Value {
        serde_json::from_str(&notification.encode(schema).json).unwrap()
    }

    fn id_of(name: &str) -> String {
        Uuid::new_v5(&NOTIFICATION_NAMESPACE, name.as_bytes()).to_string()
    }

    /// Every kind's common `data` fields, followed by `rest`.
    fn common_data(kind: &str, id: &str, domain: &str, rest: Value) -> Value {
        let mut data = json!({
            "notificationId": id,
            "notificationKind": kind,
            "domainName": domain,
            "entityTypeName": "Account",
            "instanceKey": "acc-042",
            "correlationId": "corr-1",
            "causationId": "cmd-1",
            "commentary": "opening day",
        });
        data.as_object_mut()
            .unwrap()
            .extend(rest.as_object().unwrap().clone());
        data
    }

    #[test]
    fn new_entity_in_both_schemas() {
        let n = Notification::new_entity(&event("Retail.Bank", 1, "AccountOpened", "{}")).unwrap();
        let id = id_of("NewEntity/Retail.Bank/Account/acc-042/1");
        let data = common_data("NewEntity", &id, "Retail.Bank", json!({}));
        assert_eq!(
            encoded(&n, &EventSchema::EventGrid),
            json!({
                "id": id,
                "eventType": "Retail.Bank.Account.NewEntity",
                "subject": "eventsourcing/Retail/Bank/Account/NewEntity/acc-042",
                "eventTime": "2024-05-01T08:00:00.123456Z",
                "data": data,
                "dataVersion": "1.0",
            })
        );
        assert_eq!(
            encoded(&n, &cloud_events()),
            json!({
                "specversion": "1.0",
                "type": "Retail.Bank.Account.NewEntity",
                "source": "/cqrs-wasi/test",
                "subject": "eventsourcing/Retail/Bank/Account/NewEntity/acc-042",
                "id": id,
                "time": "2024-05-01T08:00:00.123456Z",
                "datacontenttype": "application/json",
                "data": data,
            })
        );
    }

    #[test]
    fn event_appended_in_both_schemas() {
        let n =
            Notification::event_appended(&event("Bank", 3, "MoneyDeposited", r#"{"amount": 10}"#))
                .unwrap();
        let id = id_of("EventAppended/Bank/Account/acc-042/3");
        let data = common_data(
            "EventAppended",
            &id,
            "Bank",
            json!({
                "eventType": "MoneyDeposited",
                "sequenceNumber": 3,
                "eventPayload": {"amount": 10},
                "writtenAt": "2024-05-01T08:00:00.123456Z",
            }),
        );
        assert_eq!(
            encoded(&n, &EventSchema::EventGrid),
            json!({
                "id": id,
                "eventType": "Bank.Account.MoneyDeposited",
                "subject": "eventsourcing/Bank/Account/MoneyDeposited/acc-042",
                "eventTime": "2024-05-01T08:00:00.123456Z",
                "data": data,
                "dataVersion": "1.0",
            })
        );
        assert_eq!(
            encoded(&n, &cloud_events()),
            json!({
                "specversion": "1.0",
                "type": "Bank.Account.MoneyDeposited",
                "source": "/cqrs-wasi/test",
                "subject": "eventsourcing/Bank/Account/MoneyDeposited/acc-042",
                "id": id,
                "time": "2024-05-01T08:00:00.123456Z",
                "datacontenttype": "application/json",
                "data": data,
            })
        );
    }

    #[test]
    fn projection_completed_in_both_schemas() {
        let n = Notification::projection_completed(projection(
            "Retail.Bank",
            7,
            r#"{"balance": 10, "open": true}"#,
        ))
        .unwrap();
        let id = id_of("ProjectionCompleted/Retail.Bank/Account/acc-042/7/Balance");
        let data = json!({
            "notificationId": id,
            "notificationKind": "ProjectionCompleted",
            "domainName": "Retail.Bank",
            "entityTypeName": "Account",
            "instanceKey": "acc-042",
            "correlationId": null,
            "causationId": null,
            "commentary": null,
            "projectionTypeName": "Balance",
            "sequenceNumber": 7,
            "asOfDate": "2024-05-01T08:05:00Z",
            "value": {"balance": 10, "open": true},
            "projectionVersion": "sha256:def",
        });
        assert_eq!(
            encoded(&n, &EventSchema::EventGrid),
            json!({
                "id": id,
                "eventType": "Retail.Bank.Account.Projection.Balance",
                "subject": "eventsourcing/Retail/Bank/Account/Projection.Balance/acc-042",
                "eventTime": "2024-05-01T08:05:00Z",
                "data": data,
                "dataVersion": "1.0",
            })
        );
        assert_eq!(
            encoded(&n, &cloud_events()),
            json!({
                "specversion": "1.0",
                "type": "Retail.Bank.Account.Projection.Balance",
                "source": "/cqrs-wasi/test",
                "subject": "eventsourcing/Retail/Bank/Account/Projection.Balance/acc-042",
                "id": id,
                "time": "2024-05-01T08:05:00Z",
                "datacontenttype": "application/json",
                "data": data,
            })
        );
    }

    #[test]
    fn the_trace_goes_in_the_cloudevents_extension_never_in_data() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut traced = event("Bank", 2, "MoneyDeposited", r#"{"amount": 5}"#);
        traced.context.traceparent = Some(parent.parse().unwrap());
        let notification = Notification::event_appended(&traced).unwrap();
        let cloud = encoded(&notification, &cloud_events());
        assert_eq!(cloud["traceparent"], parent);
        let grid = encoded(&notification, &EventSchema::EventGrid);
        assert!(grid.get("traceparent").is_none(), "{grid}");
        for json in [&cloud, &grid] {
            assert!(!json["data"].to_string().contains(parent), "{json}");
        }
        // Everything but the extension is as it is without a trace.
        let untraced =
            Notification::event_appended(&event("Bank", 2, "MoneyDeposited", r#"{"amount": 5}"#))
                .unwrap();
        let mut cloud = cloud;
        cloud.as_object_mut().unwrap().remove("traceparent");
        assert_eq!(cloud, encoded(&untraced, &cloud_events()));
        assert_eq!(grid, encoded(&untraced, &EventSchema::EventGrid));
    }

    #[test]
    fn field_order_is_fixed() {
        let n = Notification::event_appended(&event("Bank", 2, "MoneyDeposited", "{}")).unwrap();
        let json = n.encode(&EventSchema::EventGrid).json;
        let positions: Vec<usize> = [
            "\"id\"",
            "\"eventType\"",
            "\"subject\"",
            "\"eventTime\"",
            "\"data\"",
            "\"notificationId\"",
            "\"writtenAt\"",
            "\"dataVersion\"",
        ]
        .iter()
        .map(|field| json.find(field).unwrap())
        .collect();
        assert!(positions.is_sorted(), "{json}");
        // Encoding is deterministic, byte for byte.
        assert_eq!(json, n.clone().encode(&EventSchema::EventGrid).json);
    }

    #[test]
    fn ids_are_stable_and_tell_identities_apart() {
        let stream = StreamId::new("Bank", "Account", "acc-042").unwrap();
        let appended = |sequence| {
            Notification::event_appended(&event("Bank", sequence, "MoneyDeposited", "{}"))
                .unwrap()
                .id()
        };
        // Same identity, same id; whatever the payload, time or context.
        assert_eq!(appended(2), appended(2));
        let mut other = event("Bank", 2, "MoneyWithdrawn", r#"{"amount": 5}"#);
        other.written_at = datetime("2030-01-01T00:00:00Z");
        other.context = EventContext::default();
        assert_eq!(
            Notification::event_appended(&other).unwrap().id(),
            appended(2)
        );
        // A different sequence, kind or projection type: a different id.
        assert_ne!(appended(2), appended(3));
        let first = event("Bank", 1, "AccountOpened", "{}");
        assert_ne!(
            Notification::new_entity(&first).unwrap().id(),
            Notification::event_appended(&first).unwrap().id()
        );
        let balance = |projection_type: &str| {
            let mut p = projection("Bank", 1, "{}");
            p.projection_type = ProjectionType::new(projection_type).unwrap();
            Notification::projection_completed(p).unwrap().id()
        };
        assert_eq!(balance("Balance"), balance("Balance"));
        assert_ne!(balance("Balance"), balance("Statement"));
        assert_ne!(
            balance("Balance"),
            Notification::event_appended(&first).unwrap().id()
        );
        // The documented name, in a fixed namespace: other implementations
        // can reproduce it (the literal was computed with Python's uuid5).
        assert_eq!(
            notification_id(NotificationKind::EventAppended, &stream, 3, None).to_string(),
            id_of("EventAppended/Bank/Account/acc-042/3")
        );
        assert_eq!(
            notification_id(NotificationKind::NewEntity, &stream, 1, None),
            uuid!("23a0a75d-ea96-5c10-8136-79ed62a3f125")
        );
    }

    #[test]
    fn oversized_notifications_go_without_their_payload() {
        let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(MAX_EVENT_BYTES));
        for schema in [EventSchema::EventGrid, cloud_events()] {
            let appended = Notification::event_appended(&event("Bank", 4, "Blob", &big)).unwrap();
            let out = appended.encode(&schema);
            assert!(out.payload_omitted);
            assert!(out.json.len() <= MAX_EVENT_BYTES);
            let value: Value = serde_json::from_str(&out.json).unwrap();
            let data = &value["data"];
            assert_eq!(data["payloadOmitted"], json!(true));
            assert!(data.get("eventPayload").is_none());
            assert_eq!(data["sequenceNumber"], json!(4));
            assert_eq!(value["id"], json!(appended.id()));

            let projected =
                Notification::projection_completed(projection("Bank", 4, &big)).unwrap();
            let out = projected.encode(&schema);
            assert!(out.payload_omitted);
            let value: Value = serde_json::from_str(&out.json).unwrap();
            assert_eq!(value["data"]["payloadOmitted"], json!(true));
            assert!(value["data"].get("value").is_none());
        }
        // Just under the limit: sent whole, no flag.
        let small = Notification::event_appended(&event("Bank", 4, "Blob", "{}")).unwrap();
        let out = small.encode(&EventSchema::EventGrid);
        assert!(!out.payload_omitted);
        assert!(!out.json.contains("payloadOmitted"));
    }

    #[test]
    fn only_the_first_event_creates_an_entity() {
        let err = Notification::new_entity(&event("Bank", 2, "MoneyDeposited", "{}")).unwrap_err();
        assert!(matches!(
            err,
            NotificationError::NotStreamCreation { sequence: 2, .. }
        ));
    }
}
