//! The peers a Rust user would otherwise pick: the bank domain as a
//! `cqrs-es` aggregate, run on `cqrs-es`'s `MemStore`, on a
//! `PersistedEventStore` in aggregate-store mode over [`MemRepository`]
//! (cqrs-es ships no in-memory repository; this is the obvious one), and on
//! `postgres-es`.
//!
//! The aggregate runs the very same `Account::handle` and `Balance::apply`
//! as the component: its state is the `Balance` state plus the event count,
//! and the handler gets them through a prepared context.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use async_trait::async_trait;
use bank::{Account, AccountCommand, AccountEvent, Balance, BalanceState};
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::{Aggregate, DomainEvent};
use cqrs_wasi::{CommandContext, CommandHandler, Projection};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An account as a cqrs-es aggregate.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BankAccount {
    balance: BalanceState,
    events: u64,
}

/// An account event, as cqrs-es wants it (`Clone`, versioned).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BankEvent(pub AccountEvent);

impl Clone for BankEvent {
    fn clone(&self) -> Self {
        BankEvent(match &self.0 {
            AccountEvent::AccountOpened { owner } => AccountEvent::AccountOpened {
                owner: owner.clone(),
            },
            AccountEvent::MoneyDeposited { amount } => {
                AccountEvent::MoneyDeposited { amount: *amount }
            }
            AccountEvent::MoneyWithdrawn { amount } => {
                AccountEvent::MoneyWithdrawn { amount: *amount }
            }
            AccountEvent::AccountClosed {} => AccountEvent::AccountClosed {},
        })
    }
}

impl DomainEvent for BankEvent {
    fn event_type(&self) -> String {
        match self.0 {
            AccountEvent::AccountOpened { .. } => "AccountOpened",
            AccountEvent::MoneyDeposited { .. } => "MoneyDeposited",
            AccountEvent::MoneyWithdrawn { .. } => "MoneyWithdrawn",
            AccountEvent::AccountClosed {} => "AccountClosed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// A refusal or failure of the bank's handler.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BankError(String);

/// `Balance::apply` takes the recorded event too; the bank ignores it.
static UNUSED_RECORD: LazyLock<cqrs_wasi::RecordedEvent> =
    LazyLock::new(|| cqrs_wasi::RecordedEvent {
        stream: cqrs_wasi::StreamId::new("Bank", "Account", "-"),
        event_type: String::new(),
        payload: Vec::new(),
        sequence: 0,
        position: 0,
        event_id: String::new(),
        written_at: 0,
        context: cqrs_wasi::EventContext::default(),
    });

#[async_trait]
impl Aggregate for BankAccount {
    type Command = AccountCommand;
    type Event = BankEvent;
    type Error = BankError;
    type Services = ();

    fn aggregate_type() -> String {
        "Account".to_owned()
    }

    async fn handle(&self, command: AccountCommand, _: &()) -> Result<Vec<BankEvent>, BankError> {
        let state = serde_json::to_vec(&self.balance).map_err(|e| BankError(e.to_string()))?;
        let ctx = CommandContext::prepared(
            cqrs_wasi::StreamId::new("Bank", "Account", "-"),
            String::new(),
            cqrs_wasi::EventContext::default(),
            self.events,
            vec![("Balance".to_owned(), state)],
        );
        Account::handle(command, &ctx)
            .map(|events| events.into_iter().map(BankEvent).collect())
            .map_err(|e| BankError(format!("{e:?}")))
    }

    fn apply(&mut self, event: BankEvent) {
        Balance::apply(&mut self.balance, event.0, &UNUSED_RECORD);
        self.events += 1;
    }
}

/// An in-memory `PersistedEventRepository`: events and the latest snapshot
/// per aggregate behind one lock, with optimistic concurrency on the
/// sequence, as a database-backed repository would do it.
#[derive(Debug, Clone, Default)]
pub struct MemRepository {
    aggregates: Arc<RwLock<HashMap<String, Stored>>>,
}

#[derive(Debug, Default)]
struct Stored {
    events: Vec<SerializedEvent>,
    snapshot: Option<SerializedSnapshot>,
}

impl MemRepository {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Stored>> {
        self.aggregates.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl PersistedEventRepository for MemRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        Ok(self
            .read()
            .get(aggregate_id)
            .map(|stored| stored.events.clone())
            .unwrap_or_default())
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        Ok(self
            .read()
            .get(aggregate_id)
            .map(|stored| {
                stored
                    .events
                    .iter()
                    .filter(|e| e.sequence > last_sequence)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(self
            .read()
            .get(aggregate_id)
            .and_then(|stored| stored.snapshot.as_ref())
            .map(|snapshot| SerializedSnapshot {
                aggregate_id: snapshot.aggregate_id.clone(),
                aggregate: snapshot.aggregate.clone(),
                current_sequence: snapshot.current_sequence,
                current_snapshot: snapshot.current_snapshot,
            }))
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let mut aggregates = self.aggregates.write().unwrap_or_else(|e| e.into_inner());
        let id = match (events.first(), &snapshot_update) {
            (Some(event), _) => event.aggregate_id.clone(),
            (None, Some((id, _, _))) => id.clone(),
            (None, None) => return Ok(()),
        };
        let stored = aggregates.entry(id.clone()).or_default();
        let current = stored.events.last().map_or(0, |e| e.sequence);
        if events.first().is_some_and(|e| e.sequence != current + 1) {
            return Err(PersistenceError::OptimisticLockError);
        }
        stored.events.extend_from_slice(events);
        if let Some((_, aggregate, current_snapshot)) = snapshot_update {
            stored.snapshot = Some(SerializedSnapshot {
                aggregate_id: id,
                aggregate,
                current_sequence: stored.events.last().map_or(0, |e| e.sequence),
                current_snapshot,
            });
        }
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let events = self.get_events::<A>(aggregate_id).await?;
        replay(events).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let events: Vec<SerializedEvent> = self
            .read()
            .values()
            .flat_map(|stored| stored.events.iter().cloned())
            .collect();
        replay(events).await
    }
}

async fn replay(events: Vec<SerializedEvent>) -> Result<ReplayStream, PersistenceError> {
    let (mut feed, stream) = ReplayStream::new(events.len().max(1));
    for event in events {
        feed.push(Ok(event)).await?;
    }
    Ok(stream)
}
