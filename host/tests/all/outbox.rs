//! The outbox and its dispatcher, end to end in one process: what commands
//! append reaches an Event Grid topic (the stand-in) and the local
//! notification handlers, at least once and with deterministic ids;
//! refusals become dead letters that an operator re-drives.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::notifications::model::{NotificationKind, notification_id};
use cqrs_wasi_host::notifications::{
    Auth, DeliveryOutcome, Destination, EventGridConfig, EventGridPublisher, EventSchema,
    Notification, RetryPolicy, Secret,
};
use cqrs_wasi_host::store::{EventStore, MemoryStore};
use cqrs_wasi_host::{HostConfig, IncomingNotification};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::event_grid::{EventGridStandIn, Fault, Schema};
use crate::support::{self, TestHost, eventually, letters};

/// Short pauses, so that a test waits milliseconds rather than seconds.
fn quick_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: NonZeroU32::new(attempts).expect("nonzero"),
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_millis(200),
    }
}

fn topic(stand_in: &EventGridStandIn) -> anyhow::Result<Destination> {
    let mut config = EventGridConfig::new(
        stand_in.endpoint(),
        EventSchema::EventGrid,
        Auth::Key(Secret::new(stand_in.key())),
    );
    config.retry = quick_retries(4);
    Ok(Destination {
        name: "grid".to_owned(),
        sink: Arc::new(EventGridPublisher::new(config)?),
        retry: quick_retries(1),
    })
}

fn subject_of(event: &Value) -> &str {
    event["subject"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn faults_are_retried_refusals_dead_lettered_and_redriven() -> anyhow::Result<()> {
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await?;
    // The first requests fail in ways worth retrying.
    stand_in.inject(Fault::TooManyRequests {
        retry_after: "0".to_owned(),
    });
    stand_in.inject(Fault::Unavailable);
    stand_in.inject(Fault::DropConnection);
    // Everything about acc-bad is refused with 400, until fixed.
    stand_in.refuse_where(|event| subject_of(event).ends_with("/acc-bad"));
    let host = TestHost::with_destinations(
        Arc::new(MemoryStore::new()),
        HostConfig::default(),
        vec![topic(&stand_in)?],
    )
    .await?;
    for (key, command, payload) in [
        ("acc-1", "OpenAccount", r#"{"owner": "Ada"}"#),
        ("acc-bad", "OpenAccount", r#"{"owner": "Eve"}"#),
        ("acc-1", "Deposit", r#"{"amount": 5}"#),
    ] {
        let (status, body) = host.command(key, command, payload).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    let good = StreamId::new("Bank", "Account", "acc-1")?;
    let bad = StreamId::new("Bank", "Account", "acc-bad")?;
    let id = |kind, stream: &StreamId, sequence, projection: Option<&str>| {
        notification_id(kind, stream, sequence, projection).to_string()
    };
    let expected_good: Vec<String> = vec![
        id(NotificationKind::NewEntity, &good, 1, None),
        id(NotificationKind::EventAppended, &good, 1, None),
        id(NotificationKind::EventAppended, &good, 2, None),
        id(
            NotificationKind::ProjectionCompleted,
            &good,
            2,
            Some("Balance"),
        ),
    ];
    eventually("acc-1's notifications", async || {
        let accepted: HashSet<String> = stand_in.accepted_ids().into_iter().collect();
        Ok(expected_good.iter().all(|id| accepted.contains(id)))
    })
    .await?;

    // The faults were retried: each failed request was followed by one
    // carrying the same notifications.
    let requests = stand_in.requests();
    let statuses: Vec<Option<u16>> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses[..3], [Some(429), Some(503), None], "{statuses:?}");
    assert_eq!(requests[0].event_ids, requests[1].event_ids);

    // acc-bad's notifications are dead letters with their reason; what came
    // after them went out all the same.
    let bad_ids = [
        id(NotificationKind::NewEntity, &bad, 1, None),
        id(NotificationKind::EventAppended, &bad, 1, None),
        id(
            NotificationKind::ProjectionCompleted,
            &bad,
            1,
            Some("Balance"),
        ),
    ];
    eventually("the dead letters", async || {
        Ok(host.host.dead_letters().await?.len() >= bad_ids.len())
    })
    .await?;
    let letters = host.host.dead_letters().await?;
    let dead: Vec<String> = letters
        .iter()
        .filter(|l| l.subject.ends_with("/acc-bad"))
        .map(|l| l.notification_id.to_string())
        .collect();
    for bad_id in &bad_ids {
        assert!(dead.contains(bad_id), "{bad_id} in {letters:?}");
    }
    for letter in &letters {
        assert_eq!(letter.destination, "grid");
        assert!(letter.reason.starts_with("HTTP 400:"), "{}", letter.reason);
    }
    assert!(
        stand_in
            .accepted()
            .iter()
            .all(|e| !subject_of(e).ends_with("/acc-bad")),
        "nothing of acc-bad was accepted"
    );

    // Re-driven while the cause remains: refused again, still a dead letter.
    let first = letters[0].notification_id;
    let again = host.host.redrive("grid", first).await?;
    assert!(
        matches!(
            again,
            DeliveryOutcome::DeadLettered {
                status: Some(400),
                ..
            }
        ),
        "{again:?}"
    );
    // Fixed: every dead letter is delivered, re-driven through the admin
    // API as an operator would, and the list is empty.
    stand_in.stop_refusing();
    let admin = |request: reqwest::RequestBuilder| request.bearer_auth(support::ADMIN_TOKEN);
    let listed: Vec<Value> = admin(host.client.get(format!("{}/admin/dead-letters", host.url)))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed.len(), bad_ids.len(), "{listed:?}");
    for letter in &listed {
        let url = format!(
            "{}/admin/dead-letters/{}/{}/redrive",
            host.url,
            letter["destination"].as_str().context("destination")?,
            letter["notificationId"].as_str().context("id")?,
        );
        let answer: Value = admin(host.client.post(url)).send().await?.json().await?;
        assert_eq!(answer, serde_json::json!({"outcome": "delivered"}));
    }
    assert!(host.host.dead_letters().await?.is_empty());
    let accepted: HashSet<String> = stand_in.accepted_ids().into_iter().collect();
    for bad_id in &bad_ids {
        assert!(
            accepted.contains(bad_id),
            "re-driven {bad_id} was delivered"
        );
    }

    // Every accepted notification carries the id of its identity.
    for event in stand_in.accepted() {
        assert_eq!(
            event["id"].as_str(),
            Some(support::identity_id(&event)?.as_str()),
            "{event}"
        );
    }

    // The destination has caught up, and the metrics say what happened.
    eventually("no lag", async || {
        let destinations = host.host.destinations().await?;
        Ok(destinations.iter().all(|d| d.lag == 0))
    })
    .await?;
    let (status, _) = host.get("/healthz").await?;
    assert_eq!(status, StatusCode::OK);
    let metrics = host.metrics().await?;
    for line in [
        "cqrs_wasi_notifications_dead_lettered_total{destination=\"grid\"} 3",
        "cqrs_wasi_notifications_outbox_lag{destination=\"grid\"} 0",
        "cqrs_wasi_notifications_outbox_lag{destination=\"@local\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let retried = metrics
        .lines()
        .find(|l| l.starts_with("cqrs_wasi_notifications_retried_total{destination=\"grid\"}"))
        .context("a retried counter")?;
    assert!(!retried.ends_with(" 0"), "{retried}");
    assert!(metrics.ends_with("# EOF\n"));
    Ok(())
}

#[tokio::test]
async fn local_handlers_get_the_change_feed_and_state_once() -> anyhow::Result<()> {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let host =
        TestHost::with_store(store.clone(), HostConfig::default(), &Default::default()).await?;
    host.deploy("welcome").await?;
    host.command("acc-7", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    host.command("acc-7", "Deposit", r#"{"amount": 600}"#)
        .await?;
    // The Balance projection's notification crosses 1,000 here.
    host.command("acc-7", "Deposit", r#"{"amount": 600}"#)
        .await?;

    eventually("the letters", async || {
        Ok(letters(&host.host, "welcome-acc-7").await?.len() == 1
            && letters(&host.host, "savings-acc-7").await?.len() == 1)
    })
    .await?;
    assert_eq!(
        letters(&host.host, "welcome-acc-7").await?,
        [r#"WelcomeSent {"account":"acc-7"}"#]
    );
    assert_eq!(
        letters(&host.host, "savings-acc-7").await?,
        [r#"CongratulationsSent {"account":"acc-7","balance":1200}"#]
    );

    // The same notification again (a redelivery): acknowledged by the
    // completion record, without running the handler.
    let first = &store.read_all(1, 1).await?[0];
    let again = IncomingNotification::from(&Notification::new_entity(first)?);
    let deliveries = host.host.deliver(&again).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert!(deliveries[0].duplicate, "{deliveries:?}");
    assert_eq!(deliveries[0].error, None);
    assert_eq!(letters(&host.host, "welcome-acc-7").await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_handler_publishes_to_the_topics_it_is_granted() -> anyhow::Result<()> {
    use cqrs_wasi_host::Grants;
    use cqrs_wasi_host::notifications::model::published_id;

    let stand_in = EventGridStandIn::start(Schema::EventGrid).await?;
    let partners = Destination {
        name: "partners".to_owned(),
        ..topic(&stand_in)?
    };
    let options = HostConfig {
        handler_retry: quick_retries(2),
        ..HostConfig::default()
    };
    let host =
        TestHost::with_destinations(Arc::new(MemoryStore::new()), options, vec![partners]).await?;
    host.deploy("announcer").await?;
    // Not granted yet: the handler's publish is refused, and after its
    // retries the notification is a dead letter of the local handlers.
    host.command("acc-1", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    eventually("a dead letter", async || {
        Ok(!host.host.dead_letters().await?.is_empty())
    })
    .await?;
    let letters = host.host.dead_letters().await?;
    assert_eq!(letters[0].destination, "@local");
    assert!(
        letters[0]
            .reason
            .contains("may not publish to topic \"partners\""),
        "{}",
        letters[0].reason
    );

    // Granted (a host configured so), the event reaches the topic, in the
    // topic's schema, with the id of its topic and key.
    let partners = Destination {
        name: "partners".to_owned(),
        ..topic(&stand_in)?
    };
    let granted = cqrs_wasi_host::Host::builder()
        .store(Arc::new(MemoryStore::new()))
        .grant(
            "announcer",
            Grants {
                publish: vec!["partners".to_owned()],
                ..Grants::default()
            },
        )
        .destination(partners)
        .build()?;
    granted.deploy("bank", support::component("bank")).await?;
    granted
        .deploy("announcer", support::component("announcer"))
        .await?;
    let account = StreamId::new("Bank", "Account", "acc-2")?;
    granted
        .execute(cqrs_wasi_host::CommandRequest::new(
            account,
            "OpenAccount",
            r#"{"owner": "Bo"}"#,
        )?)
        .await?;
    eventually("the announcement", async || {
        Ok(stand_in
            .accepted()
            .iter()
            .any(|e| e["eventType"] == "Partners.AccountAnnounced"))
    })
    .await?;
    let announced: Vec<Value> = stand_in
        .accepted()
        .into_iter()
        .filter(|e| e["eventType"] == "Partners.AccountAnnounced")
        .collect();
    assert_eq!(announced.len(), 1, "{announced:?}");
    let event = &announced[0];
    assert_eq!(event["subject"], "accounts/acc-2");
    assert_eq!(event["data"], serde_json::json!({"account": "acc-2"}));
    assert_eq!(event["dataVersion"], "1.0");
    let new_entity = notification_id(
        NotificationKind::NewEntity,
        &StreamId::new("Bank", "Account", "acc-2")?,
        1,
        None,
    );
    let expected = published_id("partners", &format!("announce-{new_entity}"));
    assert_eq!(event["id"], expected.to_string());
    assert!(granted.dead_letters().await?.is_empty());
    Ok(())
}

/// A notification a local handler keeps failing on becomes a dead letter
/// of `@local`, and the notifications after it in the outbox are
/// delivered all the same.
#[tokio::test]
async fn what_follows_a_dead_letter_of_a_local_handler_is_delivered() -> anyhow::Result<()> {
    let options = HostConfig {
        handler_retry: quick_retries(2),
        ..HostConfig::default()
    };
    let host =
        TestHost::with_store(Arc::new(MemoryStore::new()), options, &Default::default()).await?;
    host.deploy("welcome").await?;
    // Not granted its topic: it fails on every new account.
    host.deploy("announcer").await?;
    let (status, body) = host
        .command("acc-1", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually("acc-1's dead letter", async || {
        Ok(!host.host.dead_letters().await?.is_empty())
    })
    .await?;

    for (command, payload) in [
        ("OpenAccount", r#"{"owner": "Bo"}"#),
        ("Deposit", r#"{"amount": 1200}"#),
    ] {
        let (status, body) = host.command("acc-2", command, payload).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    eventually("acc-2's letters", async || {
        Ok(letters(&host.host, "savings-acc-2").await?.len() == 1)
    })
    .await?;
    assert_eq!(
        letters(&host.host, "welcome-acc-2").await?,
        [r#"WelcomeSent {"account":"acc-2"}"#]
    );
    assert_eq!(
        letters(&host.host, "savings-acc-2").await?,
        [r#"CongratulationsSent {"account":"acc-2","balance":1200}"#]
    );
    // The notification the announcer failed on reached the other handler.
    assert_eq!(
        letters(&host.host, "welcome-acc-1").await?,
        [r#"WelcomeSent {"account":"acc-1"}"#]
    );

    eventually("acc-2's dead letter", async || {
        Ok(host.host.dead_letters().await?.len() == 2)
    })
    .await?;
    let new_entity = |key| {
        let stream = StreamId::new("Bank", "Account", key)?;
        anyhow::Ok(notification_id(
            NotificationKind::NewEntity,
            &stream,
            1,
            None,
        ))
    };
    let mut dead: Vec<_> = host
        .host
        .dead_letters()
        .await?
        .into_iter()
        .map(|letter| {
            assert_eq!(letter.destination, "@local");
            assert!(
                letter
                    .reason
                    .contains("may not publish to topic \"partners\""),
                "{}",
                letter.reason
            );
            letter.notification_id
        })
        .collect();
    dead.sort();
    let mut expected = vec![new_entity("acc-1")?, new_entity("acc-2")?];
    expected.sort();
    assert_eq!(dead, expected);
    Ok(())
}
