"""The bank's rules, tested natively (no wasm): `CommandContext.with_history`
gives the handler a past, as the Rust bank's tests do.

Run by `cargo xtask test`, or `PYTHONPATH=sdk/python:examples/bank-py
python3 -m unittest discover -s examples/bank-py/tests` from the root.
"""

import unittest

from cqrs_wasi import CommandContext, InvalidPayload, NotificationContext, Notification, Rejected, StreamId, encode

from bank import (
    AccountClosed,
    AccountOpened,
    BalanceState,
    CloseAccount,
    Deposit,
    MoneyDeposited,
    MoneyWithdrawn,
    OpenAccount,
    Withdraw,
    account,
    balance,
)
from letters import SendWelcome, welcome_new_accounts


def given(*history) -> CommandContext:
    return CommandContext.with_history("Bank", "Account", "acc-1", history)


def opened_with(amount: int) -> list:
    return [AccountOpened("Ada"), MoneyDeposited(amount)]


class AccountTest(unittest.TestCase):
    def test_opening_a_new_account_records_its_owner(self):
        self.assertEqual(account(OpenAccount("Ada"), given()), [AccountOpened("Ada")])

    def test_an_account_cannot_be_opened_twice(self):
        with self.assertRaisesRegex(Rejected, "^the account already exists$"):
            account(OpenAccount("Bob"), given(*opened_with(1)))

    def test_commands_on_an_account_never_opened_are_refused(self):
        with self.assertRaisesRegex(Rejected, "^the account does not exist$"):
            account(Deposit(5), given())

    def test_overdraft_is_refused(self):
        with self.assertRaisesRegex(Rejected, "^insufficient funds: balance 10 is less than 11$"):
            account(Withdraw(11), given(*opened_with(10)))
        self.assertEqual(account(Withdraw(10), given(*opened_with(10))), [MoneyWithdrawn(10)])

    def test_amounts_must_be_positive(self):
        with self.assertRaises(InvalidPayload):
            account(Deposit(0), given(*opened_with(1)))

    def test_only_an_empty_account_can_be_closed(self):
        with self.assertRaises(Rejected):
            account(CloseAccount(), given(*opened_with(3)))
        history = [*opened_with(3), MoneyWithdrawn(3)]
        self.assertEqual(account(CloseAccount(), given(*history)), [AccountClosed()])
        with self.assertRaisesRegex(Rejected, "^the account is closed$"):
            account(Deposit(1), given(*history, AccountClosed()))

    def test_balance_folds_every_event(self):
        ctx = given(AccountOpened("Ada"), MoneyDeposited(10), MoneyWithdrawn(4))
        self.assertEqual(ctx.project(balance), BalanceState(balance=6, open=True))

    def test_events_are_written_as_the_rust_bank_writes_them(self):
        self.assertEqual(encode(AccountOpened('Zoë "Z"')), '{"owner":"Zoë \\"Z\\""}'.encode())
        self.assertEqual(encode(AccountClosed()), b"{}")
        self.assertEqual(encode(BalanceState()), b'{"balance":0,"open":false}')


class LettersTest(unittest.TestCase):
    def test_a_new_account_gets_one_welcome_letter_keyed_by_the_notification(self):
        ctx = NotificationContext.recording()
        notification = Notification(
            "6f1c3c52-0000-5000-8000-000000000001",
            "Bank.Account.NewEntity",
            "eventsourcing/Bank/Account/NewEntity/acc-1",
            b'{"instanceKey": "acc-1"}',
            "2026-11-27T00:00:00Z",
        )
        welcome_new_accounts(notification, ctx)
        self.assertEqual(
            ctx.sent,
            [
                (
                    StreamId("Letters", "Letter", "welcome-acc-1"),
                    SendWelcome("acc-1"),
                    "6f1c3c52-0000-5000-8000-000000000001:welcome",
                )
            ],
        )


if __name__ == "__main__":
    unittest.main()
