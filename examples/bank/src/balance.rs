//! The account's events and the `Balance` projection that folds them.
//!
//! A module of its own so that the projection-only fixture
//! (`tests/components/balance`, the Rust part of the mixed-language test)
//! compiles this very code rather than a copy; it must not refer to the rest
//! of the crate.

use cqrs_wasi::{Projection, RecordedEvent};
use serde::{Deserialize, Serialize};

/// What happened to an account.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// The account was opened.
    AccountOpened {
        /// Who holds it.
        owner: String,
    },
    /// Money was added.
    MoneyDeposited {
        /// How much.
        amount: i64,
    },
    /// Money was taken out.
    MoneyWithdrawn {
        /// How much.
        amount: i64,
    },
    /// The account was closed.
    AccountClosed {},
}

/// State of the `Balance` projection.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BalanceState {
    /// Money in the account.
    pub balance: i64,
    /// Opened and not closed.
    pub open: bool,
}

/// The `Balance` projection: how much is in the account, and whether it is
/// open.
pub struct Balance;

impl Projection for Balance {
    const DOMAIN: &'static str = "Bank";
    const ENTITY_TYPE: &'static str = "Account";
    const NAME: &'static str = "Balance";
    type Event = AccountEvent;
    type State = BalanceState;

    fn apply(state: &mut BalanceState, event: AccountEvent, _: &RecordedEvent) {
        match event {
            AccountEvent::AccountOpened { .. } => state.open = true,
            AccountEvent::MoneyDeposited { amount } => state.balance += amount,
            AccountEvent::MoneyWithdrawn { amount } => state.balance -= amount,
            AccountEvent::AccountClosed {} => state.open = false,
        }
    }
}
