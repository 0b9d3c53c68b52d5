"""The component side of the boundary: the bindings componentize-py
generates for the `domain-component` world, and their translation to the
SDK's types.

Only this module touches the generated bindings (`wit_world`); it is
imported by `cqrs_wasi.export` only, so the rest of the SDK runs natively.
Every exception a handler raises is turned into the export's error here,
except `MemoryError`, which is left to trap as running out of memory does
in a Rust handler: the host then discards the instance.
"""

import sys
import traceback
from typing import Any, List, Optional

import wit_world.exports
from componentize_py_types import Err
from wit_world.exports import command_handler as wit_command_handler
from wit_world.exports import notification_handler as wit_notification_handler
from wit_world.exports import projection as wit_projection
from wit_world.imports import commands as wit_commands
from wit_world.imports import event_store, publisher
from wit_world.imports import types as wit

from . import (
    CommandContext,
    CommandOutcome,
    EventContext,
    InvalidPayload,
    Notification,
    NotificationContext,
    PayloadError,
    PublishError,
    RecordedEvent,
    Rejected,
    SendError,
    StoreError,
    StreamId,
    decode,
    encode,
    type_name,
)

#: How many events one `read-stream` call asks the host for.
READ_PAGE = 1024


def exports(commands, projections, notifications):
    """The three export classes componentize-py instantiates."""

    class CommandHandler(wit_world.exports.CommandHandler):
        def describe(self) -> List[wit_command_handler.CommandRoutes]:
            return [
                wit_command_handler.CommandRoutes(h.domain, h.entity_type, list(h.commands))
                for h in commands
            ]

        def handle(self, command: wit.Command) -> List[wit.NewEvent]:
            return _handle(commands, command)

    class Projection(wit_world.exports.Projection):
        def describe(self) -> List[wit_projection.ProjectionInfo]:
            return [
                wit_projection.ProjectionInfo(
                    wit_projection.ProjectionId(p.domain, p.entity_type, p.name),
                    list(p.events),
                )
                for p in projections
            ]

        def apply(
            self,
            projection: wit_projection.ProjectionId,
            state: Optional[bytes],
            batch: wit_projection.EventBatch,
        ) -> bytes:
            return _apply(projections, projection, state, batch)

    class NotificationHandler(wit_world.exports.NotificationHandler):
        def describe(self) -> List[wit_notification_handler.Subscription]:
            return [
                wit_notification_handler.Subscription(
                    n.name, n.event_types, n.subject_begins_with, n.subject_ends_with
                )
                for n in notifications
            ]

        def handle(self, subscription: str, notification: wit.Notification) -> None:
            _notify(notifications, subscription, notification)

    return CommandHandler, Projection, NotificationHandler


def _failure(error: BaseException) -> str:
    """An unexpected exception as one line for the caller; its traceback
    goes to stderr, which the host logs with the component's name."""
    if isinstance(error, MemoryError):
        raise error
    traceback.print_exception(error, file=sys.stderr)
    return f"{type(error).__name__}: {error}"


def _handle(handlers, command: wit.Command) -> List[wit.NewEvent]:
    stream = _stream_from_wit(command.stream)
    handler = next(
        (
            h
            for h in handlers
            if h.domain == stream.domain
            and h.entity_type == stream.entity_type
            and command.command_type in h.commands
        ),
        None,
    )
    if handler is None:
        raise Err(
            wit.CommandError_Other(
                f"this component does not handle {command.command_type} on "
                f"{stream.domain}/{stream.entity_type}"
            )
        )
    try:
        decoded = decode(handler.commands[command.command_type], command.payload)
    except PayloadError as error:
        raise Err(wit.CommandError_InvalidPayload(str(error)))
    ctx = CommandContext(stream, command.command_id, _context_from_wit(command.context), _Host())
    try:
        events = handler(decoded, ctx)
        return [wit.NewEvent(type_name(type(event)), encode(event)) for event in events]
    except Rejected as error:
        raise Err(wit.CommandError_Rejected(str(error)))
    except InvalidPayload as error:
        raise Err(wit.CommandError_InvalidPayload(str(error)))
    except StoreError as error:
        raise Err(wit.CommandError_Store(_store_error_to_wit(error)))
    except Exception as error:
        raise Err(wit.CommandError_Other(_failure(error)))


def _apply(projections, id: wit_projection.ProjectionId, state: Optional[bytes], batch) -> bytes:
    projection = next(
        (
            p
            for p in projections
            if p.domain == id.domain
            and p.entity_type == id.entity_type
            and p.name == id.projection_type
        ),
        None,
    )
    if projection is None:
        raise Err(
            wit.ProjectionError_Other(
                f"this component does not compute projection {id.projection_type} "
                f"of {id.domain}/{id.entity_type}"
            )
        )
    try:
        current = projection.initial() if state is None else decode(projection.state, state)
    except PayloadError as error:
        raise Err(wit.ProjectionError_InvalidState(str(error)))
    stream = _stream_from_wit(batch.stream)
    contexts = [_context_from_wit(c) for c in batch.contexts]
    try:
        for event in batch.events:
            if event.context >= len(contexts):
                raise Err(
                    wit.ProjectionError_InvalidEvent(
                        f"event {event.sequence} names context {event.context}, "
                        f"but the batch gives {len(contexts)}"
                    )
                )
            recorded = RecordedEvent(
                stream,
                event.event_type,
                event.payload,
                event.sequence,
                event.position,
                event.event_id,
                event.written_at,
                contexts[event.context],
            )
            try:
                current = projection.fold(current, recorded)
            except PayloadError as error:
                raise Err(wit.ProjectionError_InvalidEvent(str(error)))
        return encode(current)
    except Err:
        raise
    except Exception as error:
        raise Err(wit.ProjectionError_Other(_failure(error)))


def _notify(handlers, subscription: str, notification: wit.Notification) -> None:
    handler = next((n for n in handlers if n.name == subscription), None)
    if handler is None:
        raise Err(f"this component has no notification handler {subscription}")
    received = Notification(
        notification.id,
        notification.event_type,
        notification.subject,
        notification.data,
        notification.time,
    )
    try:
        handler(received, NotificationContext(_Host()))
    except Exception as error:
        raise Err(_failure(error))


class _Host:
    """Reads, sends and publishes through the component's imports."""

    def sequence(self, stream: StreamId) -> int:
        try:
            return event_store.stream_sequence(_stream_to_wit(stream))
        except Err as error:
            raise _store_error_from_wit(error.value) from None

    def events_of(self, stream: StreamId) -> list:
        wit_stream = _stream_to_wit(stream)
        events: list = []
        while True:
            start = events[-1].sequence + 1 if events else 1
            try:
                page = event_store.read_stream(wit_stream, start, READ_PAGE)
            except Err as error:
                raise _store_error_from_wit(error.value) from None
            events.extend(_event_from_wit(e) for e in page)
            if len(page) < READ_PAGE:
                return events

    def project(self, projection, stream: StreamId) -> Any:
        try:
            state = event_store.run_projection(projection.name, _stream_to_wit(stream), None)
        except Err as error:
            raise _store_error_from_wit(error.value) from None
        try:
            return decode(projection.state, state)
        except PayloadError as error:
            raise StoreError("other", f"state of projection {projection.name} unreadable: {error}")

    def send(self, stream: StreamId, command: Any, command_id: Optional[str]) -> CommandOutcome:
        request = wit_commands.CommandRequest(
            _stream_to_wit(stream), type_name(type(command)), encode(command), command_id
        )
        try:
            outcome = wit_commands.send(request)
        except Err as error:
            raise SendError(_kind(error.value), error.value.value) from None
        return CommandOutcome(
            outcome.command_id, outcome.events_appended, outcome.stream_sequence, outcome.replayed
        )

    def publish(self, topic, key, event_type, subject, data, data_version) -> None:
        try:
            publisher.publish(topic, wit.CustomEvent(key, event_type, subject, data, data_version))
        except Err as error:
            raise PublishError(_kind(error.value), error.value.value) from None


def _kind(variant: Any) -> str:
    """The WIT case name of a generated variant class: `StoreError_InvalidName`
    is `invalid-name`."""
    case = type(variant).__name__.split("_", 1)[1]
    return "".join("-" + c.lower() if c.isupper() else c for c in case).lstrip("-")


_STORE_ERRORS = {
    "invalid-name": wit.StoreError_InvalidName,
    "unknown-projection": wit.StoreError_UnknownProjection,
    "denied": wit.StoreError_Denied,
    "other": wit.StoreError_Other,
}


def _store_error_from_wit(error: Any) -> StoreError:
    return StoreError(_kind(error), error.value)


def _store_error_to_wit(error: StoreError) -> Any:
    return _STORE_ERRORS.get(error.kind, wit.StoreError_Other)(error.message)


def _stream_to_wit(stream: StreamId) -> wit.StreamId:
    return wit.StreamId(stream.domain, stream.entity_type, stream.instance_key)


def _stream_from_wit(stream: wit.StreamId) -> StreamId:
    return StreamId(stream.domain, stream.entity_type, stream.instance_key)


def _context_from_wit(context: wit.EventContext) -> EventContext:
    return EventContext(
        context.correlation_id,
        context.causation_id,
        context.who,
        context.source,
        context.commentary,
        context.handler_version,
    )


def _event_from_wit(event: wit.Event) -> RecordedEvent:
    return RecordedEvent(
        _stream_from_wit(event.stream),
        event.event_type,
        event.payload,
        event.sequence,
        event.position,
        event.event_id,
        event.written_at,
        _context_from_wit(event.context),
    )
