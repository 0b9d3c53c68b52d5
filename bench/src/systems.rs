//! The systems under test behind one interface, [`Bank`]: "run this bank
//! command on account N". The host (in process, with the bank component
//! or the native baseline, or over HTTP), and the cqrs-es peers.
//!
//! Accounts are `Bank/Account/acc-000` .. `acc-099`.

use async_trait::async_trait;
use bank::AccountCommand;
use cqrs_es::{CqrsFramework, EventStore as CqrsEventStore};
use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::{CommandRequest, Host};

use crate::peers::BankAccount;

/// A bank command of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `OpenAccount {"owner": "Ada"}`.
    Open,
    /// `Deposit {"amount": 1}`.
    Deposit,
}

impl Command {
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            Command::Open => "OpenAccount",
            Command::Deposit => "Deposit",
        }
    }

    pub(crate) fn payload(self) -> &'static str {
        match self {
            Command::Open => r#"{"owner": "Ada"}"#,
            Command::Deposit => r#"{"amount": 1}"#,
        }
    }

    fn typed(self) -> AccountCommand {
        match self {
            Command::Open => AccountCommand::OpenAccount {
                owner: "Ada".to_owned(),
            },
            Command::Deposit => AccountCommand::Deposit { amount: 1 },
        }
    }
}

/// The stream of account `index`.
pub fn account(index: usize) -> StreamId {
    StreamId::new("Bank", "Account", format!("acc-{index:03}"))
        .unwrap_or_else(|_| unreachable!("acc-NNN is a valid instance key"))
}

/// Something that runs bank commands.
#[async_trait]
pub trait Bank: Send + Sync {
    /// Runs `command` on account `index`.
    async fn run(&self, index: usize, command: Command) -> anyhow::Result<()>;
}

/// A host with the bank (the component, or the native baseline), in
/// process.
pub struct HostBank(pub Host);

#[async_trait]
impl Bank for HostBank {
    async fn run(&self, index: usize, command: Command) -> anyhow::Result<()> {
        let request = CommandRequest::new(account(index), command.type_name(), command.payload())?;
        self.0.execute(request).await?;
        Ok(())
    }
}

/// A cqrs-es framework over any of its stores.
pub struct CqrsBank<ES: CqrsEventStore<BankAccount>>(pub CqrsFramework<BankAccount, ES>);

#[async_trait]
impl<ES> Bank for CqrsBank<ES>
where
    ES: CqrsEventStore<BankAccount> + Send + Sync,
    ES::AC: Send,
{
    async fn run(&self, index: usize, command: Command) -> anyhow::Result<()> {
        self.0
            .execute(&format!("acc-{index:03}"), command.typed())
            .await
            .map_err(|e| anyhow::anyhow!("cqrs-es: {e}"))
    }
}

/// Prefills account `index` of a cqrs-es store with an opening and
/// `deposits` deposits, in one commit.
pub async fn prefill_cqrs<ES: CqrsEventStore<BankAccount>>(
    store: &ES,
    index: usize,
    deposits: usize,
) -> anyhow::Result<()> {
    let id = format!("acc-{index:03}");
    let context = store
        .load_aggregate(&id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut events = vec![crate::peers::BankEvent(bank::AccountEvent::AccountOpened {
        owner: "Ada".to_owned(),
    })];
    events.extend(
        (0..deposits)
            .map(|_| crate::peers::BankEvent(bank::AccountEvent::MoneyDeposited { amount: 1 })),
    );
    store
        .commit(events, context, Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
