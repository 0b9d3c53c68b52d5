//! A guest that traps, loops or exhausts its memory fails its own call with
//! a clear error, appends nothing, and the host keeps serving.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cqrs_wasi_host::runtime::RuntimeConfig;
use cqrs_wasi_host::store::MemoryStore;
use reqwest::StatusCode;
use support::TestHost;

#[tokio::test]
async fn a_faulting_guest_fails_only_its_own_call() -> anyhow::Result<()> {
    let host = TestHost::with_runtime(
        Arc::new(MemoryStore::new()),
        RuntimeConfig {
            call_timeout: Duration::from_millis(500),
            max_memory_bytes: 16 << 20,
            ..RuntimeConfig::default()
        },
    )
    .await?;
    host.deploy("faulty").await?;
    host.command("acc-f", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;

    for (command, code, says) in [
        ("Panic", "guest_fault", "the handler panicked on purpose"),
        ("Loop", "deadline_exceeded", "deadline"),
        (
            "Allocate",
            "guest_fault",
            "memory allocation of 1048576 bytes failed",
        ),
    ] {
        let (status, body) = host
            .post(&format!("/api/commands/Test/Faulty/f-1/{command}"), "{}")
            .await?;
        assert_eq!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{command}: {body}"
        );
        assert_eq!(body["code"], code, "{command}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("component faulty") && message.contains(says),
            "{message}"
        );

        // The host goes on serving, and the fault appended nothing.
        let (status, body) = host.command("acc-f", "Deposit", r#"{"amount": 1}"#).await?;
        assert_eq!(status, StatusCode::OK, "after {command}: {body}");
        let (_, events) = host.get("/api/streams/Test/Faulty/f-1/events").await?;
        assert_eq!(events["events"].as_array().map(Vec::len), Some(0));
    }
    assert_eq!(host.balance("acc-f").await?["balance"], 3);
    Ok(())
}
