//! Deploying components: what is refused at load, and why.

use std::sync::Arc;

use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::{Host, HostError};

use crate::support;

fn host() -> anyhow::Result<Host> {
    Ok(Host::builder()
        .store(Arc::new(MemoryStore::new()))
        .build()?)
}

#[tokio::test]
async fn a_component_without_handler_exports_is_refused_naming_what_is_missing()
-> anyhow::Result<()> {
    let host = host()?;
    let error = host
        .deploy("cli", support::component("no-handler"))
        .await
        .expect_err("a CLI command is not a handler");
    assert_eq!(error.code(), "invalid_component");
    let message = error.to_string();
    assert!(
        message.contains("exports none of `cqrs-wasi:handlers/command-handler@0.2.0`, `cqrs-wasi:handlers/projection@0.2.0`, `cqrs-wasi:handlers/notification-handler@0.2.0`"),
        "{message}"
    );
    assert!(
        message.contains("wasi:cli/run"),
        "names what it does export: {message}"
    );
    assert!(host.components().is_empty());
    Ok(())
}

#[tokio::test]
async fn bytes_that_are_not_a_component_are_refused() -> anyhow::Result<()> {
    let host = host()?;
    let error = host
        .deploy("junk", b"\0asm but not really".to_vec())
        .await
        .expect_err("junk");
    assert!(matches!(error, HostError::Load(_)), "{error}");
    assert!(
        error
            .to_string()
            .contains("not a valid WebAssembly component"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn the_bank_component_describes_its_routes() -> anyhow::Result<()> {
    let host = host()?;
    let info = host.deploy("bank", support::component("bank")).await?;
    assert!(info.digest.starts_with("sha256:"));
    let mut commands = info.commands.clone();
    commands.sort();
    assert_eq!(
        commands,
        [
            "Bank/Account/CloseAccount",
            "Bank/Account/Deposit",
            "Bank/Account/OpenAccount",
            "Bank/Account/Withdraw"
        ]
    );
    assert_eq!(info.projections, ["Bank/Account/Balance"]);
    Ok(())
}

#[tokio::test]
async fn a_second_component_claiming_the_same_commands_is_refused() -> anyhow::Result<()> {
    let host = host()?;
    let first = host.deploy("bank", support::component("bank")).await?;
    let error = host
        .deploy("bank-copy", support::component("bank"))
        .await
        .expect_err("routes are owned by bank");
    assert_eq!(error.code(), "route_conflict");
    assert!(
        error
            .to_string()
            .contains("already handled by component bank"),
        "{error}"
    );
    let live: Vec<_> = host
        .components()
        .into_iter()
        .map(|c| (c.name, c.digest))
        .collect();
    assert_eq!(live, [("bank".to_owned(), first.digest)]);
    Ok(())
}
