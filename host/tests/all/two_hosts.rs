//! Between domains through Event Grid: host A's outbox, dispatched to the
//! Event Grid stand-in, is forwarded (after the subscription handshake) to
//! host B's webhook, where a notification handler sends a command in B's
//! domain.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_wasi_host::HostConfig;
use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::notifications::{
    Auth, Destination, EventGridConfig, EventGridPublisher, EventSchema, RetryPolicy, Secret,
};
use cqrs_wasi_host::store::MemoryStore;
use reqwest::StatusCode;

use crate::support::TestHost;
use crate::support::event_grid::{EventGridStandIn, Fault, Schema, Subscription};

/// The stand-in as host A's topic.
fn topic(stand_in: &EventGridStandIn, schema: EventSchema) -> anyhow::Result<Destination> {
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
    Ok(Destination::new(
        "grid",
        Arc::new(EventGridPublisher::new(config)?),
    ))
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
        // The first publish is accepted but never answered: A publishes
        // again, and the stand-in forwards the notification to B twice.
        stand_in.inject(Fault::Unanswered);
        let a = TestHost::with_destinations(
            Arc::new(MemoryStore::new()),
            HostConfig::default(),
            vec![topic(&stand_in, event_schema)?],
        )
        .await?;

        let (status, body) = a
            .command("acc-9", "OpenAccount", r#"{"owner": "Ada"}"#)
            .await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        a.command("acc-9", "Deposit", r#"{"amount": 5}"#).await?;

        // Wait for the second copy, then for its forwarding to B.
        let new_entity = || {
            stand_in
                .accepted()
                .iter()
                .filter(|e| {
                    let event_type = e.get("eventType").or_else(|| e.get("type"));
                    event_type.and_then(|t| t.as_str()) == Some("Bank.Account.NewEntity")
                })
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while new_entity() < 2 {
            assert!(
                Instant::now() < deadline,
                "{schema:?}: the stand-in took it once: {:?}",
                stand_in.requests()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
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
        &cqrs_wasi_host::ApiConfig {
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
