"""``POST /v1/watermark/detect`` (admin credential only): the verdict of ``antidistill watermark detect``.

Body: ``{"texts": [str | {"text", "prompt"?, "messages"?}, ...], "pool": false, "attribute": false,
"key_id": null, "scope": null, "alpha": 0.001, "looks": 1}``. The body is capped by
``limits.max_body_bytes`` (413) and at ``MAX_TEXTS`` texts (400). Tokenization and detection run in a
worker thread, one detection at a time per process, so an audit never stalls the public API's event
loop nor takes every core. The tokenizer is a private copy loaded once (weights are never loaded):
the local backend's own tokenizer belongs to its engine thread (HF tokenizers are not thread-safe).
The reply names keys only by their public id; secrets never leave the key derivation.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from antidistill.errors import InvalidRequestError
from antidistill.gateway.http import JSONResponse, read_json
from antidistill.gateway.runtime import Runtime
from antidistill.watermark.keys import SCOPES
from antidistill.watermark.texts import Document, TextTokenizer, parse_document

MAX_TEXTS = 10_000
_FIELDS = ("texts", "pool", "attribute", "key_id", "scope", "alpha", "looks")


@dataclass
class _DetectionState:
    """Per-app: the detection tokenizer (loaded on first use) and the one-at-a-time limiter."""

    limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(1))
    tokenizer: TextTokenizer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def text_tokenizer(self, rt: Runtime) -> TextTokenizer:
        from antidistill.watermark.texts import load_text_tokenizer

        with self.lock:
            if self.tokenizer is None:
                self.tokenizer = load_text_tokenizer(rt.settings.backend.local)
            return self.tokenizer


@dataclass(frozen=True)
class _DetectRequest:
    docs: list[Document]
    pool: bool
    attribute: bool
    key_id: str | None
    scope: str | None
    alpha: float
    looks: int


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be true or false", param=name)
    return value


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidRequestError(f"{name} must be a non-empty string or null", param=name)
    return value


def parse_detect_request(body: Any) -> _DetectRequest:
    if not isinstance(body, dict):
        raise InvalidRequestError('send a JSON object {"texts": [...]}', param="texts")
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise InvalidRequestError(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_FIELDS)}", param=unknown[0]
        )
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts:
        raise InvalidRequestError("texts must be a non-empty list of strings or objects", param="texts")
    if len(texts) > MAX_TEXTS:
        raise InvalidRequestError(f"at most {MAX_TEXTS} texts per request, got {len(texts)}", param="texts")
    docs = [parse_document(t, f"texts[{i}]", allow_string=True) for i, t in enumerate(texts)]
    scope = _optional_str(body, "scope")
    if scope is not None and scope not in SCOPES:
        raise InvalidRequestError(f"scope must be one of {', '.join(SCOPES)}", param="scope")
    key_id = _optional_str(body, "key_id")
    attribute = _flag(body, "attribute")
    if attribute and key_id is not None:
        raise InvalidRequestError("attribute tests every account key; do not send key_id", param="key_id")
    alpha = body.get("alpha", 1e-3)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 < alpha < 1.0:
        raise InvalidRequestError("alpha must be a number between 0 and 1", param="alpha")
    looks = body.get("looks", 1)
    if isinstance(looks, bool) or not isinstance(looks, int) or looks < 1:
        raise InvalidRequestError("looks must be an integer >= 1", param="looks")
    return _DetectRequest(docs, _flag(body, "pool"), attribute, key_id, scope, float(alpha), looks)


def run_detection(rt: Runtime, state: _DetectionState, req: _DetectRequest) -> dict[str, Any]:
    """Blocking: tokenizer, keys, detection, attribution (call it in a worker thread)."""
    from antidistill.watermark.keystore import load_master_secret
    from antidistill.watermark.texts import detect_documents

    tok = state.text_tokenizer(rt)
    secret = load_master_secret(rt.settings.watermark, create=False)
    return detect_documents(
        req.docs,
        tok,
        rt.store,
        secret,
        pool=req.pool,
        attribute=req.attribute,
        key_id=req.key_id,
        scope=req.scope,
        looks=req.looks,
        alpha=req.alpha,
    )


def _state(request: Request) -> _DetectionState:
    state = getattr(request.app.state, "watermark_detection", None)
    if state is None:  # created on the event loop: no race
        state = request.app.state.watermark_detection = _DetectionState()
    assert isinstance(state, _DetectionState)
    return state


async def _detect(rt: Runtime, request: Request) -> Response:
    req = parse_detect_request(await read_json(request, rt.settings.limits.max_body_bytes))
    state = _state(request)
    report = await anyio.to_thread.run_sync(run_detection, rt, state, req, limiter=state.limiter)
    return JSONResponse(report)


async def detect_watermark(request: Request) -> Response:
    """Admin credential first (``admin_endpoint``), errors as OpenAI envelopes."""
    from antidistill.gateway.admin import admin_endpoint  # admin.py imports this module: import late

    response: Response = await admin_endpoint(_detect)(request)
    return response


WATERMARK_ROUTES = [Route("/v1/watermark/detect", detect_watermark, methods=["POST"])]
