//! A misbehaving or hostile component cannot hurt the host, its data, or
//! other domains: each fault fails only its own call with a clear error,
//! appends nothing, and the host keeps serving.

use std::sync::Arc;
use std::time::Duration;

use cqrs_wasi_host::HostOptions;
use cqrs_wasi_host::api::ApiConfig;
use cqrs_wasi_host::grants::Grants;
use cqrs_wasi_host::runtime::RuntimeConfig;
use cqrs_wasi_host::store::MemoryStore;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{self, TestHost};

async fn sandboxed(runtime: RuntimeConfig) -> anyhow::Result<TestHost> {
    let host = TestHost::build(
        Arc::new(MemoryStore::new()),
        HostOptions {
            max_events_per_command: 10,
            max_event_bytes: 64 << 10,
            ..HostOptions::default()
        },
        runtime,
        &ApiConfig::default(),
    )
    .await?;
    host.deploy("faulty").await?;
    host.deploy("garbage").await?;
    host.command("acc", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    Ok(host)
}

fn limits() -> RuntimeConfig {
    RuntimeConfig {
        call_timeout: Duration::from_millis(500),
        max_memory_bytes: 16 << 20,
        ..RuntimeConfig::default()
    }
}

#[tokio::test]
async fn each_misbehaving_component_fails_only_its_own_call() -> anyhow::Result<()> {
    let host = sandboxed(limits()).await?;
    let cases = [
        (
            "Test/Faulty/f/Panic",
            "{}",
            "guest_fault",
            "the handler panicked on purpose",
        ),
        (
            "Test/Faulty/f/Loop",
            "{}",
            "deadline_exceeded",
            "ran past its 500ms deadline",
        ),
        (
            "Test/Faulty/f/Allocate",
            "{}",
            "guest_fault",
            "memory allocation of 1048576 bytes failed",
        ),
        (
            "Test/Faulty/f/Huge",
            r#"{"bytes": 70000}"#,
            "invalid_output",
            "the limit is 65536",
        ),
        (
            "Test/Faulty/f/Many",
            r#"{"count": 11}"#,
            "invalid_output",
            "at most 10",
        ),
        (
            "Test/Faulty/f/Snoop",
            r#"{"instance_key": "acc"}"#,
            "handler_failed",
            "may not read domain Bank",
        ),
        (
            "Test/Garbage/g/NotJson",
            "{}",
            "invalid_output",
            "an event payload is not interoperable JSON",
        ),
        (
            "Test/Garbage/g/Reserved",
            "{}",
            "invalid_output",
            "reserved for notifications",
        ),
    ];
    for (path, body, code, says) in cases {
        let (status, answer) = host.post(&format!("/api/commands/{path}"), body).await?;
        assert_eq!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{path}: {answer}"
        );
        assert_eq!(answer["code"], code, "{path}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{path}: {message}");

        let (status, deposit) = host.command("acc", "Deposit", r#"{"amount": 1}"#).await?;
        assert_eq!(status, StatusCode::OK, "after {path}: {deposit}");
    }
    let (status, answer) = host.get("/api/projections/Test/Garbage/g/Junk").await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
    assert_eq!(answer["code"], "invalid_output");

    let appended = host.all_events().await?;
    assert!(
        appended.iter().all(|e| e.stream.domain() == "Bank"),
        "no misbehaving call appended anything"
    );
    assert_eq!(host.balance("acc").await?["balance"], 8);
    // The same commands within the limits succeed.
    for (path, body) in [
        ("Test/Faulty/f/Huge", r#"{"bytes": 1000}"#),
        ("Test/Faulty/f/Many", r#"{"count": 10}"#),
    ] {
        let (status, answer) = host.post(&format!("/api/commands/{path}"), body).await?;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    }
    Ok(())
}

#[tokio::test]
async fn a_guest_sees_no_filesystem_network_environment_or_arguments() -> anyhow::Result<()> {
    let host = sandboxed(RuntimeConfig::default()).await?;
    let (status, answer) = host.post("/api/commands/Test/Faulty/p/Probe", "{}").await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, page) = host.get("/api/streams/Test/Faulty/p/events").await?;
    let probed: &Value = &page["events"][0]["payload"];
    assert_eq!(probed["env_vars"], 0, "{probed}");
    assert_eq!(probed["args"], 0, "{probed}");
    assert!(
        probed["filesystem"]
            .as_str()
            .is_some_and(|s| s.starts_with("refused")),
        "{probed}"
    );
    assert!(
        probed["network"]
            .as_str()
            .is_some_and(|s| s.starts_with("refused")),
        "{probed}"
    );
    assert_eq!(probed["random_works"], true, "{probed}");
    assert_eq!(probed["clock_works"], true, "{probed}");
    Ok(())
}

#[tokio::test]
async fn granted_domains_can_be_read_and_ungranted_appends_are_refused_at_deploy()
-> anyhow::Result<()> {
    let store = Arc::new(MemoryStore::new());
    let host = cqrs_wasi_host::Host::builder()
        .store(store)
        .grant(
            "faulty",
            Grants {
                read: vec!["Test".into(), "Bank".into()],
                append: vec!["Test".into()],
                ..Grants::default()
            },
        )
        .grant(
            "garbage",
            Grants {
                read: vec!["*".into()],
                append: vec!["Elsewhere".into()],
                ..Grants::default()
            },
        )
        .build()?;
    host.deploy("bank", support::component("bank")).await?;
    host.deploy("faulty", support::component("faulty")).await?;
    let account = cqrs_wasi_host::model::StreamId::new("Bank", "Account", "acc")?;
    host.execute(cqrs_wasi_host::CommandRequest::new(
        account,
        "OpenAccount",
        r#"{"owner": "Ada"}"#,
    )?)
    .await?;
    let snoop = cqrs_wasi_host::model::StreamId::new("Test", "Faulty", "s")?;
    let outcome = host
        .execute(cqrs_wasi_host::CommandRequest::new(
            snoop.clone(),
            "Snoop",
            r#"{"instance_key": "acc"}"#,
        )?)
        .await?;
    assert_eq!(outcome.events.len(), 1);
    let events = host.read_stream(&snoop, 1, 10).await?;
    assert_eq!(events[0].payload.get(), r#"{"events":1}"#);

    let refused = host
        .deploy("garbage", support::component("garbage"))
        .await
        .expect_err("garbage may not append to Test");
    assert_eq!(refused.code(), "not_granted");
    assert!(
        refused
            .to_string()
            .contains("may not append to domain Test"),
        "{refused}"
    );
    assert!(host.components().iter().all(|c| c.name != "garbage"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saturated_pool_answers_503_with_retry_after_then_serves_again() -> anyhow::Result<()> {
    let host = Arc::new(
        sandboxed(RuntimeConfig {
            max_concurrent_calls: 2,
            queue_timeout: Duration::from_millis(200),
            ..RuntimeConfig::default()
        })
        .await?,
    );
    let sleepers: Vec<_> = (0..2)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move {
                host.post(
                    &format!("/api/commands/Test/Faulty/sleep-{i}/Sleep"),
                    r#"{"millis": 2000}"#,
                )
                .await
            })
        })
        .collect();
    // Once both sleepers hold their slots, a deposit is turned away.
    let mut turned_away = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let response = host
            .client
            .post(format!(
                "{}/api/commands/Bank/Account/acc/Deposit",
                host.url
            ))
            .body(r#"{"amount": 1}"#)
            .send()
            .await?;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            turned_away = Some(response);
            break;
        }
    }
    let response = turned_away.expect("a saturated pool turns callers away");
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await?;
    assert_eq!(body["code"], "busy", "{body}");

    for sleeper in sleepers {
        let (status, body) = sleeper.await??;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for _ in 0..3 {
        let (status, body) = host.command("acc", "Deposit", r#"{"amount": 1}"#).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    Ok(())
}
