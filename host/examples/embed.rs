//! Embedding the host in a Rust program: an in-memory store, a notification
//! sink of the program's own, a component loaded from bytes, commands sent
//! in-process, a projection read back, and the notifications they raised.
//!
//! ```sh
//! cargo xtask components
//! cargo run -p cqrs-wasi-host --example embed -- target/components/wasm32-wasip2/component/bank.wasm
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::notifications::{
    DeliveryOutcome, Destination, Notification, NotificationOutcome, NotificationSink, Progress,
};
use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::{CommandRequest, Host, HostError};

/// A destination of the host's notifications: this one keeps their event
/// types. A real one might feed a message bus or a UI. The host delivers to
/// it from its outbox, in order, at least once.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl NotificationSink for Recorder {
    async fn deliver(
        &self,
        notifications: &[Notification],
        _progress: &Progress,
    ) -> Vec<NotificationOutcome> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        notifications
            .iter()
            .map(|notification| {
                seen.push(notification.event_type().to_owned());
                NotificationOutcome {
                    id: notification.id(),
                    outcome: DeliveryOutcome::Delivered,
                    attempts: 1,
                    payload_omitted: false,
                }
            })
            .collect()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/components/wasm32-wasip2/component/bank.wasm".to_owned());
    let bank = std::fs::read(&path).with_context(|| format!("cannot read {path}"))?;
    let (balance, notifications) = run(bank).await?;
    println!("balance: {balance}");
    println!("notifications: {notifications:#?}");
    Ok(())
}

/// Opens an account, moves money, and returns the `Balance` projection and
/// the event types of the notifications it raised.
async fn run(bank: Vec<u8>) -> anyhow::Result<(String, Vec<String>)> {
    let recorder = Arc::new(Recorder::default());
    let host = Host::builder()
        .store(Arc::new(MemoryStore::new()))
        .destination(Destination::new("recorder", recorder.clone()))
        .build()?;
    host.deploy("bank", bank).await?;

    let account = StreamId::new("Bank", "Account", "embedded-1")?;
    for (command, payload) in [
        ("OpenAccount", r#"{"owner": "Ada"}"#),
        ("Deposit", r#"{"amount": 40}"#),
        ("Withdraw", r#"{"amount": 15}"#),
    ] {
        let outcome = host
            .execute(CommandRequest::new(account.clone(), command, payload)?)
            .await?;
        println!("{command}: appended at {}", outcome.stream_sequence);
    }

    // The domain's refusal is an ordinary error value.
    let overdraft = host
        .execute(CommandRequest::new(
            account.clone(),
            "Withdraw",
            r#"{"amount": 100}"#,
        )?)
        .await;
    match overdraft {
        Err(HostError::Rejected { message }) => println!("Withdraw 100: refused: {message}"),
        other => anyhow::bail!("an overdraft must be refused, got {other:?}"),
    }

    let balance = host.project(&account, "Balance", None).await?;

    // Notifications go out in the background, projection states a moment
    // after the events: wait until the recorder has the last state and has
    // caught up with the outbox.
    let seen = || {
        recorder
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen()
        .iter()
        .any(|t| t == "Bank.Account.Projection.Balance")
        || host.destinations().await?.iter().any(|d| d.lag > 0)
    {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no notifications");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let notifications = seen();
    Ok((balance.state.get().to_owned(), notifications))
}

/// Builds the bank component as `cargo xtask components` does (the
/// `build-components` alias of `.cargo/config.toml`), into a target
/// directory of its own, so that this never waits on the lock of the
/// `cargo test` running it; its bytes.
#[cfg(test)]
fn bank_component() -> anyhow::Result<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the host crate is in the workspace")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(root)
        .args(["build-components", "--package", "bank"])
        .status()
        .context("cannot run cargo")?;
    anyhow::ensure!(
        status.success(),
        "building the bank component failed: {status}"
    );
    let path = root.join("target/components/wasm32-wasip2/component/bank.wasm");
    std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
#[tokio::test]
async fn the_embedding_example_runs() -> anyhow::Result<()> {
    let (balance, notifications) = run(bank_component()?).await?;
    assert_eq!(balance, r#"{"balance":25,"open":true}"#);
    // The change feed in order; each command's Balance state after it (the
    // projection-completed ones may coalesce, so only the last is certain).
    let feed: Vec<&str> = notifications
        .iter()
        .map(String::as_str)
        .filter(|t| !t.contains(".Projection."))
        .collect();
    assert_eq!(
        feed,
        [
            "Bank.Account.NewEntity",
            "Bank.Account.AccountOpened",
            "Bank.Account.MoneyDeposited",
            "Bank.Account.MoneyWithdrawn",
        ]
    );
    assert!(notifications.contains(&"Bank.Account.Projection.Balance".to_owned()));
    Ok(())
}
