//! One `Idempotency-Key`, many requests at once: the command runs once,
//! whichever host and however the requests interleave. And one key for two
//! different commands: the second is refused, not answered with the
//! first's outcome.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cqrs_wasi_host::ApiConfig;
use cqrs_wasi_host::HostConfig;
use cqrs_wasi_host::RuntimeConfig;
use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::store::{SqliteConfig, SqliteStore};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{self, TestHost};

/// A host of the `gated` fixture over `store`, with compiled code cached in
/// `cache`. Its held calls wait for the test, so their deadline is far
/// away.
async fn gated_host(store: Arc<SqliteStore>, cache: &Path) -> anyhow::Result<Arc<TestHost>> {
    let host = TestHost::build(
        store,
        HostConfig::default(),
        RuntimeConfig {
            call_timeout: Duration::from_secs(300),
            cache_dir: Some(cache.to_owned()),
            ..RuntimeConfig::default()
        },
        &ApiConfig::default(),
    )
    .await?;
    host.deploy("gated").await?;
    Ok(Arc::new(host))
}

/// POSTs `command` with `body` to `Test/Gated/shared` with key `dep-1`.
async fn send(host: &TestHost, command: &str, body: &str) -> anyhow::Result<(StatusCode, Value)> {
    let request = host
        .client
        .post(format!(
            "{}/api/commands/Test/Gated/shared/{command}",
            host.url
        ))
        .header("Idempotency-Key", "dep-1")
        .body(body.to_owned());
    let response = request.send().await?;
    Ok((response.status(), response.json().await?))
}

/// Two hosts sharing a store do not share their per-stream turn, so both
/// can start the same command: here both are held at a gate until each
/// has its handler running, so that both found no outcome recorded for the
/// key before either appended. The one that appends second must find the
/// key recorded then, and answer with the first one's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_sharing_an_idempotency_key_run_the_command_once() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(
        dir.path().join("events.db"),
        SqliteConfig::default(),
    )?);
    let cache = dir.path().join("cache");
    let hosts = [
        gated_host(store.clone(), &cache).await?,
        gated_host(store.clone(), &cache).await?,
    ];
    const HELD: &str = r#"{"amount": 5, "gate": "dep-1"}"#;

    let mut held = Vec::new();
    for host in &hosts {
        let before = host.host.calls_started();
        held.push(tokio::spawn({
            let host = host.clone();
            async move { send(&host, "HeldDeposit", HELD).await }
        }));
        support::until_a_call_starts(&host.host, before).await?;
    }
    support::open_gate(store.as_ref(), "dep-1").await?;
    let mut answers = Vec::new();
    for request in held {
        let (status, body) = request.await??;
        assert_eq!(status, StatusCode::OK, "{body}");
        answers.push(body);
    }
    // And again, through both hosts at once.
    let again: Vec<_> = (0..8)
        .map(|n| {
            let host = hosts[n % 2].clone();
            tokio::spawn(async move { send(&host, "HeldDeposit", HELD).await })
        })
        .collect();
    for request in again {
        let (status, body) = request.await??;
        assert_eq!(status, StatusCode::OK, "{body}");
        answers.push(body);
    }

    // The same key for another command: refused, not run.
    for host in &hosts {
        let (status, body) = send(host, "Deposit", r#"{"amount": 5}"#).await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "idempotency_key_reused", "{body}");
    }

    let ran: Vec<&Value> = answers.iter().filter(|a| a["replayed"] == false).collect();
    assert_eq!(ran.len(), 1, "one request ran the command: {answers:#?}");
    for answer in &answers {
        assert_eq!(answer["events"], ran[0]["events"], "{answer}");
        assert_eq!(answer["commandId"], "dep-1");
    }
    let stream = StreamId::new("Test", "Gated", "shared")?;
    let events = hosts[0].host.read_stream(&stream, 1, 100).await?;
    assert_eq!(events.len(), 1, "one deposit: {events:?}");
    assert_eq!(
        events[0].context.causation_id.as_deref(),
        Some("dep-1"),
        "{events:?}"
    );
    for host in &hosts {
        let (_, body) = host
            .get("/api/projections/Test/Gated/shared/Balance")
            .await?;
        assert_eq!(body["state"], json!(5));
    }
    Ok(())
}

/// A key reused for another payload (or command type, or stream) is
/// refused with `idempotency_key_reused`, nothing of it runs, and the
/// same command again still replays: for an append (Deposit 7 under the key
/// of a Deposit 1) and for a refusal the domain recorded alike.
#[tokio::test]
async fn a_key_reused_for_another_payload_is_refused_and_the_same_payload_replays()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = TestHost::start(&dir.path().join("events.db")).await?;
    host.command("acc-f", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    let send = |command: &'static str, payload: &'static str, key: &'static str| {
        host.command_with("acc-f", command, payload, Some(key))
    };

    let (status, first) = send("Deposit", r#"{"amount": 1}"#, "dep-1").await?;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["replayed"], false);
    // The same key and amount, written another way, is another payload: a
    // retry sends the same bytes.
    for payload in [r#"{"amount": 7}"#, r#"{"amount":1}"#] {
        let (status, body) = send("Deposit", payload, "dep-1").await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "idempotency_key_reused", "{body}");
    }
    // And so are another command type and another stream.
    let (status, body) = send("Withdraw", r#"{"amount": 1}"#, "dep-1").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "idempotency_key_reused", "{body}");
    let (status, body) = host
        .command_with("acc-g", "Deposit", r#"{"amount": 1}"#, Some("dep-1"))
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "idempotency_key_reused", "{body}");
    let (status, again) = send("Deposit", r#"{"amount": 1}"#, "dep-1").await?;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["events"], first["events"]);
    assert_eq!(host.balance("acc-f").await?["balance"], 1);

    // A refusal is recorded under its key the same way.
    let (status, refused) = send("Withdraw", r#"{"amount": 10}"#, "wd-1").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["code"], "rejected");
    let (status, body) = send("Withdraw", r#"{"amount": 1}"#, "wd-1").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "idempotency_key_reused", "{body}");
    let (status, body) = send("Withdraw", r#"{"amount": 10}"#, "wd-1").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body, refused, "the recorded refusal, again");

    let events = host.events("Bank/Account/acc-f").await?;
    assert_eq!(events.len(), 2, "opened, one deposit: {events:?}");
    assert_eq!(host.balance("acc-f").await?["balance"], 1);
    Ok(())
}
