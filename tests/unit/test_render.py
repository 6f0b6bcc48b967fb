"""OpenAI wire rendering of results and stream chunks (pure)."""

from __future__ import annotations

import orjson

from antidistill.backends.base import (
    ChatMessage,
    Choice,
    Chunk,
    Completion,
    GenerationRequest,
    SamplingParams,
    Usage,
)
from antidistill.errors import BackendError
from antidistill.gateway.render import ChunkRenderer, completion_body, error_frame

GEN = GenerationRequest(
    request_id="chatcmpl-1",
    model="m",
    kind="chat",
    params=SamplingParams(max_tokens=5),
    messages=(ChatMessage("user", "hi"),),
)


def _payloads(frames: list[bytes]) -> list[dict]:
    out = []
    for f in frames:
        assert f.startswith(b"data: ") and f.endswith(b"\n\n")
        out.append(orjson.loads(f[6:-2]))
    return out


def test_completion_body_shape() -> None:
    body = completion_body(GEN, Completion((Choice(0, "yo", "stop"),), Usage(3, 1)), 123)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "yo", "refusal": None}
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def test_stream_first_delta_has_role_and_usage_only_when_asked() -> None:
    r = ChunkRenderer(GEN, 1, include_usage=True)
    frames = (
        r.frames(Chunk(0, "a"))
        + r.frames(Chunk(0, "b"))
        + r.frames(Chunk(0, "", finish_reason="stop", usage=Usage(2, 2)))
    )
    p = _payloads(frames)
    assert p[0]["choices"][0]["delta"] == {"role": "assistant", "content": "a"}
    assert p[1]["choices"][0]["delta"] == {"content": "b"}
    assert p[2]["choices"][0]["finish_reason"] == "stop"
    assert p[3]["choices"] == [] and p[3]["usage"]["total_tokens"] == 4
    assert all(x["usage"] is None for x in p[:3])
    r2 = ChunkRenderer(GEN, 1, include_usage=False)
    p2 = _payloads(r2.frames(Chunk(0, "", finish_reason="stop", usage=Usage(2, 2))))
    assert len(p2) == 1 and "usage" not in p2[0]


def test_error_frame_is_an_envelope() -> None:
    p = _payloads([error_frame(BackendError("boom"))])[0]
    assert p["error"]["message"] == "boom" and p["error"]["code"] == "upstream_error"
