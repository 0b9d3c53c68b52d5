//! The native baseline: the bank's domain logic (`examples/bank`, the very
//! `Account::handle` and `Balance::apply`) as native handlers of the host
//! ([`Host::deploy_native`](cqrs_wasi_host::Host::deploy_native)), so that
//! a row comparing it with the bank component measures the sandbox alone:
//! the same host code routes, pins, appends, folds and caches both.
//!
//! What the component does through its imports, [`NativeBank`] does
//! through the host's reads: the stream's sequence (pinned, so no store
//! read), and `Balance` for every command but `OpenAccount`, as
//! `Account::handle` asks for them. Payloads are decoded and events encoded
//! by the SDK's [`cqrs_wasi::native`], as `export_component!` does inside a
//! component.

use async_trait::async_trait;
use bank::{Account, AccountCommand, AccountEvent, Balance};
use cqrs_wasi::{CommandContext, CommandError, native, variant_names};
use cqrs_wasi_host::model::{RecordedEvent, StreamId};
use cqrs_wasi_host::native::{CommandRoute, NativeHandlers, ProjectionRoute, StoreReads, wit};

/// The version the native bank's events record.
pub const VERSION: &str = "bank-native";

/// The bank's `Account` handler and `Balance` projection, natively.
#[derive(Debug, Default)]
pub struct NativeBank;

#[async_trait]
impl NativeHandlers for NativeBank {
    fn commands(&self) -> Vec<CommandRoute> {
        variant_names::<AccountCommand>()
            .iter()
            .map(|command_type| CommandRoute {
                domain: name("Bank"),
                entity_type: name("Account"),
                command_type: name(command_type),
            })
            .collect()
    }

    fn projections(&self) -> Vec<ProjectionRoute> {
        vec![ProjectionRoute {
            domain: name("Bank"),
            entity_type: name("Account"),
            projection_type: name("Balance"),
            event_types: variant_names::<AccountEvent>()
                .iter()
                .map(|event_type| name(event_type))
                .collect(),
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
        let sequence = reads
            .stream_sequence(&stream)
            .await
            .map_err(wit::CommandError::Store)?;
        let states = if command.command_type == "OpenAccount" {
            Vec::new()
        } else {
            let balance = reads
                .run_projection(&name("Balance"), &stream, None)
                .await
                .map_err(wit::CommandError::Store)?;
            vec![("Balance".to_owned(), balance)]
        };
        let ctx = CommandContext::prepared(
            cqrs_wasi::StreamId::new(
                command.stream.domain,
                command.stream.entity_type,
                command.stream.instance_key,
            ),
            command.command_id.to_owned(),
            cqrs_wasi::EventContext::default(),
            sequence,
            states,
        );
        native::handle::<Account>(command.command_type, command.payload, &ctx)
            .map(|events| {
                events
                    .into_iter()
                    .map(|(event_type, payload)| wit::NewEvent {
                        event_type,
                        payload,
                    })
                    .collect()
            })
            .map_err(|error| match error {
                CommandError::Rejected(m) => wit::CommandError::Rejected(m),
                CommandError::InvalidPayload(m) => wit::CommandError::InvalidPayload(m),
                CommandError::Store(e) => wit::CommandError::Other(e.to_string()),
                CommandError::Other(m) => wit::CommandError::Other(m),
            })
    }

    fn apply(
        &self,
        _: &ProjectionRoute,
        state: Option<&[u8]>,
        _: &StreamId,
        events: &[&RecordedEvent],
    ) -> Result<Vec<u8>, wit::ProjectionError> {
        let events: Vec<cqrs_wasi::RecordedEvent> = events.iter().map(|e| to_sdk(e)).collect();
        native::apply::<Balance>(state, &events).map_err(wit::ProjectionError::Other)
    }
}

/// One of the bank's names, which are valid by construction.
fn name<N: TryFrom<&'static str>>(name: &'static str) -> N {
    N::try_from(name).unwrap_or_else(|_| unreachable!("{name} is a valid name"))
}

/// The event as a component's `projection.apply` receives it.
fn to_sdk(event: &RecordedEvent) -> cqrs_wasi::RecordedEvent {
    let context = &event.context;
    cqrs_wasi::RecordedEvent {
        stream: cqrs_wasi::StreamId::new(
            event.stream.domain().as_str(),
            event.stream.entity_type().as_str(),
            event.stream.instance_key().as_str(),
        ),
        event_type: event.event_type.to_string(),
        payload: event.payload.get().as_bytes().to_vec(),
        sequence: event.sequence,
        position: event.position,
        event_id: event.event_id.to_string(),
        written_at: u64::try_from(event.written_at.unix_timestamp_nanos() / 1_000).unwrap_or(0),
        context: cqrs_wasi::EventContext {
            correlation_id: context.correlation_id.clone(),
            causation_id: context.causation_id.clone(),
            who: context.who.clone(),
            source: context.source.clone(),
            commentary: context.commentary.clone(),
            handler_version: context.handler_version.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cqrs_wasi_host::store::MemoryStore;
    use cqrs_wasi_host::{CommandRequest, Host, HostError};

    use super::*;

    fn account() -> StreamId {
        StreamId::new("Bank", "Account", "acc-1").expect("a valid stream")
    }

    async fn run(host: &Host, command: &str, payload: &str) -> Result<(), HostError> {
        let request = CommandRequest::new(account(), command, payload).expect("JSON");
        host.execute(request).await.map(drop)
    }

    /// The native bank behaves as the bank component does, through the
    /// host's own command flow: same events, same refusals, same state.
    #[tokio::test]
    async fn the_native_bank_runs_through_the_host_like_the_component() -> anyhow::Result<()> {
        let host = Host::builder()
            .store(Arc::new(MemoryStore::new()))
            .build()?;
        let info = host
            .deploy_native("bank", VERSION, Arc::new(NativeBank))
            .await?;
        assert_eq!(info.digest, format!("native:{VERSION}"));
        run(&host, "OpenAccount", r#"{"owner": "Ada"}"#).await?;
        run(&host, "Deposit", r#"{"amount": 100}"#).await?;
        let refused = run(&host, "Withdraw", r#"{"amount": 250}"#)
            .await
            .expect_err("an overdraft");
        assert_eq!(
            refused.to_string(),
            "insufficient funds: balance 100 is less than 250"
        );
        run(&host, "Withdraw", r#"{"amount": 30}"#).await?;
        let state = host.project(&account(), "Balance", None).await?;
        assert_eq!(state.state.get(), r#"{"balance":70,"open":true}"#);
        assert_eq!(state.sequence, 3);
        let events = host.read_stream(&account(), 1, 10).await?;
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["AccountOpened", "MoneyDeposited", "MoneyWithdrawn"]);
        assert!(
            events.iter().all(
                |e| e.context.handler_version.as_deref() == Some(&*format!("native:{VERSION}"))
            )
        );
        assert_eq!(host.instantiations(), 0, "no sandbox, no instance");
        Ok(())
    }
}
