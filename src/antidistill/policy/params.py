"""The ``cap_params`` action on an OpenAI request body: coarsen what a distiller values.

Applied to the client's JSON object before it is parsed, so that a capped body is what the parser,
the backend and an upstream (which receives unknown fields such as ``logit_bias`` as they are) see.
Values of the wrong type are left alone: the parser refuses them with its usual message.

- ``logprobs`` together with a non-empty ``logit_bias`` is always refused (when configured): the
  pair reads out the model's full next-token distribution, one biased call at a time;
- ``n`` above ``max_n``, ``top_logprobs`` above ``max_top_logprobs`` (``logprobs`` as a number on
  /v1/completions counts as ``top_logprobs``), and ``logprobs`` when not allowed, are refused with
  a 400 naming the parameter (``over_cap = "refuse"``) or lowered silently (``"cap"``).
"""

from __future__ import annotations

from typing import Any

from antidistill.errors import InvalidRequestError
from antidistill.policy.config import CapsConfig

CODE = "parameter_limited"
Changes = dict[str, list[Any]]
"""Parameter -> [asked, sent] for every value that was lowered silently (an event field)."""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _asks_logprobs(body: dict[str, Any]) -> bool:
    lp, top = body.get("logprobs"), _int(body.get("top_logprobs"))
    return lp is True or (_int(lp) or 0) > 0 or (top or 0) > 0


def _over(caps: CapsConfig, body: dict[str, Any], changes: Changes, name: str, cap: int, what: str) -> None:
    asked = _int(body.get(name))
    if asked is None or asked <= cap:
        return
    if caps.over_cap == "refuse":
        raise InvalidRequestError(
            f"{name} is {asked}, above this account's limit of {cap} {what}", param=name, code=CODE
        )
    body[name] = cap
    changes[name] = [asked, cap]


def apply_param_caps(caps: CapsConfig, body: Any) -> tuple[Any, Changes]:
    """The body to serve under ``caps`` (a modified copy, or ``body`` itself when nothing changed)
    and what was lowered. Raises InvalidRequestError (400, ``param`` set) for a refused value."""
    if not isinstance(body, dict):
        return body, {}
    if caps.refuse_logprobs_with_logit_bias and body.get("logit_bias") and _asks_logprobs(body):
        raise InvalidRequestError(
            "logprobs cannot be combined with logit_bias for this account; send one or the other",
            param="logit_bias",
            code="logprobs_with_logit_bias",
        )
    out = dict(body)
    changes: Changes = {}
    _over(caps, out, changes, "n", caps.max_n, "choices per request")
    if not caps.allow_logprobs and _asks_logprobs(out):
        if caps.over_cap == "refuse":
            raise InvalidRequestError(
                "logprobs are not available to this account", param="logprobs", code=CODE
            )
        for name in ("logprobs", "top_logprobs"):
            if name in out:
                changes[name] = [out.pop(name), None]
    else:
        _over(caps, out, changes, "top_logprobs", caps.max_top_logprobs, "alternatives per token")
        if _int(out.get("logprobs")) is not None:  # /v1/completions: logprobs is the number of alternatives
            _over(caps, out, changes, "logprobs", caps.max_top_logprobs, "alternatives per token")
    return (out, changes) if changes else (body, {})
