"""Example domain `Letters/Letter` in Python, driven by the bank's
notifications: "when an account is opened, send a welcome letter"; "when an
account's balance reaches 1,000, write to congratulate".

The twin of `examples/welcome` (Rust). Each command's id derives from the
notification's, so a notification delivered twice sends each letter once.
"""

from dataclasses import dataclass

from cqrs_wasi import (
    Rejected,
    SendError,
    StreamId,
    command_handler,
    notification_handler,
)


@dataclass
class SendWelcome:
    account: str


@dataclass
class SendCongratulations:
    account: str
    balance: int


@dataclass
class WelcomeSent:
    account: str


@dataclass
class CongratulationsSent:
    account: str
    balance: int


@command_handler("Letters", "Letter", commands=[SendWelcome, SendCongratulations])
def letter(command, ctx) -> list:
    """Each letter goes out once."""
    if ctx.sequence() > 0:
        raise Rejected("this letter was sent already")
    match command:
        case SendWelcome(account=account):
            return [WelcomeSent(account)]
        case SendCongratulations(account=account, balance=balance):
            return [CongratulationsSent(account, balance)]


@notification_handler("welcome-new-accounts", event_types=["Bank.Account.NewEntity"])
def welcome_new_accounts(notification, ctx) -> None:
    account = notification.json()["instanceKey"]
    ctx.send(
        StreamId("Letters", "Letter", f"welcome-{account}"),
        SendWelcome(account),
        command_id=f"{notification.id}:welcome",
    )


@notification_handler(
    "congratulate-savers", event_types=["Bank.Account.Projection.Balance"]
)
def congratulate_savers(notification, ctx) -> None:
    about = notification.json()
    value = about.get("value")
    if value is None:
        # Sent without its value (over the size limit): nothing to judge.
        return
    if value["balance"] < 1000:
        return
    account = about["instanceKey"]
    # One congratulation per account, whichever notification crossed the
    # line first: the letter's own rule refuses a second one.
    try:
        ctx.send(
            StreamId("Letters", "Letter", f"savings-{account}"),
            SendCongratulations(account, value["balance"]),
            command_id=f"{notification.id}:congratulate",
        )
    except SendError as error:
        if error.kind != "rejected":
            raise
