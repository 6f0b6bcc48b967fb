"""Conversions of events: to database rows, from rows, and to/from spill-file JSON lines.

Why sanitizing is here: client input reaches the event log verbatim, and a single value that a
database refuses would make a whole batch fail again and again. PostgreSQL rejects NUL characters
in text and ``NaN`` in ``json``; both engines reject lone UTF-16 surrogates (valid in Python strings,
produced by ``json.loads('"\\ud800"')``). Rows are therefore cleaned before insert: NUL becomes
U+FFFD, lone surrogates become ``?``, non-finite floats become the strings ``"NaN"``/``"Infinity"``,
and anything not JSON-serializable becomes its ``str``. Spill lines are lossless (plain ``json``
with ASCII escapes round-trips all of the above), so cleaning happens only once, at insert.
"""

from __future__ import annotations

import dataclasses
import json
import math
import reprlib
from typing import Any

from antidistill.store.base import Event

# repr for values json cannot encode; bounded depth and size (plain repr recurses without limit)
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 20, 10_000, 1_000
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 1_000


def _safe_repr(value: Any) -> str:
    return _REPR.repr(value)[:100_000]


EVENT_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Event))
_TEXT_FIELDS = (
    "id",
    "account_id",
    "key_id",
    "client_ip",
    "user_agent",
    "endpoint",
    "model",
    "response",
    "error_code",
    "watermark_key_id",
    "watermark_config_hash",
)


def clean_text(value: str) -> str:
    """A string every engine stores unchanged (see the module docstring)."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else json.dumps(value)  # "NaN", "Infinity", "-Infinity"
    if isinstance(value, dict):
        return {clean_text(str(k)): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    return clean_text(str(value))


def _storable(text: str) -> bool:
    """True if JSON text holds no NUL escape and no lone surrogate (so no cleaning is needed)."""
    return "\\u0000" not in text and (text.isascii() or _utf8_ok(text))


def json_safe(value: Any) -> Any:
    """``value`` itself when every engine stores it as is (the common case), else a cleaned copy."""
    try:
        if _storable(json.dumps(value, ensure_ascii=False, allow_nan=False)):
            return value
    except (RecursionError, ValueError, TypeError):
        pass
    try:
        return _clean_json(value)
    except RecursionError:  # nested deeper than the recursion limit
        return {"_unencodable": clean_text(_safe_repr(value))}


def dumps_json(value: Any) -> str:
    """The JSON serializer of the engines: cleaned, compact, readable unicode.

    Never raises: a value that cannot be encoded (e.g. nested deeper than the recursion limit) is
    stored as ``{"_unencodable": repr}`` rather than failing its batch.
    """
    try:  # fast path: nothing to clean (no NaN, no NUL, no lone surrogate, all serializable)
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        if _storable(text):
            return text
    except (RecursionError, ValueError, TypeError):
        pass
    return json.dumps(json_safe(value), ensure_ascii=False, separators=(",", ":"), default=str)


def rows_to_json(rows: list[dict[str, Any]]) -> str:
    """A batch of ``event_to_row`` rows as one JSON array (the Postgres bulk insert parameter)."""
    try:  # one C-speed dump for the whole batch when nothing needs cleaning
        text = json.dumps(rows, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        if _storable(text):
            return text
    except (RecursionError, ValueError, TypeError):
        pass
    safe = [{**r, "request": json_safe(r["request"]), "params": json_safe(r["params"])} for r in rows]
    return json.dumps(safe, ensure_ascii=False, separators=(",", ":"), default=str)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else clean_text(str(value))


def event_to_row(event: Event) -> dict[str, Any]:
    """The insert parameters of one event (JSON columns are encoded by ``dumps_json``)."""
    row: dict[str, Any] = {name: getattr(event, name) for name in EVENT_FIELDS}
    for name in _TEXT_FIELDS:
        row[name] = _text_or_none(row[name])
    row["stream"] = bool(event.stream)
    return row


def row_to_event(row: Any) -> Event:
    """An Event from a result row (a SQLAlchemy ``RowMapping`` or any mapping)."""
    values = {name: row[name] for name in EVENT_FIELDS}
    values["stream"] = bool(values["stream"])
    values["request"] = values["request"] if isinstance(values["request"], dict) else {}
    values["params"] = values["params"] if isinstance(values["params"], dict) else {}
    return Event(**values)


def event_to_line(event: Event) -> bytes:
    """One spill-file line (JSON + newline). Lossless for everything an Event can hold."""
    data = {name: getattr(event, name) for name in EVENT_FIELDS}
    try:
        text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), default=str)
    except (RecursionError, ValueError):  # circular or absurdly deep payloads
        data["request"] = {"_unencodable": _safe_repr(event.request)}
        data["params"] = {"_unencodable": _safe_repr(event.params)}
        text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), default=str)
    return text.encode("ascii") + b"\n"


def line_to_event(line: bytes) -> Event:
    """Parse a spill line; raises ValueError/TypeError for a torn or foreign line."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("spill line is not a JSON object")
    # fields added to Event later get their defaults; unknown keys (a newer writer) are ignored
    return Event(**{k: v for k, v in data.items() if k in EVENT_FIELDS})
