"""Example domain `Bank/Account` in Python: open an account, deposit,
withdraw without overdrawing, close it once it is empty.

The twin of `examples/bank` (Rust): the same commands, events, rules, error
messages and `Balance` state, byte for byte.
"""

from dataclasses import dataclass

from cqrs_wasi import InvalidPayload, Rejected, codec, command_handler, projection


# What can be asked of an account.


@dataclass
class OpenAccount:
    owner: str


@dataclass
class Deposit:
    amount: int


@dataclass
class Withdraw:
    amount: int


@dataclass
class CloseAccount:
    pass


# What happened to an account.


@dataclass
class AccountOpened:
    owner: str


@dataclass
class MoneyDeposited:
    amount: int


@dataclass
class MoneyWithdrawn:
    amount: int


@dataclass
class AccountClosed:
    pass


@dataclass
class BalanceState:
    """How much is in the account, and whether it is open."""

    balance: int = 0
    open: bool = False


@projection(
    "Bank",
    "Account",
    "Balance",
    events=[AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed],
    state=BalanceState,
)
def balance(state: BalanceState, event, recorded) -> None:
    match event:
        case AccountOpened():
            state.open = True
        case MoneyDeposited(amount=amount):
            state.balance += amount
        case MoneyWithdrawn(amount=amount):
            state.balance -= amount
        case AccountClosed():
            state.open = False


@command_handler(
    "Bank", "Account", commands=[OpenAccount, Deposit, Withdraw, CloseAccount]
)
def account(command, ctx) -> list:
    if isinstance(command, OpenAccount):
        if ctx.sequence() > 0:
            raise Rejected("the account already exists")
        if not command.owner.strip():
            raise Rejected("an account needs an owner")
        return [AccountOpened(command.owner)]

    state = ctx.project(balance)
    if not state.open:
        raise Rejected(
            "the account does not exist" if ctx.sequence() == 0 else "the account is closed"
        )
    match command:
        case Deposit(amount=amount):
            positive(amount)
            if state.balance + amount > codec.INT_MAX:
                raise Rejected("the balance would overflow")
            return [MoneyDeposited(amount)]
        case Withdraw(amount=amount):
            positive(amount)
            if amount > state.balance:
                raise Rejected(
                    f"insufficient funds: balance {state.balance} is less than {amount}"
                )
            return [MoneyWithdrawn(amount)]
        case CloseAccount():
            if state.balance != 0:
                raise Rejected(
                    f"the balance is {state.balance}; only an empty account can be closed"
                )
            return [AccountClosed()]


def positive(amount: int) -> None:
    if amount <= 0:
        raise InvalidPayload(f"amount must be more than zero, got {amount}")
