//! Example domain `Letters/Letter`, driven by another domain's
//! notifications: "when an account is opened, send a welcome letter"; "when
//! an account's balance reaches 1,000, write to congratulate".
//!
//! The letters are commands in this domain; the notification handlers only
//! decide which to send. Each command's id derives from the notification's,
//! so a notification delivered twice sends each letter once.

use cqrs_wasi::{
    CommandContext, CommandError, CommandHandler, HandlerError, Notification, NotificationContext,
    NotificationHandler, StreamId, Subscription,
};
use serde::{Deserialize, Serialize};

/// What can be asked of a letter.
#[derive(Debug, Serialize, Deserialize)]
pub enum LetterCommand {
    /// Welcome the holder of a new account.
    SendWelcome {
        /// The account's instance key.
        account: String,
    },
    /// Congratulate a saver.
    SendCongratulations {
        /// The account's instance key.
        account: String,
        /// Its balance.
        balance: i64,
    },
}

/// What happened to a letter.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum LetterEvent {
    /// The welcome letter went out.
    WelcomeSent {
        /// To whom.
        account: String,
    },
    /// The congratulations went out.
    CongratulationsSent {
        /// To whom.
        account: String,
        /// For which balance.
        balance: i64,
    },
}

/// The `Letters/Letter` command handler: each letter goes out once.
pub struct Letter;

impl CommandHandler for Letter {
    const DOMAIN: &'static str = "Letters";
    const ENTITY_TYPE: &'static str = "Letter";
    type Command = LetterCommand;
    type Event = LetterEvent;

    fn handle(
        command: LetterCommand,
        ctx: &CommandContext,
    ) -> Result<Vec<LetterEvent>, CommandError> {
        if ctx.sequence()? > 0 {
            return Err(CommandError::rejected("this letter was sent already"));
        }
        Ok(vec![match command {
            LetterCommand::SendWelcome { account } => LetterEvent::WelcomeSent { account },
            LetterCommand::SendCongratulations { account, balance } => {
                LetterEvent::CongratulationsSent { account, balance }
            }
        }])
    }
}

/// The part of a change-feed or projection notification's `data` the
/// handlers read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct About {
    instance_key: String,
    #[serde(default)]
    value: Option<BalanceValue>,
}

#[derive(Debug, Deserialize)]
struct BalanceValue {
    balance: i64,
}

/// Welcomes every new bank account.
pub struct WelcomeNewAccounts;

impl NotificationHandler for WelcomeNewAccounts {
    const NAME: &'static str = "welcome-new-accounts";

    fn subscription() -> Subscription {
        Subscription::event_types(&["Bank.Account.NewEntity"])
    }

    fn handle(notification: &Notification, ctx: &NotificationContext) -> Result<(), HandlerError> {
        let about: About = notification.data()?;
        let letter = StreamId::new(
            "Letters",
            "Letter",
            format!("welcome-{}", about.instance_key),
        );
        let command = LetterCommand::SendWelcome {
            account: about.instance_key,
        };
        ctx.send(
            &letter,
            &command,
            Some(format!("{}:welcome", notification.id)),
        )?;
        Ok(())
    }
}

/// Congratulates accounts whose balance reaches 1,000.
pub struct CongratulateSavers;

impl NotificationHandler for CongratulateSavers {
    const NAME: &'static str = "congratulate-savers";

    fn subscription() -> Subscription {
        Subscription::event_types(&["Bank.Account.Projection.Balance"])
    }

    fn handle(notification: &Notification, ctx: &NotificationContext) -> Result<(), HandlerError> {
        let about: About = notification.data()?;
        let Some(BalanceValue { balance }) = about.value else {
            // Sent without its value (over the size limit): nothing to judge.
            return Ok(());
        };
        if balance < 1000 {
            return Ok(());
        }
        let letter = StreamId::new(
            "Letters",
            "Letter",
            format!("savings-{}", about.instance_key),
        );
        let command = LetterCommand::SendCongratulations {
            account: about.instance_key,
            balance,
        };
        // One congratulation per account, whichever notification crossed
        // the line first: the letter's own rule refuses a second one.
        match ctx.send(
            &letter,
            &command,
            Some(format!("{}:congratulate", notification.id)),
        ) {
            Ok(_) | Err(cqrs_wasi::SendError::Rejected(_)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

cqrs_wasi::export_component! {
    commands: [Letter],
    notifications: [WelcomeNewAccounts, CongratulateSavers],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(event_type: &str, data: &str) -> Notification {
        Notification {
            id: "6f1c3c52-0000-5000-8000-000000000001".into(),
            event_type: event_type.into(),
            subject: "eventsourcing/Bank/Account/NewEntity/acc-1".into(),
            data: data.as_bytes().to_vec(),
            time: "2026-11-27T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_new_account_gets_one_welcome_letter_keyed_by_the_notification() {
        let ctx = NotificationContext::recording();
        let new_account = notification("Bank.Account.NewEntity", r#"{"instanceKey": "acc-1"}"#);
        WelcomeNewAccounts::handle(&new_account, &ctx).unwrap();
        let sent = ctx.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0].stream,
            StreamId::new("Letters", "Letter", "welcome-acc-1")
        );
        assert_eq!(sent[0].command_type, "SendWelcome");
        assert_eq!(
            sent[0].command_id.as_deref(),
            Some("6f1c3c52-0000-5000-8000-000000000001:welcome")
        );
    }

    #[test]
    fn only_balances_of_a_thousand_or_more_are_congratulated() {
        let ctx = NotificationContext::recording();
        let balance = |value: i64| {
            notification(
                "Bank.Account.Projection.Balance",
                &format!(
                    r#"{{"instanceKey": "acc-1", "value": {{"balance": {value}, "open": true}}}}"#
                ),
            )
        };
        CongratulateSavers::handle(&balance(999), &ctx).unwrap();
        assert!(ctx.sent().is_empty());
        CongratulateSavers::handle(&balance(1000), &ctx).unwrap();
        assert_eq!(ctx.sent()[0].command_type, "SendCongratulations");
    }

    #[test]
    fn a_letter_goes_out_once() {
        let sent = [LetterEvent::WelcomeSent {
            account: "acc-1".into(),
        }];
        let ctx =
            CommandContext::with_history("Letters", "Letter", "welcome-acc-1", &sent).unwrap();
        let again = Letter::handle(
            LetterCommand::SendWelcome {
                account: "acc-1".into(),
            },
            &ctx,
        );
        assert_eq!(
            again.unwrap_err(),
            CommandError::rejected("this letter was sent already")
        );
    }
}
