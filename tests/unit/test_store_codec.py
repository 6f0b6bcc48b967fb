"""Pure parts of the store: API token format and event encoding (no database)."""

from __future__ import annotations

import json
import math
import re

import pytest

from antidistill.store import Event, tokens
from antidistill.store.codec import (
    clean_text,
    dumps_json,
    event_to_line,
    event_to_row,
    json_safe,
    line_to_event,
    rows_to_json,
)


def _event(**kw: object) -> Event:
    values: dict[str, object] = {
        "id": "r1",
        "ts": 1.5,
        "account_id": "a",
        "key_id": "k",
        "client_ip": None,
        "user_agent": None,
        "endpoint": "chat",
        "model": None,
        "request": {"messages": []},
        "params": {},
        "response": None,
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "latency_ms": 3.0,
        "status": 200,
    }
    values.update(kw)
    return Event(**values)  # type: ignore[arg-type]


def test_token_format_and_parse() -> None:
    key_id, secret = tokens.new_key_id(), tokens.new_secret()
    token = tokens.format_token(key_id, secret)
    assert re.fullmatch(r"ad-[0-9a-f]{12}-[A-Za-z0-9_-]{43}", token)
    assert tokens.parse_token(token) == (key_id, secret)
    assert tokens.hash_secret(secret) != secret and len(tokens.hash_secret(secret)) == 64


@pytest.mark.parametrize(
    "bad",
    ["", "ad-", "ad-0123456789ab-", "ad-0123456789AB-" + "a" * 43, "ad-0123456789ab-" + "é" * 43, None, 7],
)
def test_parse_token_refuses_malformed(bad: object) -> None:
    assert tokens.parse_token(bad) is None


def test_secret_matches_is_false_for_an_unknown_key() -> None:
    secret = tokens.new_secret()
    assert tokens.secret_matches(tokens.hash_secret(secret), secret)
    assert not tokens.secret_matches(None, secret)
    assert not tokens.secret_matches(tokens.hash_secret(secret), tokens.new_secret())


def test_clean_text() -> None:
    assert clean_text("plain") == "plain"
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("lone \ud800 x") == "lone ? x"
    assert clean_text("😀 ok") == "😀 ok"


def test_json_safe_keeps_clean_values_and_cleans_others() -> None:
    clean = {"m": ["é", 1, 2.5, None, True]}
    assert json_safe(clean) is clean
    assert json_safe({"t": math.nan, "x": "\x00", 3: object}) == {"t": "NaN", "x": "\ufffd", "3": str(object)}
    deep: object = []
    for _ in range(5000):
        deep = [deep]
    assert "_unencodable" in json_safe(deep)
    assert "_unencodable" in dumps_json(deep)
    assert "_unencodable" in line_to_event(event_to_line(_event(request={"deep": deep}))).request


def test_rows_to_json_is_one_clean_array() -> None:
    rows = [event_to_row(_event(id="a")), event_to_row(_event(id="b", params={"t": math.inf}))]
    data = json.loads(rows_to_json(rows))
    assert [r["id"] for r in data] == ["a", "b"] and data[1]["params"] == {"t": "Infinity"}


def test_spill_lines_are_lossless() -> None:
    ev = _event(request={"messages": [{"content": "lone \ud800, nul \x00, 😀"}]}, params={"t": math.nan})
    back = line_to_event(event_to_line(ev))
    assert back.request == ev.request and math.isnan(back.params["t"])
    assert event_to_line(ev).endswith(b"\n") and event_to_line(ev).isascii()


def test_spill_lines_tolerate_schema_drift() -> None:
    data = json.loads(event_to_line(_event()))
    data["added_by_a_newer_version"] = 1
    del data["watermark_key_id"]  # a field added after the line was written: gets its default
    assert line_to_event(json.dumps(data).encode()) == _event()
    with pytest.raises((ValueError, TypeError)):
        line_to_event(b'{"id": "torn')
