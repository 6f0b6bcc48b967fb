"""Validation of OpenAI request bodies (pure: no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from antidistill.errors import InvalidRequestError
from antidistill.gateway.schemas import parse_chat, parse_completion
from antidistill.settings import LimitSettings

LIMITS = LimitSettings(max_tokens_cap=100, default_max_tokens=16, max_n=2, max_messages=3)


def chat(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    body.update(kw)
    return body


def test_minimal_chat_gets_defaults() -> None:
    _, gen = parse_chat(chat(), "id1", LIMITS)
    assert gen.kind == "chat"
    assert gen.params.max_tokens == 16
    assert gen.params.n == 1
    assert gen.messages[0].role == "user" and gen.messages[0].content == "hi"


def test_text_parts_are_joined_and_image_parts_refused() -> None:
    body = chat(
        messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    )
    assert parse_chat(body, "i", LIMITS)[1].messages[0].content == "ab"
    body = chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    with pytest.raises(InvalidRequestError) as e:
        parse_chat(body, "i", LIMITS)
    assert e.value.param == "messages"


def test_max_completion_tokens_wins_and_caps_apply() -> None:
    assert parse_chat(chat(max_tokens=5, max_completion_tokens=7), "i", LIMITS)[1].params.max_tokens == 7
    with pytest.raises(InvalidRequestError) as e:
        parse_chat(chat(max_tokens=101), "i", LIMITS)
    assert e.value.param == "max_tokens" and e.value.status == 400
    with pytest.raises(InvalidRequestError) as e:
        parse_chat(chat(n=3), "i", LIMITS)
    assert e.value.param == "n"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        (chat(temperature="hot"), "temperature"),
        (chat(temperature=3), "temperature"),
        (chat(messages=[]), "messages"),
        (chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
        (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (chat(stop=["a", "b", "c", "d", "e"]), "stop"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(messages=[{"role": "user", "content": "x"}] * 4), "messages"),
        (chat(logprobs=True), "logprobs"),
    ],
)
def test_bad_bodies_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as e:
        parse_chat(body, "i", LIMITS)
    assert e.value.param == param
    assert e.value.envelope()["error"]["type"] == "invalid_request_error"


def test_non_object_body() -> None:
    with pytest.raises(InvalidRequestError):
        parse_chat([1, 2], "i", LIMITS)


def test_completion_prompt_forms() -> None:
    assert parse_completion({"model": "m", "prompt": "abc"}, "i", LIMITS)[1].prompt == "abc"
    assert parse_completion({"model": "m", "prompt": ["abc"]}, "i", LIMITS)[1].prompt == "abc"
    with pytest.raises(InvalidRequestError) as e:
        parse_completion({"model": "m", "prompt": ["a", "b"]}, "i", LIMITS)
    assert e.value.param == "prompt"
    with pytest.raises(InvalidRequestError):
        parse_completion({"model": "m", "prompt": [1, 2, 3]}, "i", LIMITS)


def test_stop_string_and_extras_pass_through() -> None:
    _, gen = parse_chat(chat(stop="END", user="u1", some_vendor_field=1), "i", LIMITS)
    assert gen.params.stop == ("END",)
    assert gen.extra["some_vendor_field"] == 1
