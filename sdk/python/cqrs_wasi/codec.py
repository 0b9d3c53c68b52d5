"""Commands, events and states as dataclasses, and their JSON payloads.

The class name is the command or event type; the fields, in declaration
order, are the payload. This module is the only place that knows that
convention, and it writes JSON as the Rust SDK (serde_json) does: compact,
fields in declaration order, non-ASCII text as is, so that an event a Python
handler appends is byte-for-byte the one a Rust handler would.

It must not touch the generated bindings: it runs natively too, in tests.
"""

import dataclasses
import json
import types
import typing
from typing import Any

#: The range of an `int` field: a signed 64-bit integer, as the Rust SDK's
#: `i64`, so that every language reading the payload can hold the value.
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1


class PayloadError(ValueError):
    """A payload or state that does not fit its class."""


def type_name(cls: type) -> str:
    """The command or event type a class stands for: its name."""
    return cls.__name__


def encode(value: Any) -> bytes:
    """`value` (a dataclass instance, or plain JSON data) as compact JSON."""
    return json.dumps(
        _plain(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def decode(cls: Any, payload: bytes) -> Any:
    """Reads `payload` (JSON) as `cls`. An empty payload reads as `{}`, so
    that a command without fields can be sent with no body."""
    text = bytes(payload).decode()
    if not text.strip():
        text = "{}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise PayloadError(f"not JSON: {error}") from error
    return convert(cls, value, "")


def convert(cls: Any, value: Any, where: str) -> Any:
    """Checks plain JSON data `value` against the type `cls` and builds it.
    Unknown object keys are ignored; missing fields without a default are
    errors."""
    if cls is Any or cls is object:
        return value
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(cls)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(option, value, where)
            except PayloadError as error:
                errors.append(str(error))
        raise PayloadError("; ".join(errors))
    if origin in (list, typing.List):
        (item,) = typing.get_args(cls) or (Any,)
        _expect(isinstance(value, list), value, "a list", where)
        return [convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, typing.Dict):
        _, item = typing.get_args(cls) or (str, Any)
        _expect(isinstance(value, dict), value, "an object", where)
        return {k: convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(cls):
        _expect(isinstance(value, dict), value, f"an object ({cls.__name__})", where)
        hints = typing.get_type_hints(cls)
        fields = {}
        for field in dataclasses.fields(cls):
            if field.name in value:
                inner = f"{where}.{field.name}" if where else field.name
                fields[field.name] = convert(hints[field.name], value[field.name], inner)
            elif (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                raise PayloadError(f"missing field `{field.name}`")
        return cls(**fields)
    if cls is bool:
        _expect(isinstance(value, bool), value, "a boolean", where)
        return value
    if cls is int:
        _expect(
            isinstance(value, int) and not isinstance(value, bool),
            value,
            "an integer",
            where,
        )
        if not INT_MIN <= value <= INT_MAX:
            raise PayloadError(
                f"invalid value: integer `{value}`, expected i64{_at(where)}"
            )
        return value
    if cls is float:
        _expect(
            isinstance(value, (int, float)) and not isinstance(value, bool),
            value,
            "a number",
            where,
        )
        return float(value)
    if cls is str:
        _expect(isinstance(value, str), value, "a string", where)
        return value
    raise PayloadError(f"cannot read a field of type {cls!r}{_at(where)}")


def _expect(ok: bool, value: Any, expected: str, where: str) -> None:
    if not ok:
        raise PayloadError(
            f"invalid type: {_json_kind(value)}, expected {expected}{_at(where)}"
        )


def _at(where: str) -> str:
    return f" at `{where}`" if where else ""


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{json.dumps(value)}`"
    if isinstance(value, (int, float)):
        return f"number `{value}`"
    if isinstance(value, str):
        return f"string {json.dumps(value, ensure_ascii=False)}"
    if isinstance(value, list):
        return "a list"
    return "an object"
