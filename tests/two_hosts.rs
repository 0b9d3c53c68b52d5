//! Between domains through Event Grid: host A's notifications, published to
//! the Event Grid stand-in, are forwarded (after the subscription handshake)
//! to host B's webhook, where a notification handler sends a command in B's
//! domain.

mod support;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::notifications::{
    Auth, DeliveryOutcome, EventGridConfig, EventGridPublisher, EventSchema, Notification,
    RetryPolicy, Secret,
};
use cqrs_wasi_host::store::MemoryStore;
use reqwest::StatusCode;
use support::TestHost;
use support::event_grid::{EventGridStandIn, Schema, Subscription};

fn publisher(
    stand_in: &EventGridStandIn,
    schema: EventSchema,
) -> anyhow::Result<EventGridPublisher> {
    let mut config = EventGridConfig::new(
        stand_in.endpoint(),
        schema,
        Auth::Key(Secret::new(stand_in.key())),
    );
    config.retry = RetryPolicy {
        max_attempts: NonZeroU32::new(3).expect("nonzero"),
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(1),
    };
    Ok(EventGridPublisher::new(config)?)
}

#[tokio::test]
async fn a_notification_from_host_a_drives_a_handler_on_host_b() -> anyhow::Result<()> {
    for (schema, event_schema) in [
        (Schema::EventGrid, EventSchema::EventGrid),
        (
            Schema::CloudEvents,
            EventSchema::CloudEvents {
                source: "/hosts/a".into(),
            },
        ),
    ] {
        let a = TestHost::with_store(
            Arc::new(MemoryStore::new()),
            Default::default(),
            &Default::default(),
        )
        .await?;
        let b = TestHost::with_store(
            Arc::new(MemoryStore::new()),
            Default::default(),
            &Default::default(),
        )
        .await?;
        b.deploy("welcome").await?;

        let stand_in = EventGridStandIn::start(schema).await?;
        stand_in
            .subscribe(Subscription {
                endpoint: format!("{}/api/eventgrid", b.url),
                included_event_types: vec!["Bank.Account.NewEntity".into()],
                ..Subscription::default()
            })
            .await?;

        let (status, body) = a
            .command("acc-9", "OpenAccount", r#"{"owner": "Ada"}"#)
            .await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        a.command("acc-9", "Deposit", r#"{"amount": 5}"#).await?;
        let events = a.all_events().await?;
        let mut notifications = vec![Notification::new_entity(&events[0])?];
        notifications.extend(
            events
                .iter()
                .map(Notification::event_appended)
                .collect::<Result<Vec<_>, _>>()?,
        );

        // Published twice, as a retry after a lost answer would: B's letter
        // still goes out once.
        for _ in 0..2 {
            let report = publisher(&stand_in, event_schema.clone())?
                .publish(&notifications)
                .await;
            assert!(
                report
                    .outcomes
                    .iter()
                    .all(|o| matches!(o.outcome, DeliveryOutcome::Delivered)),
                "{report:?}"
            );
        }
        stand_in.settle().await;

        let letter = StreamId::new("Letters", "Letter", "welcome-acc-9")?;
        let letters = b.host.read_stream(&letter, 1, 10).await?;
        assert_eq!(letters.len(), 1, "{schema:?}: one letter, in B's store");
        assert_eq!(letters[0].event_type, "WelcomeSent");
        assert_eq!(letters[0].payload.get(), r#"{"account":"acc-9"}"#);
        assert!(
            a.store.read_stream(&letter, 1, 10).await?.is_empty(),
            "nothing in A's store"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_webhook_answers_both_handshakes_and_checks_its_secret() -> anyhow::Result<()> {
    let host = TestHost::build(
        Arc::new(MemoryStore::new()),
        Default::default(),
        Default::default(),
        &cqrs_wasi_host::api::ApiConfig {
            webhook_secret: Some(Secret::new("hook-secret")),
            ..Default::default()
        },
    )
    .await?;
    let url = format!("{}/api/eventgrid", host.url);
    let validation = serde_json::json!([{
        "id": "v-1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "subject": "",
        "eventTime": "2026-11-27T00:00:00Z", "data": {"validationCode": "code-7"}, "dataVersion": "1"
    }]);
    let refused = host.client.post(&url).json(&validation).send().await?;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let answer: serde_json::Value = host
        .client
        .post(&url)
        .header("X-Webhook-Secret", "hook-secret")
        .json(&validation)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(answer, serde_json::json!({"validationResponse": "code-7"}));

    let options = host
        .client
        .request(reqwest::Method::OPTIONS, &url)
        .header("WebHook-Request-Origin", "eventgrid.azure.net")
        .send()
        .await?;
    assert_eq!(options.status(), StatusCode::OK);
    assert_eq!(
        options.headers()["webhook-allowed-origin"],
        "eventgrid.azure.net"
    );

    let garbage = host
        .client
        .post(&url)
        .header("X-Webhook-Secret", "hook-secret")
        .body("[{\"id\": 1}]")
        .send()
        .await?;
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
    Ok(())
}
