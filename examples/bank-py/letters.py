"""Example domain `Letters/Letter` in Python, driven by the bank's
notifications: "when an account is opened, send a welcome letter".

The twin of `welcome-new-accounts` and the `Letter` handler of
`examples/welcome` (Rust). The command's id derives from the
notification's, so a notification delivered twice sends one letter.
"""

from dataclasses import dataclass

from cqrs_wasi import Rejected, StreamId, command_handler, notification_handler


@dataclass
class SendWelcome:
    account: str


@dataclass
class WelcomeSent:
    account: str


@command_handler("Letters", "Letter", commands=[SendWelcome])
def letter(command: SendWelcome, ctx) -> list:
    if ctx.sequence() > 0:
        raise Rejected("this letter was sent already")
    return [WelcomeSent(command.account)]


@notification_handler("welcome-new-accounts", event_types=["Bank.Account.NewEntity"])
def welcome_new_accounts(notification, ctx) -> None:
    account = notification.json()["instanceKey"]
    ctx.send(
        StreamId("Letters", "Letter", f"welcome-{account}"),
        SendWelcome(account),
        command_id=f"{notification.id}:welcome",
    )
