"""Test fixture: the Python part of a mixed deployment (the bank's command
handler of `examples/bank-py`, without its projection), and `Test/FaultyPy`,
a handler that misbehaves on request, to show that the host limits a Python
component as it limits a Rust one (`tests/components/faulty`)."""

from dataclasses import dataclass

from cqrs_wasi import command_handler, export

from bank import account


@dataclass
class Fail:
    """Raises an exception."""


@dataclass
class Loop:
    """Never returns."""


@dataclass
class Allocate:
    """Allocates until memory runs out."""


@command_handler("Test", "FaultyPy", commands=[Fail, Loop, Allocate])
def faulty(command, ctx) -> list:
    match command:
        case Fail():
            raise RuntimeError("the handler failed on purpose")
        case Loop():
            while True:
                pass
        case Allocate():
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))


CommandHandler, Projection, NotificationHandler = export(commands=[account, faulty])
