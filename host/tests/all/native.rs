//! Native handlers beside wasm components on one host: routed, appended and
//! folded by the same code, reading each other's projections.

use std::sync::Arc;

use cqrs_wasi_host::model::{RecordedEvent, StreamId};
use cqrs_wasi_host::native::{CommandRoute, NativeHandlers, ProjectionRoute, StoreReads, wit};
use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::{CommandRequest, Host};
use serde_json::Value;

/// A native `Bank/Account/Audit` command, which reads the bank component's
/// `Balance` and records it, and a native `Deposits` projection, which
/// counts the component's deposits.
struct Auditor;

#[async_trait::async_trait]
impl NativeHandlers for Auditor {
    fn commands(&self) -> Vec<CommandRoute> {
        vec![CommandRoute {
            domain: "Bank".parse().expect("a valid name"),
            entity_type: "Account".parse().expect("a valid name"),
            command_type: "Audit".parse().expect("a valid name"),
        }]
    }

    fn projections(&self) -> Vec<ProjectionRoute> {
        vec![ProjectionRoute {
            domain: "Bank".parse().expect("a valid name"),
            entity_type: "Account".parse().expect("a valid name"),
            projection_type: "Deposits".parse().expect("a valid name"),
            event_types: vec!["MoneyDeposited".parse().expect("a valid name")],
        }]
    }

    async fn handle(
        &self,
        command: &wit::Command<'_>,
        reads: &dyn StoreReads,
    ) -> Result<Vec<wit::NewEvent>, wit::CommandError> {
        let stream = StreamId::new(
            command.stream.domain,
            command.stream.entity_type,
            command.stream.instance_key,
        )
        .map_err(|e| wit::CommandError::Other(e.to_string()))?;
        let balance = reads
            .run_projection(&"Balance".parse().expect("a valid name"), &stream, None)
            .await
            .map_err(wit::CommandError::Store)?;
        let balance: Value = serde_json::from_slice(&balance)
            .map_err(|e| wit::CommandError::Other(e.to_string()))?;
        Ok(vec![wit::NewEvent {
            event_type: "Audited".into(),
            payload: serde_json::to_vec(&serde_json::json!({ "balance": balance["balance"] }))
                .map_err(|e| wit::CommandError::Other(e.to_string()))?,
        }])
    }

    fn apply(
        &self,
        _: &ProjectionRoute,
        state: Option<&[u8]>,
        _: &StreamId,
        events: &[&RecordedEvent],
    ) -> Result<Vec<u8>, wit::ProjectionError> {
        let before: u64 = match state {
            Some(state) => serde_json::from_slice(state)
                .map_err(|e| wit::ProjectionError::InvalidState(e.to_string()))?,
            None => 0,
        };
        Ok((before + events.len() as u64).to_string().into_bytes())
    }
}

#[tokio::test]
async fn native_and_wasm_handlers_share_routes_streams_and_projections() -> anyhow::Result<()> {
    let host = Host::builder()
        .store(Arc::new(MemoryStore::new()))
        .build()?;
    host.deploy("bank", crate::support::component("bank"))
        .await?;
    let info = host
        .deploy_native("auditor", "1.0", Arc::new(Auditor))
        .await?;
    assert_eq!(info.digest, "native:1.0");
    assert_eq!(info.commands, ["Bank/Account/Audit"]);

    let account = StreamId::new("Bank", "Account", "acc-1")?;
    let run = |command: &str, payload: &str| {
        let request = CommandRequest::new(account.clone(), command, payload);
        let host = host.clone();
        async move { anyhow::Ok(host.execute(request?).await?) }
    };
    run("OpenAccount", r#"{"owner": "Ada"}"#).await?;
    run("Deposit", r#"{"amount": 40}"#).await?;
    run("Audit", "{}").await?;
    run("Deposit", r#"{"amount": 2}"#).await?;

    let events = host.read_stream(&account, 1, 10).await?;
    let audited = &events[2];
    assert_eq!(audited.event_type, "Audited");
    assert_eq!(audited.payload.get(), r#"{"balance":40}"#);
    assert_eq!(
        audited.context.handler_version.as_deref(),
        Some("native:1.0")
    );
    assert!(
        events[3]
            .context
            .handler_version
            .as_deref()
            .is_some_and(|v| v.starts_with("sha256:")),
        "the bank component appended the deposit"
    );
    let deposits = host.project(&account, "Deposits", None).await?;
    assert_eq!(deposits.state.get(), "2");
    assert_eq!(deposits.sequence, 4);
    let balance = host.project(&account, "Balance", None).await?;
    assert_eq!(
        serde_json::from_str::<Value>(balance.state.get())?["balance"],
        42
    );
    Ok(())
}
