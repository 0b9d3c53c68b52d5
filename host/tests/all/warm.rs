//! Warm instances: what carries over between calls, and what never does.
//!
//! The `counter` fixture counts, in a global, the calls its instance has
//! served, and each event it appends says how many: a call that reused an
//! instance sees the count go on, a call in a fresh instance sees 1. So each
//! rule of DESIGN.md ("Host behaviour") that throws an instance away is a
//! count that starts again.

use std::sync::Arc;
use std::time::Duration;

use crate::support::TestHost;
use cqrs_wasi_host::ApiConfig;
use cqrs_wasi_host::Grants;
use cqrs_wasi_host::HostConfig;
use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::{Isolation, ReuseConfig, RuntimeConfig};
use reqwest::StatusCode;
use serde_json::Value;

/// A host with the bank and the counter, whose calls run under `reuse`
/// (and a short deadline, for the looping call).
async fn host(reuse: ReuseConfig) -> anyhow::Result<TestHost> {
    let runtime = RuntimeConfig {
        call_timeout: Duration::from_millis(400),
        max_memory_bytes: 16 << 20,
        reuse,
        ..RuntimeConfig::default()
    };
    let host = TestHost::build(
        Arc::new(MemoryStore::new()),
        HostConfig::default(),
        runtime,
        &ApiConfig::default(),
    )
    .await?;
    host.deploy("counter").await?;
    Ok(host)
}

/// Reuse, with no recycling by count in the way.
fn reuse() -> ReuseConfig {
    ReuseConfig {
        isolation: Isolation::Reuse,
        recycle_after_calls: 1_000..=1_000,
        ..ReuseConfig::default()
    }
}

/// Sends `command` to `Test/Counter/c`; the status and the answer.
async fn counter(host: &TestHost, command: &str) -> anyhow::Result<(StatusCode, Value)> {
    host.post(&format!("/api/commands/Test/Counter/c/{command}"), "{}")
        .await
}

/// The count the counter's instance reached with a `Count`.
async fn count(host: &TestHost) -> anyhow::Result<u64> {
    let (status, answer) = counter(host, "Count").await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let sequence = answer["streamSequence"].as_u64().unwrap_or_default();
    let (_, page) = host
        .get(&format!(
            "/api/streams/Test/Counter/c/events?from={sequence}"
        ))
        .await?;
    page["events"][0]["payload"]["calls"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no count in {page}"))
}

async fn counts(host: &TestHost, calls: usize) -> anyhow::Result<Vec<u64>> {
    let mut counts = Vec::with_capacity(calls);
    for _ in 0..calls {
        counts.push(count(host).await?);
    }
    Ok(counts)
}

#[tokio::test]
async fn a_guests_memory_carries_over_only_within_one_version() -> anyhow::Result<()> {
    let host = host(reuse()).await?;
    assert_eq!(counts(&host, 3).await?, [1, 2, 3]);
    // Calls of another component in between do not touch its instance.
    let (status, _) = host
        .command("acc", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count(&host).await?, 4);

    // A new version starts from fresh instances...
    let first = crate::support::component("counter");
    host.host
        .deploy("counter", crate::support::variant(&first, "v2"))
        .await?;
    assert_eq!(counts(&host, 2).await?, [1, 2]);
    // ...and so does a rollback to a version that served before.
    host.host.rollback("counter", None).await?;
    assert_eq!(counts(&host, 2).await?, [1, 2]);
    assert!(host.discarded("retired").await? >= 2);
    Ok(())
}

#[tokio::test]
async fn a_trap_a_deadline_and_a_refused_growth_each_cost_the_instance() -> anyhow::Result<()> {
    let host = host(reuse()).await?;
    assert_eq!(counts(&host, 2).await?, [1, 2]);

    let (status, answer) = counter(&host, "Trap").await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
    assert_eq!(answer["code"], "guest_fault", "{answer}");
    assert_eq!(counts(&host, 2).await?, [1, 2], "after a trap");

    let (status, answer) = counter(&host, "Loop").await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
    assert_eq!(answer["code"], "deadline_exceeded", "{answer}");
    assert_eq!(counts(&host, 2).await?, [1, 2], "after a deadline");

    // The guest survives the refusal and answers with an error of its own;
    // its state is suspect all the same.
    let (status, answer) = counter(&host, "Exhaust").await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
    assert_eq!(answer["code"], "handler_failed", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("survived a refused allocation")),
        "{answer}"
    );
    assert_eq!(counts(&host, 2).await?, [1, 2], "after a refused growth");

    assert_eq!(host.discarded("trap").await?, 1);
    assert_eq!(host.discarded("deadline").await?, 1);
    assert_eq!(host.discarded("memory_refused").await?, 1);
    // The bank served every call of the while in its own instance.
    let (status, _) = host
        .command("acc", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    assert_eq!(status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn an_instance_is_recycled_after_its_number_of_calls() -> anyhow::Result<()> {
    let host = host(ReuseConfig {
        recycle_after_calls: 3..=3,
        ..reuse()
    })
    .await?;
    assert_eq!(counts(&host, 7).await?, [1, 2, 3, 1, 2, 3, 1]);
    assert_eq!(host.discarded("recycled").await?, 2);
    Ok(())
}

#[tokio::test]
async fn per_call_isolation_gives_every_call_a_fresh_instance() -> anyhow::Result<()> {
    let host = host(ReuseConfig {
        isolation: Isolation::PerCall,
        ..reuse()
    })
    .await?;
    assert_eq!(counts(&host, 4).await?, [1, 1, 1, 1]);
    // A guest that scribbles over its memory leaves nothing for the next.
    let (status, _) = counter(&host, "Scribble").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count(&host).await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_guest_that_scribbles_over_its_memory_harms_no_other_component_or_version()
-> anyhow::Result<()> {
    let host = host(reuse()).await?;
    let (status, _) = host
        .command("acc", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = counter(&host, "Scribble").await?;
    assert_eq!(status, StatusCode::OK);
    // Its own next call, in the same version, may see what it left (handler
    // code must not rely on memory either way)...
    assert_eq!(count(&host).await?, 1_000_001);
    // ...another component does not...
    for _ in 0..3 {
        let (status, answer) = host.command("acc", "Deposit", r#"{"amount": 2}"#).await?;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    assert_eq!(host.balance("acc").await?["balance"], 6);
    // ...nor another version of it.
    let first = crate::support::component("counter");
    host.host
        .deploy("counter", crate::support::variant(&first, "clean"))
        .await?;
    assert_eq!(counts(&host, 2).await?, [1, 2]);
    Ok(())
}

/// Grants are checked on every call, against the component the call is
/// for, whatever instance serves it; and an instance carries no call's
/// services into the next: each read sees the stream as it is now.
#[tokio::test]
async fn grants_and_reads_are_each_calls_own() -> anyhow::Result<()> {
    let store = Arc::new(MemoryStore::new());
    let granted = |read: &[&str]| Grants {
        read: read.iter().map(|d| (*d).to_owned()).collect(),
        append: vec!["Test".into(), "Bank".into()],
        ..Grants::default()
    };
    let host = cqrs_wasi_host::Host::builder()
        .store(store)
        .runtime(RuntimeConfig {
            reuse: reuse(),
            ..RuntimeConfig::default()
        })
        .grant("counter", granted(&["Test", "Bank"]))
        .build()?;
    host.deploy("bank", crate::support::component("bank"))
        .await?;
    host.deploy("counter", crate::support::component("counter"))
        .await?;
    let account = cqrs_wasi_host::model::StreamId::new("Bank", "Account", "acc")?;
    let snoop = cqrs_wasi_host::model::StreamId::new("Test", "Counter", "s")?;
    let run = |stream: &cqrs_wasi_host::model::StreamId, command: &str, payload: &str| {
        let request = cqrs_wasi_host::CommandRequest::new(stream.clone(), command, payload);
        let host = host.clone();
        async move { anyhow::Ok(host.execute(request?).await?) }
    };
    run(&account, "OpenAccount", r#"{"owner": "Ada"}"#).await?;
    for expected in 1..=3u64 {
        run(&snoop, "Snoop", r#"{"instance_key": "acc"}"#).await?;
        let events = host.read_stream(&snoop, expected, 1).await?;
        let seen: Value = serde_json::from_str(events[0].payload.get())?;
        assert_eq!(seen["calls"], expected, "one warm instance served each");
        assert_eq!(
            seen["events"], expected,
            "each read saw the stream as it was"
        );
        run(&account, "Deposit", r#"{"amount": 1}"#).await?;
    }

    // The same component on a host that grants it less is refused on its
    // first call and on every warm one after.
    let host = cqrs_wasi_host::Host::builder()
        .store(Arc::new(MemoryStore::new()))
        .runtime(RuntimeConfig {
            reuse: reuse(),
            ..RuntimeConfig::default()
        })
        .grant("counter", granted(&["Test"]))
        .build()?;
    host.deploy("counter", crate::support::component("counter"))
        .await?;
    for _ in 0..3 {
        let refused = host
            .execute(cqrs_wasi_host::CommandRequest::new(
                snoop.clone(),
                "Snoop",
                r#"{"instance_key": "acc"}"#,
            )?)
            .await
            .expect_err("Bank is not granted");
        assert!(
            refused.to_string().contains("may not read domain Bank"),
            "{refused}"
        );
    }
    Ok(())
}
