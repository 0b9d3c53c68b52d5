//! The Event Grid webhook, `/api/eventgrid`: how notifications from another
//! host (through an Event Grid subscription) reach this host's notification
//! handlers.
//!
//! It answers Event Grid's `SubscriptionValidation` handshake and the
//! CloudEvents `OPTIONS` abuse-protection handshake, accepts one event or an
//! array in either schema, and delivers each to the subscribed handlers. It
//! answers 200 only when every handler succeeded; otherwise 500, so that
//! Event Grid delivers again (handlers see the same notification id, and
//! their commands derive their ids from it).

use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ApiError;
use crate::host::IncomingNotification;
use crate::model::TraceParent;

/// The event type of Event Grid's subscription handshake.
const VALIDATION_EVENT: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";

/// What an Event Grid delivery asks of the webhook.
#[derive(Debug)]
pub enum Delivery {
    /// Prove that this endpoint wants the subscription: echo the code.
    Validation {
        /// The code to echo as `validationResponse`.
        code: String,
    },
    /// Notifications to hand to the handlers.
    Notifications(Vec<IncomingNotification>),
}

/// One event as either schema has it; the fields both need.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent {
    id: String,
    /// CloudEvents: present, and `type`/`time` carry the rest.
    specversion: Option<String>,
    #[serde(rename = "type")]
    cloud_type: Option<String>,
    time: Option<String>,
    /// Event Grid schema.
    event_type: Option<String>,
    event_time: Option<String>,
    #[serde(default)]
    subject: String,
    data: Option<Box<RawValue>>,
    /// CloudEvents' distributed tracing extension; ignored unless valid.
    traceparent: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ValidationData {
    validation_code: String,
}

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("malformed_event", message)
}

/// Reads an Event Grid delivery: one event or an array, in the Event Grid
/// schema or CloudEvents 1.0.
pub fn decode_delivery(body: &[u8]) -> Result<Delivery, ApiError> {
    // Not an untagged enum: `RawValue` cannot come out of serde's buffering.
    let array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let events = if array {
        serde_json::from_slice::<Vec<WireEvent>>(body)
    } else {
        serde_json::from_slice::<WireEvent>(body).map(|event| vec![event])
    }
    .map_err(|e| {
        malformed(format!(
            "the body is not an event or an array of events: {e}"
        ))
    })?;
    let mut notifications = Vec::with_capacity(events.len());
    for event in events {
        let (event_type, time) = match event.specversion {
            Some(version) if version != "1.0" => {
                return Err(malformed(format!(
                    "CloudEvents {version} is not supported; 1.0 is"
                )));
            }
            Some(_) => (event.cloud_type, event.time),
            None => (event.event_type, event.event_time),
        };
        let event_type =
            event_type.ok_or_else(|| malformed(format!("event {} has no type", event.id)))?;
        if event_type == VALIDATION_EVENT {
            let data = event
                .data
                .ok_or_else(|| malformed("the validation event has no data"))?;
            let data: ValidationData = serde_json::from_str(data.get())
                .map_err(|e| malformed(format!("the validation event's data: {e}")))?;
            return Ok(Delivery::Validation {
                code: data.validation_code,
            });
        }
        notifications.push(IncomingNotification {
            id: event.id.clone(),
            event_type,
            subject: event.subject,
            data: crate::model::json_document(
                event
                    .data
                    .map_or_else(|| b"{}".to_vec(), |data| data.get().as_bytes().to_vec()),
            )
            .map_err(|e| malformed(format!("the data of event {}: {e}", event.id)))?,
            time: time.unwrap_or_default(),
            traceparent: event
                .traceparent
                .and_then(|value| TraceParent::parse(&value).ok()),
        });
    }
    Ok(Delivery::Notifications(notifications))
}

/// The CloudEvents abuse-protection handshake: allow the requesting origin.
pub(super) fn allowed_origin(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get("webhook-request-origin")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_origin",
                "an OPTIONS handshake needs a WebHook-Request-Origin header",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_schemas_one_or_many() {
        let grid = br#"[{"id": "1", "eventType": "Bank.Account.NewEntity", "subject": "eventsourcing/Bank/Account/NewEntity/a",
            "eventTime": "2026-11-27T00:00:00Z", "data": {"instanceKey": "a"}, "dataVersion": "1.0"}]"#;
        let cloud = br#"{"specversion": "1.0", "id": "2", "type": "Bank.Account.NewEntity", "source": "s",
            "subject": "eventsourcing/Bank/Account/NewEntity/b", "time": "2026-11-27T00:00:00Z", "data": {"instanceKey": "b"}}"#;
        for (body, id) in [(grid.as_slice(), "1"), (cloud.as_slice(), "2")] {
            let Ok(Delivery::Notifications(notifications)) = decode_delivery(body) else {
                panic!("not decoded: {}", String::from_utf8_lossy(body));
            };
            assert_eq!(notifications.len(), 1);
            assert_eq!(notifications[0].id, id);
            assert_eq!(notifications[0].event_type, "Bank.Account.NewEntity");
            assert!(notifications[0].data.get().contains("instanceKey"));
        }
    }

    #[test]
    fn reads_the_traceparent_extension_and_ignores_a_bad_one() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let body = format!(
            r#"[{{"specversion": "1.0", "id": "1", "type": "t", "source": "s", "traceparent": "{parent}"}},
                {{"specversion": "1.0", "id": "2", "type": "t", "source": "s", "traceparent": "nonsense"}}]"#
        );
        let Ok(Delivery::Notifications(notifications)) = decode_delivery(body.as_bytes()) else {
            panic!("not decoded");
        };
        let read: Vec<_> = notifications
            .iter()
            .map(|n| n.traceparent.as_ref().map(TraceParent::as_str))
            .collect();
        assert_eq!(read, [Some(parent), None]);
    }

    #[test]
    fn answers_the_validation_handshake() {
        let body = br#"[{"id": "v", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "subject": "",
            "eventTime": "2026-11-27T00:00:00Z", "data": {"validationCode": "abc"}, "dataVersion": "1"}]"#;
        assert!(
            matches!(decode_delivery(body), Ok(Delivery::Validation { code }) if code == "abc")
        );
    }

    #[test]
    fn refuses_what_is_not_an_event() {
        for body in [
            &b"{"[..],
            b"[1]",
            br#"[{"id": "x"}]"#,
            br#"{"specversion": "0.3", "id": "x", "type": "t"}"#,
        ] {
            let error = decode_delivery(body).expect_err("refused");
            assert_eq!(error.code, "malformed_event");
        }
    }
}
