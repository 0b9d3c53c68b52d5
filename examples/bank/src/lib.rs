//! Example domain `Bank/Account`: open an account, deposit, withdraw without
//! overdrawing, close it once it is empty.
//!
//! Built to `wasm32-wasip2`, this crate is a component exporting the
//! `Account` command handler and the `Balance` projection. Built natively,
//! its tests exercise the same rules without wasm.

mod balance;

pub use balance::{AccountEvent, Balance, BalanceState};
use cqrs_wasi::{CommandContext, CommandError, CommandHandler};
use serde::Deserialize;

/// What can be asked of an account.
#[derive(Debug, Deserialize)]
pub enum AccountCommand {
    /// Opens a new account.
    OpenAccount {
        /// Who holds it.
        owner: String,
    },
    /// Adds money.
    Deposit {
        /// In the smallest currency unit; more than zero.
        amount: i64,
    },
    /// Takes money out; never below zero.
    Withdraw {
        /// In the smallest currency unit; more than zero.
        amount: i64,
    },
    /// Closes an empty account.
    CloseAccount {},
}

/// The `Account` command handler.
pub struct Account;

impl CommandHandler for Account {
    const DOMAIN: &'static str = "Bank";
    const ENTITY_TYPE: &'static str = "Account";
    type Command = AccountCommand;
    type Event = AccountEvent;

    fn handle(
        command: AccountCommand,
        ctx: &CommandContext,
    ) -> Result<Vec<AccountEvent>, CommandError> {
        if let AccountCommand::OpenAccount { owner } = command {
            if ctx.sequence()? > 0 {
                return Err(CommandError::rejected("the account already exists"));
            }
            if owner.trim().is_empty() {
                return Err(CommandError::rejected("an account needs an owner"));
            }
            return Ok(vec![AccountEvent::AccountOpened { owner }]);
        }

        let account = ctx.project::<Balance>()?;
        if !account.open {
            return Err(CommandError::rejected(if ctx.sequence()? == 0 {
                "the account does not exist"
            } else {
                "the account is closed"
            }));
        }
        match command {
            AccountCommand::OpenAccount { .. } => unreachable!("handled above"),
            AccountCommand::Deposit { amount } => {
                positive(amount)?;
                account
                    .balance
                    .checked_add(amount)
                    .ok_or_else(|| CommandError::rejected("the balance would overflow"))?;
                Ok(vec![AccountEvent::MoneyDeposited { amount }])
            }
            AccountCommand::Withdraw { amount } => {
                positive(amount)?;
                if amount > account.balance {
                    return Err(CommandError::rejected(format!(
                        "insufficient funds: balance {} is less than {amount}",
                        account.balance
                    )));
                }
                Ok(vec![AccountEvent::MoneyWithdrawn { amount }])
            }
            AccountCommand::CloseAccount {} => {
                if account.balance != 0 {
                    return Err(CommandError::rejected(format!(
                        "the balance is {}; only an empty account can be closed",
                        account.balance
                    )));
                }
                Ok(vec![AccountEvent::AccountClosed {}])
            }
        }
    }
}

fn positive(amount: i64) -> Result<(), CommandError> {
    if amount > 0 {
        Ok(())
    } else {
        Err(CommandError::InvalidPayload(format!(
            "amount must be more than zero, got {amount}"
        )))
    }
}

cqrs_wasi::export_component! {
    commands: [Account],
    projections: [Balance],
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccountEvent::*;

    fn given(history: &[AccountEvent]) -> CommandContext {
        CommandContext::with_history("Bank", "Account", "acc-1", history).unwrap()
    }

    fn opened_with(balance: i64) -> Vec<AccountEvent> {
        vec![
            AccountOpened {
                owner: "Ada".into(),
            },
            MoneyDeposited { amount: balance },
        ]
    }

    #[test]
    fn opening_a_new_account_records_its_owner() {
        let events = Account::handle(
            AccountCommand::OpenAccount {
                owner: "Ada".into(),
            },
            &given(&[]),
        )
        .unwrap();
        assert_eq!(
            events,
            vec![AccountOpened {
                owner: "Ada".into()
            }]
        );
    }

    #[test]
    fn an_account_cannot_be_opened_twice() {
        let err = Account::handle(
            AccountCommand::OpenAccount {
                owner: "Bob".into(),
            },
            &given(&opened_with(1)),
        )
        .unwrap_err();
        assert_eq!(err, CommandError::rejected("the account already exists"));
    }

    #[test]
    fn commands_on_an_account_never_opened_are_refused() {
        let err = Account::handle(AccountCommand::Deposit { amount: 5 }, &given(&[])).unwrap_err();
        assert_eq!(err, CommandError::rejected("the account does not exist"));
    }

    #[test]
    fn overdraft_is_refused() {
        let err = Account::handle(
            AccountCommand::Withdraw { amount: 11 },
            &given(&opened_with(10)),
        )
        .unwrap_err();
        assert!(matches!(err, CommandError::Rejected(m) if m.contains("insufficient funds")));
        let ok = Account::handle(
            AccountCommand::Withdraw { amount: 10 },
            &given(&opened_with(10)),
        );
        assert_eq!(ok.unwrap(), vec![MoneyWithdrawn { amount: 10 }]);
    }

    #[test]
    fn amounts_must_be_positive() {
        let err = Account::handle(
            AccountCommand::Deposit { amount: 0 },
            &given(&opened_with(1)),
        )
        .unwrap_err();
        assert!(matches!(err, CommandError::InvalidPayload(_)));
    }

    #[test]
    fn only_an_empty_account_can_be_closed() {
        assert!(Account::handle(AccountCommand::CloseAccount {}, &given(&opened_with(3))).is_err());
        let mut history = opened_with(3);
        history.push(MoneyWithdrawn { amount: 3 });
        let events = Account::handle(AccountCommand::CloseAccount {}, &given(&history)).unwrap();
        assert_eq!(events, vec![AccountClosed {}]);
        history.push(AccountClosed {});
        let err =
            Account::handle(AccountCommand::Deposit { amount: 1 }, &given(&history)).unwrap_err();
        assert_eq!(err, CommandError::rejected("the account is closed"));
    }

    #[test]
    fn balance_folds_every_event() {
        let ctx = given(&[
            AccountOpened {
                owner: "Ada".into(),
            },
            MoneyDeposited { amount: 10 },
            MoneyWithdrawn { amount: 4 },
        ]);
        assert_eq!(
            ctx.project::<Balance>().unwrap(),
            BalanceState {
                balance: 6,
                open: true
            }
        );
    }
}
