//! The host's limits at their edges, each pinned by a literal here rather
//! than by the constant under test: a command's request between Event
//! Grid's 10^6 bytes and the API's 2^20, a projection state of 4 MiB, and
//! 200 log lines a call. (The Event Grid event and request limits
//! themselves are in `event_grid.rs`.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::notifications::{
    Auth, Destination, EventGridConfig, EventGridPublisher, EventSchema, KindSet, RaisePolicy,
    Secret,
};
use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::{CommandRequest, Host, HostConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::event_grid::{EventGridStandIn, Schema};
use crate::support::{self, TestHost};

/// A command whose request is more than Event Grid's 10^6 bytes and less
/// than the API's 2^20 is taken, and its event is stored whole; its
/// notification, over Event Grid's event limit, reaches the topic without
/// its payload, flagged, in a request the topic takes.
#[tokio::test]
async fn a_command_between_a_million_bytes_and_a_mebibyte_reaches_event_grid_without_its_payload()
-> anyhow::Result<()> {
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await?;
    let config = EventGridConfig::new(
        stand_in.endpoint(),
        EventSchema::EventGrid,
        Auth::Key(Secret::new(stand_in.key())),
    );
    let topic = Destination::new("grid", Arc::new(EventGridPublisher::new(config)?));
    let host = TestHost::with_destinations(
        Arc::new(MemoryStore::new()),
        HostConfig::default(),
        vec![topic],
    )
    .await?;
    host.deploy("faulty").await?;

    let text = "x".repeat(1_010_000 - r#"{"text":""}"#.len());
    let body = json!({ "text": text }).to_string();
    assert!(
        1_000_000 < body.len() && body.len() < 1_048_576,
        "{}",
        body.len()
    );
    let (status, answer) = host
        .post("/api/commands/Test/Faulty/big/Echo", &body)
        .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let stored = host
        .host
        .read_stream(&StreamId::new("Test", "Faulty", "big")?, 1, 1)
        .await?;
    let payload: Value = serde_json::from_str(stored[0].payload.get())?;
    assert!(
        payload["text"] == text.as_str(),
        "the event is stored whole"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let notification = loop {
        let appended = stand_in
            .accepted()
            .into_iter()
            .find(|event| event["eventType"] == "Test.Faulty.Echoed");
        if let Some(event) = appended {
            break event;
        }
        assert!(Instant::now() < deadline, "{:?}", stand_in.requests());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(notification["data"]["payloadOmitted"], json!(true));
    assert!(notification["data"].get("eventPayload").is_none());
    assert_eq!(notification["data"]["sequenceNumber"], json!(1));
    for request in stand_in.requests() {
        assert!(request.bytes <= 1_000_000, "{request:?}");
        assert_eq!(request.status, Some(200), "{request:?}");
    }
    assert!(host.host.dead_letters().await?.is_empty());
    Ok(())
}

/// A projection state may be 4 MiB (4,194,304 bytes of JSON); one byte
/// more is refused as the guest's invalid output.
#[tokio::test]
async fn a_projection_state_may_be_four_mebibytes() -> anyhow::Result<()> {
    let host = TestHost::build(
        Arc::new(MemoryStore::new()),
        // No notifications: no projection runs in the background.
        HostConfig {
            raise: RaisePolicy::new(KindSet::NONE),
            ..HostConfig::default()
        },
        Default::default(),
        &Default::default(),
    )
    .await?;
    host.deploy("faulty").await?;
    let grow = |bytes: usize| {
        let host = &host;
        async move {
            let (status, body) = host
                .post(
                    "/api/commands/Test/Faulty/state/Grow",
                    &json!({ "bytes": bytes }).to_string(),
                )
                .await?;
            assert_eq!(status, StatusCode::OK, "{body}");
            host.get("/api/projections/Test/Faulty/state/Sized").await
        }
    };

    let (status, body) = grow(4_194_304).await?;
    assert_eq!(status, StatusCode::OK, "{:.200}", body.to_string());
    assert_eq!(body["state"].as_str().map(str::len), Some(4_194_302));

    let (status, body) = grow(4_194_305).await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["code"], "invalid_output");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("a state of 4194305 bytes; the limit is 4194304"),
        "{message}"
    );
    Ok(())
}

/// A guest's stdout and stderr reach the host's log a line at a time, at
/// most 200 lines a call across both: a call that writes more gets its
/// first 200 and then a notice that the rest is dropped.
#[tokio::test]
async fn a_call_puts_at_most_200_lines_in_the_log() -> anyhow::Result<()> {
    let host = Host::builder()
        .store(Arc::new(MemoryStore::new()))
        .build()?;
    host.deploy("faulty", support::component("faulty")).await?;
    let notice = "the call wrote more than 200 lines; the rest of its output is dropped";
    for (written, logged, noticed) in [(200, 200, false), (201, 200, true), (1000, 200, true)] {
        // The runtime is single-threaded: the guest's output is logged on
        // this thread.
        let logs = support::logs::capture();
        host.execute(CommandRequest::new(
            StreamId::new("Test", "Faulty", "chatty")?,
            "Chatter",
            &json!({ "lines": written }).to_string(),
        )?)
        .await?;
        let text = logs.text();
        let guest: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("cqrs_wasi_host::guest"))
            .collect();
        let lines: std::collections::BTreeSet<&str> = guest
            .iter()
            .filter_map(|line| line.split_once(": line ").map(|(_, n)| n))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        assert_eq!(lines.len(), logged, "{written} written:\n{text}");
        assert_eq!(
            guest.iter().filter(|line| line.contains(notice)).count(),
            usize::from(noticed),
            "{written} written:\n{text}"
        );
        assert_eq!(guest.len(), logged + usize::from(noticed), "{text}");
    }
    Ok(())
}
