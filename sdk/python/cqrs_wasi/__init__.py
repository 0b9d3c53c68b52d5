"""Write cqrs-wasi command handlers, projections and notification handlers in
plain Python, built into a component with componentize-py.

Commands and events are dataclasses: the class name is the command or event
type, the fields its JSON payload (see `cqrs_wasi.codec`). A handler is a
decorated function; `export` turns the handlers into the classes
componentize-py binds to the `domain-component` world of `wit/`::

    from dataclasses import dataclass
    from cqrs_wasi import Rejected, command_handler, export, projection

    @dataclass
    class Deposit:
        amount: int

    @dataclass
    class MoneyDeposited:
        amount: int

    @projection("Bank", "Account", "Total", events=[MoneyDeposited], state=int)
    def total(state, event, recorded):
        return state + event.amount

    @command_handler("Bank", "Account", commands=[Deposit])
    def account(command, ctx):
        if command.amount <= 0:
            raise Rejected("amount must be positive")
        return [MoneyDeposited(command.amount)]

    CommandHandler, Projection, NotificationHandler = export(
        commands=[account], projections=[total]
    )

An exception a handler raises becomes the call's error with its message
(`handler_failed` at the host), never a trap; `Rejected` and
`InvalidPayload` become those errors. Running out of memory is the one
exception left to trap, as it does in a Rust handler.

This module owns the handler-facing API. It must not import the generated
bindings (`wit_world`) at the top level, so that domain logic can be
tested natively: `CommandContext.with_history` gives a handler a past
without any wasm.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from . import codec
from .codec import PayloadError, decode, encode, type_name

__all__ = [
    "CommandContext",
    "CommandOutcome",
    "EventContext",
    "InvalidPayload",
    "Notification",
    "NotificationContext",
    "PayloadError",
    "PublishError",
    "RecordedEvent",
    "Rejected",
    "SendError",
    "StoreError",
    "StreamId",
    "command_handler",
    "decode",
    "encode",
    "export",
    "notification_handler",
    "projection",
    "type_name",
]


class Rejected(Exception):
    """The command is refused by the domain's rules; the message is shown to
    the caller."""


class InvalidPayload(Exception):
    """The command's payload is not one the handler accepts."""


class StoreError(Exception):
    """Reading from the event store failed. `kind` is `invalid-name`,
    `unknown-projection`, `denied` or `other`."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class SendError(Exception):
    """A command sent from a notification handler failed. `kind` is
    `rejected` (retrying will not help), `invalid`, `denied` or `other`."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class PublishError(Exception):
    """Publishing a custom event failed. `kind` is `denied`, `invalid` or
    `other`."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class StreamId:
    """Identity of an event stream: `domain / entity type / instance key`."""

    domain: str
    entity_type: str
    instance_key: str


@dataclass
class EventContext:
    """Who and what caused an event."""

    correlation_id: Optional[str] = None
    causation_id: Optional[str] = None
    who: Optional[str] = None
    source: Optional[str] = None
    commentary: Optional[str] = None
    handler_version: Optional[str] = None


@dataclass
class RecordedEvent:
    """An event as the store recorded it; `payload` is its JSON."""

    stream: StreamId
    event_type: str
    payload: bytes
    sequence: int
    position: int
    event_id: str
    written_at: int
    context: EventContext

    def decode(self, cls: type) -> Any:
        """Reads the payload as `cls`."""
        return decode(cls, self.payload)


class CommandHandler:
    """A command handler for one entity type; see `command_handler`."""

    def __init__(self, domain: str, entity_type: str, commands: Sequence[type], handle):
        self.domain = domain
        self.entity_type = entity_type
        self.commands = {type_name(cls): cls for cls in commands}
        self.handle = handle

    def __call__(self, command: Any, ctx: "CommandContext") -> list:
        return self.handle(command, ctx)


def command_handler(domain: str, entity_type: str, *, commands: Sequence[type]):
    """Declares `handle(command, ctx) -> list of events` the handler of
    `commands` (dataclasses) on `domain / entity_type`. It returns the
    events to append, or raises `Rejected` / `InvalidPayload`."""

    def declare(handle) -> CommandHandler:
        return CommandHandler(domain, entity_type, commands, handle)

    return declare


class Projection:
    """A pure fold of an entity's events; see `projection`."""

    def __init__(self, domain, entity_type, name, events, state, apply):
        self.domain = domain
        self.entity_type = entity_type
        self.name = name
        self.events = {type_name(cls): cls for cls in events}
        self.state = state
        self.apply = apply

    def initial(self) -> Any:
        """The state before any event: the state class built without
        arguments (`0` for `int`)."""
        return self.state()

    def fold(self, state: Any, recorded: RecordedEvent) -> Any:
        """Folds one event into `state` if it is of a declared type."""
        cls = self.events.get(recorded.event_type)
        if cls is None:
            return state
        folded = self.apply(state, recorded.decode(cls), recorded)
        return state if folded is None else folded


def projection(domain: str, entity_type: str, name: str, *, events: Sequence[type], state: type):
    """Declares `apply(state, event, recorded)` the projection `name` of
    `domain / entity_type` over `events` (dataclasses; the host passes no
    others). `state` is the state's class; `state()` is the initial state.
    `apply` changes the state in place and returns nothing, or returns the
    new state."""

    def declare(apply) -> Projection:
        return Projection(domain, entity_type, name, events, state, apply)

    return declare


@dataclass
class Notification:
    """A notification as a handler receives it; `data` is its JSON."""

    id: str
    event_type: str
    subject: str
    data: bytes
    time: str

    def json(self) -> Any:
        """The `data` object, parsed."""
        return decode(Any, self.data)


class NotificationHandler:
    """A notification handler; see `notification_handler`."""

    def __init__(self, name, event_types, subject_begins_with, subject_ends_with, handle):
        self.name = name
        self.event_types = list(event_types)
        self.subject_begins_with = subject_begins_with
        self.subject_ends_with = subject_ends_with
        self.handle = handle

    def __call__(self, notification: Notification, ctx: "NotificationContext") -> None:
        return self.handle(notification, ctx)


def notification_handler(
    name: str,
    *,
    event_types: Sequence[str] = (),
    subject_begins_with: Optional[str] = None,
    subject_ends_with: Optional[str] = None,
):
    """Declares `handle(notification, ctx)` the handler `name`, subscribed
    with Event Grid's filters (case-insensitive; no event types: all). A
    notification may come more than once: derive the ids of the commands it
    sends from `notification.id`. An exception means "not handled": the
    host delivers the notification again later."""

    def declare(handle) -> NotificationHandler:
        return NotificationHandler(
            name, event_types, subject_begins_with, subject_ends_with, handle
        )

    return declare


@dataclass
class CommandOutcome:
    """What a command sent from a notification handler did."""

    command_id: str
    events_appended: int
    stream_sequence: int
    replayed: bool


class CommandContext:
    """The command being handled and read access to its stream, as of the
    moment the host started the call."""

    def __init__(self, stream: StreamId, command_id: str, context: EventContext, source):
        self.stream = stream
        self.command_id = command_id
        self.context = context
        self._source = source

    @classmethod
    def with_history(
        cls, domain: str, entity_type: str, instance_key: str, events: Sequence[Any]
    ) -> "CommandContext":
        """A context whose stream holds `events` (sequences 1, 2, ...), for
        testing handlers natively."""
        stream = StreamId(domain, entity_type, instance_key)
        history = [
            RecordedEvent(
                stream=stream,
                event_type=type_name(type(event)),
                payload=encode(event),
                sequence=sequence,
                position=sequence,
                event_id=f"00000000-0000-4000-8000-{sequence:012}",
                written_at=0,
                context=EventContext(),
            )
            for sequence, event in enumerate(events, start=1)
        ]
        return cls(stream, "test-command", EventContext(), _History(history))

    def sequence(self) -> int:
        """The sequence of the stream's last event; 0 when it is new."""
        return self._source.sequence(self.stream)

    def events(self) -> list:
        """Every event of the command's stream, in order."""
        return self._source.events_of(self.stream)

    def events_of(self, stream: StreamId) -> list:
        """Every event of another stream, if the component is granted its
        domain."""
        return self._source.events_of(stream)

    def project(self, projection: Projection) -> Any:
        """The state of `projection` over the stream. In a component the
        host computes it (and may serve it from a snapshot)."""
        return self._source.project(projection, self.stream)


class _History:
    """A supplied history, for native tests."""

    def __init__(self, events: list):
        self._events = events

    def sequence(self, stream: StreamId) -> int:
        return self._events[-1].sequence if self._events else 0

    def events_of(self, stream: StreamId) -> list:
        return [e for e in self._events if e.stream == stream]

    def project(self, projection: Projection, stream: StreamId) -> Any:
        state = projection.initial()
        for event in self.events_of(stream):
            state = projection.fold(state, event)
        return state


class NotificationContext:
    """What a notification handler can do: send commands, publish custom
    events, read streams."""

    def __init__(self, source=None):
        self._source = source

    @classmethod
    def recording(cls) -> "NotificationContext":
        """A context that records the commands sent and the events
        published, for testing handlers natively. Each succeeds."""
        return cls(_Recorder())

    @property
    def sent(self) -> list:
        """What a recording context was sent: `(stream, command, id)`."""
        return self._source.sent

    @property
    def published(self) -> list:
        """What a recording context was given to publish: `(topic, event)`."""
        return self._source.published

    def send(self, stream: StreamId, command: Any, command_id: Optional[str] = None) -> CommandOutcome:
        """Sends `command` (a dataclass instance) to `stream` and waits for
        its outcome; raises `SendError`. Pass an id derived from the
        notification's, so that a redelivery replays instead of running the
        command again."""
        return self._source.send(stream, command, command_id)

    def publish(
        self, topic: str, key: str, event_type: str, subject: str, data: Any, data_version: str = "1.0"
    ) -> None:
        """Publishes a custom event (`data` as JSON) to the host's topic
        `topic`; raises `PublishError`. Its id derives from the topic and
        `key`."""
        self._source.publish(topic, key, event_type, subject, encode(data), data_version)

    def events_of(self, stream: StreamId) -> list:
        """Every event of `stream`, if the component is granted its domain."""
        return self._source.events_of(stream)


class _Recorder:
    def __init__(self):
        self.sent = []
        self.published = []

    def send(self, stream, command, command_id):
        self.sent.append((stream, command, command_id))
        return CommandOutcome(f"recorded-{len(self.sent)}", 1, 1, False)

    def publish(self, topic, key, event_type, subject, data, data_version):
        self.published.append((topic, (key, event_type, subject, data, data_version)))

    def events_of(self, stream):
        return []


def export(
    *,
    commands: Sequence[CommandHandler] = (),
    projections: Sequence[Projection] = (),
    notifications: Sequence[NotificationHandler] = (),
):
    """The component's exports, as the classes componentize-py binds:
    assign them to `CommandHandler, Projection, NotificationHandler` in the
    app module."""
    from . import _guest

    return _guest.exports(list(commands), list(projections), list(notifications))
