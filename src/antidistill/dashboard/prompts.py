"""Sample prompts with their template parts highlighted.

Prompts are grouped by the risk engine's template skeleton (``risk/skeleton.py``: payload masked,
hashed). Inside a group of two or more, each prompt is aligned word by word with (up to 8) others of
its group (``difflib``): a word inside a run it shares with at least half of them (a run of two or
more words, or a single word at the very start or end of both) is part of the template and is
wrapped in ``<mark class="tpl">``; what varies (the payload) is not. A prompt alone in its group is
shown as it is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from markupsafe import Markup, escape

from antidistill.risk.skeleton import template_skeleton

SHOWN_CHARS = 600
TEMPLATE_SHARE = 0.5
MAX_COMPARED = 8  # other prompts of the group each prompt is aligned with
_TOKEN_RE = re.compile(r"\S+|\s+")


@dataclass(frozen=True)
class Highlighted:
    html: Markup
    template: str  # the masked skeleton text
    group_size: int  # prompts of the sample with the same skeleton


def prompt_text(request: object) -> str:
    """The last user message of a stored chat request (or the prompt of a completion request)."""
    if not isinstance(request, dict):
        return ""
    msgs = request.get("messages")
    if isinstance(msgs, list):
        for m in reversed(msgs):
            if isinstance(m, dict) and m.get("role", "user") == "user":
                content = m.get("content")
                if isinstance(content, list):
                    return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
                return str(content or "")
        return ""
    prompt = request.get("prompt")
    if isinstance(prompt, list):
        return " ".join(map(str, prompt))
    return str(prompt or "")


def _template_words(words: list[str], others: list[list[str]]) -> list[bool]:
    """Which of ``words`` belong to the template: those inside a run the prompt shares with at least
    half of the ``others`` (a run of 2+ words, or one word at the start or the end of both)."""
    votes = [0] * len(words)
    for other in others:
        seen = [False] * len(words)
        for a, b, size in SequenceMatcher(None, words, other, autojunk=False).get_matching_blocks():
            edge = (a == 0 and b == 0) or (a + size == len(words) and b + size == len(other))
            if size >= 2 or (size == 1 and edge):
                for k in range(a, a + size):
                    seen[k] = True
        for k, hit in enumerate(seen):
            votes[k] += hit
    need = max(1, math.ceil(TEMPLATE_SHARE * len(others)))
    return [v >= need for v in votes]


def highlight(prompts: Sequence[str]) -> list[Highlighted]:
    skeletons = [template_skeleton(p) for p in prompts]
    groups: dict[str, list[int]] = {}
    for i, sk in enumerate(skeletons):
        groups.setdefault(sk.hash, []).append(i)
    out: list[Highlighted] = []
    for i, text in enumerate(prompts):
        members = groups[skeletons[i].hash]
        shown = text[:SHOWN_CHARS]
        if len(members) < 2:
            out.append(Highlighted(_plain(shown, len(text)), skeletons[i].text, 1))
            continue
        others = [prompts[j][:SHOWN_CHARS].split() for j in members if j != i][:MAX_COMPARED]
        marked = _template_words(shown.split(), others)
        parts: list[str] = []
        run: list[str] = []
        k = 0
        for tok in _TOKEN_RE.findall(shown):
            if tok.isspace():
                run.append(tok)
                continue
            template = marked[k]
            k += 1
            if template:
                run.append(tok)
                continue
            parts.append(_mark(run))
            run = []
            parts.append(str(escape(tok)))
        parts.append(_mark(run))
        more = "…" if len(text) > SHOWN_CHARS else ""
        out.append(Highlighted(Markup("".join(parts) + more), skeletons[i].text, len(members)))
    return out


def _mark(run: list[str]) -> str:
    """A run of template tokens, marked (leading/trailing blanks left outside the mark)."""
    text = "".join(run)
    core = text.strip()
    if not core:
        return str(escape(text))
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()) :]
    return f'{escape(lead)}<mark class="tpl">{escape(core)}</mark>{escape(trail)}'


def _plain(shown: str, full_len: int) -> Markup:
    return Markup(str(escape(shown)) + ("…" if full_len > len(shown) else ""))
