//! The Event Grid publisher against the Event Grid stand-in: authentication,
//! retries, dead letters, the 1 MB rules, stable ids, secrets kept out of
//! sight, and forwarding to subscribers after the validation handshakes.
//!
//! Retries are counted from the requests the stand-in recorded, never
//! timed; backoffs are a few milliseconds so the whole file runs in seconds.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cqrs_wasi_host::model::{EventContext, RecordedEvent, StreamId};
use cqrs_wasi_host::notifications::{
    Auth, DeliveryOutcome, EventGridConfig, EventGridPublisher, EventSchema, Notification,
    RetryPolicy, Secret,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::support;
use crate::support::event_grid::{EventGridStandIn, Fault, Schema, Subscription};

fn recorded(key: &str, sequence: u64, event_type: &str, payload: &str) -> RecordedEvent {
    RecordedEvent {
        stream: StreamId::new("Bank", "Account", key).unwrap(),
        event_id: uuid::Uuid::new_v4(),
        event_type: event_type.parse().unwrap(),
        sequence,
        position: sequence,
        written_at: time::OffsetDateTime::now_utc(),
        payload: RawValue::from_string(payload.to_owned()).unwrap(),
        context: EventContext {
            correlation_id: Some("corr-1".into()),
            ..EventContext::default()
        },
    }
}

/// `MoneyDeposited` number `sequence` of account `key`.
fn deposit(key: &str, sequence: u64) -> Notification {
    Notification::event_appended(&recorded(
        key,
        sequence,
        "MoneyDeposited",
        &format!(r#"{{"amount": {sequence}}}"#),
    ))
    .unwrap()
}

/// An appended event whose payload is about `bytes` long.
fn sized(key: &str, sequence: u64, bytes: usize) -> Notification {
    let payload = format!(r#"{{"blob": "{}"}}"#, "x".repeat(bytes));
    Notification::event_appended(&recorded(key, sequence, "BlobStored", &payload)).unwrap()
}

fn cloud_events() -> EventSchema {
    EventSchema::CloudEvents {
        source: "/cqrs-wasi/tests".into(),
    }
}

fn key(stand_in: &EventGridStandIn) -> Auth {
    Auth::Key(Secret::new(stand_in.key()))
}

fn sas(stand_in: &EventGridStandIn) -> Auth {
    Auth::SasToken {
        key: Secret::new(stand_in.key()),
        ttl: Duration::from_secs(300),
    }
}

/// A publisher with tiny backoffs and `attempts` requests per batch.
fn publisher(
    stand_in: &EventGridStandIn,
    schema: EventSchema,
    auth: Auth,
    attempts: u32,
) -> EventGridPublisher {
    let mut config = EventGridConfig::new(stand_in.endpoint(), schema, auth);
    config.retry = RetryPolicy {
        max_attempts: NonZeroU32::new(attempts).unwrap(),
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(2),
    };
    config.request_timeout = Duration::from_secs(5);
    EventGridPublisher::new(config).unwrap()
}

fn ids(notifications: &[Notification]) -> Vec<String> {
    notifications.iter().map(|n| n.id().to_string()).collect()
}

fn statuses(stand_in: &EventGridStandIn) -> Vec<Option<u16>> {
    stand_in.requests().iter().map(|r| r.status).collect()
}

#[tokio::test]
async fn both_auth_modes_are_accepted_in_both_schemas() {
    for schema in [Schema::EventGrid, Schema::CloudEvents] {
        let stand_in = EventGridStandIn::start(schema).await.unwrap();
        let event_schema = match schema {
            Schema::EventGrid => EventSchema::EventGrid,
            Schema::CloudEvents => cloud_events(),
        };
        let sent = [deposit("acc-1", 1), deposit("acc-1", 2)];
        for auth in [key(&stand_in), sas(&stand_in)] {
            let report = publisher(&stand_in, event_schema.clone(), auth, 1)
                .publish(&sent)
                .await;
            assert!(report.all_delivered(), "{schema:?}: {report:?}");
            assert!(report.outcomes.iter().all(|o| o.attempts == 1));
        }
        // One request per auth mode, each holding both notifications.
        assert_eq!(statuses(&stand_in), [Some(200), Some(200)]);
        assert_eq!(stand_in.accepted_ids(), [ids(&sent), ids(&sent)].concat());
        let first = &stand_in.accepted()[0];
        match schema {
            Schema::EventGrid => assert_eq!(first["eventType"], "Bank.Account.MoneyDeposited"),
            Schema::CloudEvents => {
                assert_eq!(first["type"], "Bank.Account.MoneyDeposited");
                assert_eq!(first["source"], "/cqrs-wasi/tests");
            }
        }
    }
}

#[tokio::test]
async fn wrong_or_expired_credentials_are_dead_lettered_as_401_without_retrying() {
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await.unwrap();
    let other = EventGridStandIn::start(Schema::EventGrid).await.unwrap();
    let sent = [deposit("acc-1", 1), deposit("acc-1", 2)];
    let expired = Auth::SasToken {
        key: Secret::new(stand_in.key()),
        ttl: Duration::ZERO,
    };
    for auth in [key(&other), sas(&other), expired] {
        let report = publisher(&stand_in, EventSchema::EventGrid, auth, 5)
            .publish(&sent)
            .await;
        for outcome in &report.outcomes {
            assert_eq!(outcome.attempts, 1, "{report:?}");
            let DeliveryOutcome::DeadLettered {
                status,
                reason: body,
            } = &outcome.outcome
            else {
                panic!("expected a dead letter: {report:?}");
            };
            assert_eq!(*status, Some(401));
            assert!(body.contains("Unauthorized"), "{body}");
        }
    }
    // Neither retried nor split: credentials are wrong for every
    // notification alike.
    assert_eq!(statuses(&stand_in), [Some(401); 3]);
    assert!(stand_in.accepted().is_empty());
}

#[tokio::test]
async fn throttling_and_outages_are_retried_until_accepted() {
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await.unwrap();
    stand_in.inject(Fault::TooManyRequests {
        retry_after: "0".into(),
    });
    stand_in.inject(Fault::Unavailable);
    stand_in.inject(Fault::DropConnection);
    let sent = [deposit("acc-1", 1), deposit("acc-1", 2)];
    let report = publisher(&stand_in, EventSchema::EventGrid, key(&stand_in), 4)
        .publish(&sent)
        .await;
    assert!(report.all_delivered(), "{report:?}");
    assert!(report.outcomes.iter().all(|o| o.attempts == 4));
    assert_eq!(statuses(&stand_in), [Some(429), Some(503), None, Some(200)]);
    assert_eq!(stand_in.accepted_ids(), ids(&sent));
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await.unwrap();
    stand_in.inject(Fault::TooManyRequests {
        retry_after: "1".into(),
    });
    let report = publisher(&stand_in, EventSchema::EventGrid, key(&stand_in), 2)
        .publish(&[deposit("acc-1", 1)])
        .await;
    assert!(report.all_delivered(), "{report:?}");
    let requests = stand_in.requests();
    assert_eq!(requests.len(), 2);
    // A lower bound only: the backoff alone would be at most 5 ms.
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
}

#[tokio::test]
async fn exhausted_retries_give_up_and_leave_later_batches_unsent() {
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await.unwrap();
    for _ in 0..3 {
        stand_in.inject(Fault::Unavailable);
    }
    // Two batches: 600 kB each cannot share a 1 MB request.
    let sent = [sized("acc-1", 1, 600_000), sized("acc-1", 2, 600_000)];
    let report = publisher(&stand_in, EventSchema::EventGrid, key(&stand_in), 3)
        .publish(&sent)
        .await;
    let DeliveryOutcome::GaveUp { last_error } = &report.outcomes[0].outcome else {
        panic!("expected to give up: {report:?}");
    };
    assert!(last_error.contains("503"), "{last_error}");
    assert_eq!(report.outcomes[0].attempts, 3);
    assert_eq!(report.outcomes[1].outcome, DeliveryOutcome::NotAttempted);
    assert_eq!(report.outcomes[1].attempts, 0);
    assert_eq!(statuses(&stand_in), [Some(503); 3]);

    // Published again later (as the outbox would): delivered.
    let report = publisher(&stand_in, EventSchema::EventGrid, key(&stand_in), 3)
        .publish(&sent)
        .await;
    assert!(report.all_delivered(), "{report:?}");
    assert_eq!(stand_in.accepted_ids(), ids(&sent));
}

#[tokio::test]
async fn a_refused_event_is_dead_lettered_alone_and_delivered_once_fixed() {
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await.unwrap();
    let sent: Vec<Notification> = (1..=5).map(|n| deposit("acc-1", n)).collect();
    let poisoned = sent[2].id().to_string();
    let refused = poisoned.clone();
    stand_in.refuse_where(move |event| event["id"] == refused.as_str());
    let publisher = publisher(&stand_in, EventSchema::EventGrid, key(&stand_in), 3);

    let report = publisher.publish(&sent).await;
    for (i, outcome) in report.outcomes.iter().enumerate() {
        // The batch, then the notification alone.
        assert_eq!(outcome.attempts, 2, "{report:?}");
        if i == 2 {
            let DeliveryOutcome::DeadLettered {
                status,
                reason: body,
            } = &outcome.outcome
            else {
                panic!("expected a dead letter: {report:?}");
            };
            assert_eq!(*status, Some(400));
            assert!(
                body.contains(&poisoned),
                "the reason names the event: {body}"
            );
        } else {
            assert_eq!(outcome.outcome, DeliveryOutcome::Delivered, "{report:?}");
        }
    }
    // The refused batch, then one request per notification, in order.
    assert_eq!(
        statuses(&stand_in),
        [
            Some(400),
            Some(200),
            Some(200),
            Some(400),
            Some(200),
            Some(200)
        ]
    );
    let delivered: Vec<String> = ids(&sent)
        .into_iter()
        .filter(|id| *id != poisoned)
        .collect();
    assert_eq!(stand_in.accepted_ids(), delivered);

    // The cause is fixed; the operator re-drives the dead letter.
    stand_in.stop_refusing();
    let report = publisher.publish(&sent[2..3]).await;
    assert!(report.all_delivered(), "{report:?}");
    assert_eq!(stand_in.accepted_ids().last(), Some(&poisoned));
}

#[tokio::test]
async fn an_oversized_notification_goes_without_its_payload_and_flagged() {
    for (schema, event_schema) in [
        (Schema::EventGrid, EventSchema::EventGrid),
        (Schema::CloudEvents, cloud_events()),
    ] {
        let stand_in = EventGridStandIn::start(schema).await.unwrap();
        let sent = [sized("acc-1", 1, 1_200_000), deposit("acc-1", 2)];
        let report = publisher(&stand_in, event_schema, sas(&stand_in), 1)
            .publish(&sent)
            .await;
        assert!(report.all_delivered(), "{report:?}");
        assert!(report.outcomes[0].payload_omitted);
        assert!(!report.outcomes[1].payload_omitted);
        let accepted = stand_in.accepted();
        assert_eq!(accepted.len(), 2);
        let data = &accepted[0]["data"];
        assert_eq!(data["payloadOmitted"], json!(true));
        assert!(data.get("eventPayload").is_none(), "{data}");
        assert_eq!(data["sequenceNumber"], json!(1));
        assert_eq!(accepted[1]["data"]["eventPayload"], json!({"amount": 2}));
        assert!(accepted[1]["data"].get("payloadOmitted").is_none());
    }
}

#[tokio::test]
async fn batches_stay_under_a_megabyte_and_keep_their_order() {
    let stand_in = EventGridStandIn::start(Schema::CloudEvents).await.unwrap();
    let sent: Vec<Notification> = (1..=10).map(|n| sized("acc-1", n, 300_000)).collect();
    let report = publisher(&stand_in, cloud_events(), key(&stand_in), 1)
        .publish(&sent)
        .await;
    assert!(report.all_delivered(), "{report:?}");
    let requests = stand_in.requests();
    // 300 kB events: three to a request.
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.bytes <= 1_000_000 && r.status == Some(200))
    );
    assert_eq!(stand_in.accepted_ids(), ids(&sent));

    // The stand-in itself refuses a request over the limit.
    let body = format!("[{}]", vec![r#"{"x": 1}"#; 150_000].join(","));
    let response = raw_publish(&stand_in, "application/cloudevents-batch+json", body).await;
    assert_eq!(response.0, 413, "{}", response.1);
}

/// An appended event whose notification, encoded in `schema`, is exactly
/// `bytes` long with its payload.
fn encoded_as(schema: &EventSchema, sequence: u64, bytes: usize) -> Notification {
    let notification = |filler: usize| {
        let payload = format!(r#"{{"blob": "{}"}}"#, "x".repeat(filler));
        let mut event = recorded("acc-1", sequence, "BlobStored", &payload);
        // A time of fixed length: the encoding grows byte for byte with the
        // filler, and with nothing else.
        event.written_at = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        Notification::event_appended(&event).unwrap()
    };
    let probe = notification(0).encode(schema).json.len();
    notification(bytes - probe)
}

/// Event Grid's limits on one event and on one request are 1 MB, read as
/// 10^6 bytes. An event alone in a request takes two bytes more (`[`, `]`),
/// so an event of 10^6 − 2 bytes is the largest sent whole, and the topic
/// takes it in a request of exactly 10^6 bytes; one byte more, and it goes
/// without its payload, flagged.
#[tokio::test]
async fn the_largest_event_sent_whole_fills_a_request_of_a_million_bytes() {
    for schema in [EventSchema::EventGrid, cloud_events()] {
        let stand_in_schema = match schema {
            EventSchema::EventGrid => Schema::EventGrid,
            EventSchema::CloudEvents { .. } => Schema::CloudEvents,
        };
        let stand_in = EventGridStandIn::start(stand_in_schema).await.unwrap();
        let at = encoded_as(&schema, 1, 999_998);
        let encoded = at.encode(&schema);
        assert_eq!(encoded.json.len(), 999_998, "{schema:?}");
        assert!(!encoded.payload_omitted, "{schema:?}");
        let sent = [at];
        let report = publisher(&stand_in, schema.clone(), key(&stand_in), 1)
            .publish(&sent)
            .await;
        assert!(report.all_delivered(), "{schema:?}: {report:?}");
        let sizes: Vec<usize> = stand_in.requests().iter().map(|r| r.bytes).collect();
        assert_eq!(sizes, [1_000_000], "{schema:?}");

        let over = encoded_as(&schema, 1, 999_999);
        let encoded = over.encode(&schema);
        assert!(encoded.payload_omitted, "{schema:?}");
        assert!(
            encoded.json.len() < 1_000,
            "{schema:?}: {}",
            encoded.json.len()
        );
        let event: Value = serde_json::from_str(&encoded.json).unwrap();
        assert_eq!(event["data"]["payloadOmitted"], json!(true));
        assert!(event["data"].get("eventPayload").is_none(), "{event}");
    }
}

/// Event Grid's limit on one publish request is 1 MB, read as 10^6 bytes:
/// two notifications that make a request of exactly that size go in one;
/// one byte more, and they go in two.
#[tokio::test]
async fn the_request_limit_is_a_million_bytes_exactly() {
    for (extra, requests) in [(0, 1), (1, 2)] {
        let stand_in = EventGridStandIn::start(Schema::EventGrid).await.unwrap();
        // `[` + first + `,` + second + `]`.
        let first = encoded_as(&EventSchema::EventGrid, 1, 500_000);
        let second = encoded_as(&EventSchema::EventGrid, 2, 1_000_000 - 3 - 500_000 + extra);
        let sent = [first, second];
        let report = publisher(&stand_in, EventSchema::EventGrid, key(&stand_in), 1)
            .publish(&sent)
            .await;
        assert!(report.all_delivered(), "{report:?}");
        assert!(report.outcomes.iter().all(|o| !o.payload_omitted));
        let sizes: Vec<usize> = stand_in.requests().iter().map(|r| r.bytes).collect();
        let expected: &[usize] = match requests {
            1 => &[1_000_000],
            _ => &[500_002, 500_000],
        };
        assert_eq!(sizes, expected);
        assert_eq!(stand_in.accepted_ids(), ids(&sent));
    }
}

#[tokio::test]
async fn ids_are_the_same_across_retries_and_republishing() {
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await.unwrap();
    // Accepted, but never answered: the client retries what the topic
    // already has.
    stand_in.inject(Fault::Unanswered);
    let mut config =
        EventGridConfig::new(stand_in.endpoint(), EventSchema::EventGrid, key(&stand_in));
    config.retry.base_delay = Duration::from_millis(1);
    let publisher = EventGridPublisher::new(config).unwrap();

    let events = [
        recorded("acc-7", 1, "AccountOpened", r#"{"owner": "Ada"}"#),
        recorded("acc-7", 2, "MoneyDeposited", r#"{"amount": 5}"#),
    ];
    let build = || {
        vec![
            Notification::new_entity(&events[0]).unwrap(),
            Notification::event_appended(&events[0]).unwrap(),
            Notification::event_appended(&events[1]).unwrap(),
        ]
    };
    let sent = build();
    let report = publisher.publish(&sent).await;
    assert!(report.all_delivered(), "{report:?}");
    assert!(report.outcomes.iter().all(|o| o.attempts == 2));
    assert_eq!(stand_in.requests().len(), 2);
    // Twice each, with the same ids.
    assert_eq!(stand_in.accepted_ids(), [ids(&sent), ids(&sent)].concat());

    // Rebuilt from the same events (a redelivery after a restart): the same
    // ids again, and the same JSON.
    let again = build();
    assert_eq!(ids(&again), ids(&sent));
    assert!(publisher.publish(&again).await.all_delivered());
    let accepted = stand_in.accepted();
    assert_eq!(accepted[0..3], accepted[6..9]);
}

#[tokio::test]
async fn secrets_never_appear_in_debug_output_or_errors() {
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await.unwrap();
    let secret = stand_in.key().to_owned();
    for auth in [key(&stand_in), sas(&stand_in)] {
        let config = EventGridConfig::new(stand_in.endpoint(), EventSchema::EventGrid, auth);
        assert!(!format!("{config:?}").contains(&secret));
        let publisher = EventGridPublisher::new(config).unwrap();
        assert!(!format!("{publisher:?}").contains(&secret));
    }

    // Refused by the topic, and unable to reach one: neither outcome quotes
    // the key.
    let wrong = Secret::new(BASE64_OF_WRONG_KEY);
    let refused = publisher(&stand_in, EventSchema::EventGrid, Auth::Key(wrong), 1)
        .publish(&[deposit("acc-1", 1)])
        .await;
    // A listener that stays bound (so that no one else takes its port) and
    // closes every connection unanswered.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closing = listener.local_addr().unwrap();
    let closer = tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            drop(connection);
        }
    });
    let mut config = EventGridConfig::new(
        format!("http://{closing}"),
        EventSchema::EventGrid,
        sas(&stand_in),
    );
    config.retry.max_attempts = NonZeroU32::new(2).unwrap();
    config.retry.base_delay = Duration::from_millis(1);
    let unreachable = EventGridPublisher::new(config)
        .unwrap()
        .publish(&[deposit("acc-1", 1)])
        .await;
    closer.abort();
    assert!(matches!(
        unreachable.outcomes[0].outcome,
        DeliveryOutcome::GaveUp { .. }
    ));
    for report in [refused, unreachable] {
        let text = format!("{report:?}");
        assert!(!text.contains(&secret), "{text}");
        assert!(!text.contains(BASE64_OF_WRONG_KEY), "{text}");
        assert!(!text.contains("aeg-sas-token: "), "{text}");
    }
}

const BASE64_OF_WRONG_KEY: &str = "d3Jvbmcta2V5LWZvci10aGUtdGVzdHM=";

#[tokio::test]
async fn accepted_events_are_forwarded_to_validated_subscribers_by_filter() {
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await.unwrap();
    let welcome = Webhook::start(true).await;
    let audit = Webhook::start(true).await;
    stand_in
        .subscribe(Subscription {
            endpoint: welcome.url.clone(),
            // Case-insensitive, as Event Grid's filters are by default.
            included_event_types: vec!["bank.account.NEWENTITY".into()],
            subject_begins_with: Some("EventSourcing/Bank/".into()),
            ..Subscription::default()
        })
        .await
        .unwrap();
    stand_in
        .subscribe(Subscription {
            endpoint: audit.url.clone(),
            subject_ends_with: Some("/ACC-2".into()),
            ..Subscription::default()
        })
        .await
        .unwrap();
    assert_eq!(welcome.handshakes(), 1);
    assert_eq!(audit.handshakes(), 1);

    let opened = recorded("acc-1", 1, "AccountOpened", "{}");
    let opened_2 = recorded("acc-2", 1, "AccountOpened", "{}");
    let sent = [
        Notification::new_entity(&opened).unwrap(),
        Notification::event_appended(&opened).unwrap(),
        Notification::new_entity(&opened_2).unwrap(),
        deposit("acc-2", 2),
    ];
    let report = publisher(&stand_in, EventSchema::EventGrid, key(&stand_in), 1)
        .publish(&sent)
        .await;
    assert!(report.all_delivered(), "{report:?}");
    stand_in.settle().await;

    let to_welcome = welcome.received();
    let mut welcomed: Vec<String> = to_welcome
        .iter()
        .map(|d| {
            assert_eq!(d.content_type, "application/json");
            assert_eq!(d.event_type_header, "Notification");
            // An array of one, with the fields Event Grid adds.
            let events = d.body.as_array().expect("an array");
            assert_eq!(events.len(), 1);
            assert_eq!(events[0]["topic"], support::event_grid::TOPIC);
            assert_eq!(events[0]["metadataVersion"], "1");
            events[0]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    welcomed.sort();
    let mut expected = vec![sent[0].id().to_string(), sent[2].id().to_string()];
    expected.sort();
    assert_eq!(welcomed, expected);

    let mut audited: Vec<String> = audit
        .received()
        .iter()
        .map(|d| d.body[0]["id"].as_str().unwrap().to_owned())
        .collect();
    audited.sort();
    let mut expected = vec![sent[2].id().to_string(), sent[3].id().to_string()];
    expected.sort();
    assert_eq!(audited, expected);
}

#[tokio::test]
async fn cloud_events_subscribers_pass_the_options_handshake_first() {
    let stand_in = EventGridStandIn::start(Schema::CloudEvents).await.unwrap();
    let hook = Webhook::start(true).await;
    stand_in
        .subscribe(Subscription {
            endpoint: hook.url.clone(),
            included_event_types: vec!["Bank.Account.MoneyDeposited".into()],
            ..Subscription::default()
        })
        .await
        .unwrap();
    assert_eq!(hook.handshakes(), 1);
    let sent = [deposit("acc-1", 1)];
    let report = publisher(&stand_in, cloud_events(), sas(&stand_in), 1)
        .publish(&sent)
        .await;
    assert!(report.all_delivered(), "{report:?}");
    stand_in.settle().await;
    let received = hook.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].content_type,
        "application/cloudevents+json; charset=utf-8"
    );
    // A structured event, exactly as published.
    assert_eq!(received[0].body, stand_in.accepted()[0]);
    assert_eq!(received[0].body["id"], sent[0].id().to_string());
}

#[tokio::test]
async fn a_webhook_that_fails_the_handshake_is_not_subscribed() {
    for schema in [Schema::EventGrid, Schema::CloudEvents] {
        let stand_in = EventGridStandIn::start(schema).await.unwrap();
        let hook = Webhook::start(false).await;
        let err = stand_in
            .subscribe(Subscription {
                endpoint: hook.url.clone(),
                ..Subscription::default()
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("webhook failed"), "{err}");
        assert_eq!(hook.handshakes(), 1);
    }
}

#[tokio::test]
async fn the_stand_in_enforces_the_publish_protocol() {
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await.unwrap();
    let valid = json!({
        "id": "1", "eventType": "T", "subject": "s", "eventTime": "2024-05-01T00:00:00Z",
        "data": {}, "dataVersion": "1.0",
    });
    let client = reqwest::Client::new();
    let url = format!("{}/api/events", stand_in.endpoint());
    let send = |query: &'static str, key: Option<&str>, body: String| {
        let mut request = client
            .post(format!("{url}{query}"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.header("aeg-sas-key", key);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let key = Some(stand_in.key());
    let ok = "?api-version=2018-01-01";
    let array = |event: &Value| json!([event]).to_string();

    assert_eq!(send(ok, key, array(&valid)).await.0, 200);
    assert_eq!(send("", key, array(&valid)).await.0, 400);
    assert_eq!(send(ok, None, array(&valid)).await.0, 401);
    assert_eq!(send(ok, Some("d3Jvbmc="), array(&valid)).await.0, 401);
    assert_eq!(send(ok, key, valid.to_string()).await.0, 400);
    for field in [
        "id",
        "eventType",
        "subject",
        "eventTime",
        "data",
        "dataVersion",
    ] {
        let mut event = valid.clone();
        event.as_object_mut().unwrap().remove(field);
        let (status, body) = send(ok, key, array(&event)).await;
        assert_eq!(status, 400, "without {field}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("'{field}'")),
            "{body}"
        );
    }
    let mut big = valid.clone();
    big["data"] = json!("x".repeat(1_000_000));
    assert_eq!(send(ok, key, array(&big)).await.0, 413);
    // Only the first, valid, request was accepted.
    assert_eq!(stand_in.accepted(), [valid]);
}

/// POSTs `body` with the topic key; the status and body.
async fn raw_publish(
    stand_in: &EventGridStandIn,
    content_type: &str,
    body: String,
) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/events?api-version=2018-01-01",
            stand_in.endpoint()
        ))
        .header("content-type", content_type)
        .header("aeg-sas-key", stand_in.key())
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// One delivery a webhook received.
#[derive(Debug, Clone)]
struct Delivery {
    content_type: String,
    event_type_header: String,
    body: Value,
}

/// A subscriber: answers the handshakes (or, if told not to, ignores them)
/// and records every delivery.
struct Webhook {
    url: String,
    state: Arc<Mutex<WebhookState>>,
    server: JoinHandle<()>,
}

#[derive(Default)]
struct WebhookState {
    handshakes: usize,
    received: Vec<Delivery>,
}

impl Webhook {
    async fn start(answer_handshakes: bool) -> Webhook {
        let state = Arc::new(Mutex::new(WebhookState::default()));
        let on_post = {
            let state = state.clone();
            move |headers: HeaderMap, body: String| async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let mut state = state.lock().unwrap();
                if header("aeg-event-type") == "SubscriptionValidation" {
                    state.handshakes += 1;
                    let code = body[0]["data"]["validationCode"].clone();
                    return if answer_handshakes {
                        axum::Json(json!({"validationResponse": code})).into_response()
                    } else {
                        axum::Json(json!({})).into_response()
                    };
                }
                state.received.push(Delivery {
                    content_type: header("content-type"),
                    event_type_header: header("aeg-event-type"),
                    body,
                });
                ().into_response()
            }
        };
        let on_options = {
            let state = state.clone();
            move |headers: HeaderMap| async move {
                state.lock().unwrap().handshakes += 1;
                let mut response: Response = ().into_response();
                if answer_handshakes && let Some(origin) = headers.get("WebHook-Request-Origin") {
                    response
                        .headers_mut()
                        .insert("WebHook-Allowed-Origin", origin.clone());
                }
                response
                    .headers_mut()
                    .insert("Allow", HeaderValue::from_static("POST, OPTIONS"));
                response
            }
        };
        let router = Router::new().route("/hook", post(on_post).options(on_options));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Webhook { url, state, server }
    }

    fn handshakes(&self) -> usize {
        self.state.lock().unwrap().handshakes
    }

    fn received(&self) -> Vec<Delivery> {
        self.state.lock().unwrap().received.clone()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.server.abort();
    }
}
