//! Embedding the host in a Rust program: an in-memory store, a component
//! loaded from bytes, commands sent in-process, a projection read back.
//!
//! ```sh
//! cargo xtask components
//! cargo run -p cqrs-wasi-host --example embed -- target/components/wasm32-wasip2/release/bank.wasm
//! ```

use std::sync::Arc;

use anyhow::Context;
use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::{CommandRequest, Host, HostError};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/components/wasm32-wasip2/release/bank.wasm".to_owned());
    let bank = std::fs::read(&path).with_context(|| format!("cannot read {path}"))?;
    let balance = run(bank).await?;
    println!("balance: {balance}");
    Ok(())
}

/// Opens an account, moves money, and returns the `Balance` projection.
async fn run(bank: Vec<u8>) -> anyhow::Result<String> {
    let host = Host::builder()
        .store(Arc::new(MemoryStore::new()))
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
    Ok(balance.state.get().to_owned())
}

#[cfg(test)]
#[path = "../../tests/support/mod.rs"]
mod support;

#[cfg(test)]
#[tokio::test]
async fn the_embedding_example_runs() -> anyhow::Result<()> {
    let balance = run(support::component("bank")).await?;
    assert_eq!(balance, r#"{"balance":25,"open":true}"#);
    Ok(())
}
