"""``ReasoningGuard``: the ``strip_reasoning`` action on one response, JSON or streamed.

    guard = ReasoningGuard(decision.reasoning)        # made before the backend is called
    result = guard.complete(result)                   # JSON
    async for chunk in guard.stream(chunks): ...      # SSE

Per choice, reasoning is what the backend sends in ``reasoning_content`` (``Chunk.reasoning``) and
what the text has between reasoning tags (``tags.TagSplitter``). It is dropped (``mode = "remove"``)
or replaced by ``[reasoning withheld: N tokens]`` (``"summary"``, N = characters / 4; in the field, or
inside the block's own tags in the text). Copies of it in the visible text are replaced by
``[withheld]`` (``copies.ReasoningCorpus``).

Streams, by construction:

- reasoning is never emitted: field deltas are dropped on arrival, and tag text is classified before
  it is released (a possible tag cut by a chunk boundary is held until resolved, at most
  ``longest tag - 1`` characters);
- until a choice has shown reasoning, its visible text is released as it comes (so an answer without
  reasoning passes through unchanged, apart from a trailing ``<``-prefix held for one chunk);
- once it has, its visible text is held back: released only when more than ``window_chars`` newer
  visible characters exist, after a copy check over the held text plus the last ``window_chars``
  released characters; the check runs every ``window_chars / 4`` new characters, so the client sees
  the answer between ``window_chars`` and ``1.25 x window_chars`` characters behind the model (about
  64-80 tokens at the default 256), and everything at the end of the choice. An unfinished
  base64/base32/hex-like run at the end of the held text is held from its start until it ends (so it
  is decoded whole), up to ``max_hold_chars``. Memory per choice: the held text (<= ``max_hold_chars``
  + ``1.25 x window_chars``), the released tail (``window_chars``) and the reasoning's n-gram hashes
  (two per word, at most ``max_reasoning_chars`` of reasoning).

What escapes (counted in ``stats.escaped_chars``): text released before a closing tag with no opening
tag (``</think>`` whose ``<think>`` the chat template wrote: set ``implicit_open``; or a second block
closed twice) beyond the window, and copies whose start is more than the window before the point
where they become recognizable (a copy is recognized after ``min_copy_words`` words).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from antidistill.backends.base import Chunk, Completion
from antidistill.hardening.copies import ReasoningCorpus, trailing_run
from antidistill.hardening.tags import TagSplitter
from antidistill.policy.config import StripReasoningConfig

REDACTED = "[withheld]"


def summary(chars: int) -> str:
    """The fixed-length stand-in for ``chars`` characters of reasoning (no model call)."""
    return f"[reasoning withheld: {max(1, math.ceil(chars / 4))} tokens]"


@dataclass
class GuardStats:
    """What the guard did to one response (``params.reasoning`` of the request's event)."""

    mode: str
    reasoning_chars: int = 0  # reasoning removed (tags and fields)
    blocks: int = 0  # tagged blocks (including ones closed by an orphan closing tag)
    orphan_tags: int = 0  # closing tags with no opening tag
    unclosed_blocks: int = 0  # blocks still open at the end (cut off by max_tokens)
    copies: int = 0  # redacted spans of the visible text
    redacted_chars: int = 0
    escaped_chars: int = 0  # reasoning or copies released before they were recognizable
    max_held_chars: int = 0  # most visible characters held back at once (streams)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Span:
    start: int
    end: int
    marked: bool = False  # its [withheld] marker was emitted


class ChoiceFilter:
    """One choice's text and reasoning in, what the client may see out. ``hold_all``: release
    nothing before ``finish`` (a JSON response, checked whole)."""

    def __init__(self, cfg: StripReasoningConfig, stats: GuardStats, hold_all: bool = False) -> None:
        self.cfg = cfg
        self.stats = stats
        self.hold_all = hold_all
        self.summary = cfg.mode == "summary"
        self.window = cfg.window_chars
        self.step = max(1, cfg.window_chars // 4)
        self.splitter = TagSplitter(cfg.tags, cfg.implicit_open)
        self.corpus = (
            ReasoningCorpus(cfg.min_copy_words, cfg.max_reasoning_chars) if cfg.detect_copies else None
        )
        self.seen = False  # reasoning was seen in this choice: its visible text is checked from now on
        self.base = 0  # position (in the visible text as received) of pending[0]
        self.pending = ""  # visible text received, not released
        self.tail = ""  # the last released characters, as received (context for the check)
        self.spans: list[_Span] = []
        self.inserts: deque[tuple[int, str]] = deque()  # summaries at visible positions
        self.block_chars = 0
        self.open_tag = "" if not cfg.implicit_open else f"<{cfg.tags[0]}>"
        self.block_end = 0  # where the visible text since the last block starts
        self.field_chars = 0  # field reasoning not summarized yet
        self._field_open = False
        self.lstrip = False
        self._unchecked = 0
        self._checked_to = 0  # visible text before this was checked for copies

    @property
    def end(self) -> int:
        return self.base + len(self.pending)

    # -- input --------------------------------------------------------------------------------------

    def feed(self, text: str, reasoning: str | None = None) -> tuple[str, str]:
        """(visible text, reasoning field) to send now."""
        out: list[str] = []
        rout: list[str] = []
        if reasoning:
            self._reasoning(reasoning)
            self.field_chars += len(reasoning)
            self._field_open = True
        if text:
            for kind, s in self.splitter.feed(text):
                self._event(kind, s, rout)
        self._release(out)
        return "".join(out), "".join(rout)

    def finish(self) -> tuple[str, str]:
        """Everything left, at the end of the choice."""
        out: list[str] = []
        rout: list[str] = []
        for kind, s in self.splitter.flush():
            self._event(kind, s, rout)
        if self.splitter.inside:  # cut off inside a block
            self.stats.unclosed_blocks += 1
            name = self.open_tag[1:-1] or self.cfg.tags[0]
            self._block_done(f"</{name}>")
        self._end_field(rout)
        if self.seen and self.corpus is not None:
            self._check()
        self._emit(self.end, out)
        return "".join(out), "".join(rout)

    def _event(self, kind: str, s: str, rout: list[str]) -> None:
        if kind == "text":
            self._end_field(rout)
            self._visible(s)
        elif kind == "reasoning":
            self._reasoning(s)
            self.block_chars += len(s)
        elif kind == "open":
            self.seen = True
            self.open_tag, self.block_chars = s, 0
        elif kind == "close":
            self._block_done(s)
        else:  # orphan: the visible text since the last block was reasoning
            self.stats.orphan_tags += 1
            cut = max(self.base, self.block_end)
            self.stats.escaped_chars += max(0, self.base - self.block_end)
            moved = self.pending[cut - self.base :]
            self.pending = self.pending[: cut - self.base]
            self.spans = [sp for sp in self.spans if sp.start < cut]
            for sp in self.spans:
                sp.end = min(sp.end, cut)
            while self.inserts and self.inserts[-1][0] > cut:
                self.inserts.pop()
            self._reasoning(moved)
            self.open_tag, self.block_chars = "<" + s[2:], len(moved)
            self._block_done(s)

    def _reasoning(self, s: str) -> None:
        self.seen = True
        self.stats.reasoning_chars += len(s)
        if self.corpus is not None:
            self.corpus.add(s)
            self._checked_to = 0  # new reasoning: what is still held is checked again, whole

    def _end_field(self, rout: list[str]) -> None:
        if not self._field_open:
            return
        self._field_open = False
        if self.corpus is not None:
            self.corpus.end_block()
        if self.summary:
            rout.append(summary(self.field_chars))
        self.field_chars = 0

    def _block_done(self, close_tag: str) -> None:
        self.seen = True
        self.stats.blocks += 1
        if self.corpus is not None:
            self.corpus.end_block()
        if self.summary:
            self.inserts.append((self.end, f"{self.open_tag}{summary(self.block_chars)}{close_tag}"))
        elif self.end == 0:
            self.lstrip = True  # "<think>...</think>\n\nAnswer" -> "Answer"
        self.block_chars = 0
        self.block_end = self.end

    def _visible(self, s: str) -> None:
        if self.lstrip:
            s = s.lstrip()
            if not s:
                return
            self.lstrip = False
        self.pending += s
        self._unchecked += len(s)

    # -- output -------------------------------------------------------------------------------------

    def _release(self, out: list[str]) -> None:
        if self.hold_all:
            return
        if not self.seen:
            self._emit(self.end, out)
            return
        self.stats.max_held_chars = max(self.stats.max_held_chars, len(self.pending))
        if len(self.pending) < self.window + self.step or self._unchecked < self.step:
            return
        if self.corpus is not None:
            self._check()
        upto = self.end - self.window
        run = self.base + trailing_run(self.pending)
        if run < upto and self.end - run <= self.cfg.max_hold_chars and not self._covered(run):
            upto = run  # an encoded-looking run still growing: decode it whole before releasing any
        if upto > self.base:
            self._emit(upto, out)

    def _covered(self, pos: int) -> bool:
        return any(sp.start <= pos < sp.end for sp in self.spans)

    def _check(self) -> None:
        """Look for copies in the text not checked yet, with ``16 x min_copy_words`` characters of
        what was (so an n-gram across the boundary is seen) and whole encoded runs."""
        assert self.corpus is not None
        self._unchecked = 0
        start = self.base - len(self.tail)
        fresh = max(start, self._checked_to - 16 * self.cfg.min_copy_words)
        for s, e in self.corpus.find_copies(self.tail + self.pending, fresh - start):
            self._add_span(start + s, start + e)
        self._checked_to = self.end

    def _add_span(self, s: int, e: int) -> None:
        if s < self.base:  # partly released already: what no span covered there has escaped
            covered = sum(max(0, min(sp.end, self.base) - max(sp.start, s)) for sp in self.spans)
            self.stats.escaped_chars += max(0, min(e, self.base) - s - covered)
        keep: list[_Span] = []
        new = _Span(s, e)
        for sp in self.spans:
            if sp.end + 3 < new.start or new.end + 3 < sp.start:  # apart (3: a space or two between)
                keep.append(sp)
            else:
                new = _Span(min(sp.start, new.start), max(sp.end, new.end), sp.marked or new.marked)
        keep.append(new)
        keep.sort(key=lambda sp: sp.start)
        self.spans = keep

    def _emit(self, upto: int, out: list[str]) -> None:
        a = self.base
        while self.inserts and self.inserts[0][0] <= upto:
            p, s = self.inserts.popleft()
            self._emit_range(a, p, out)
            out.append(s)
            a = p
        self._emit_range(a, upto, out)
        cut = upto - self.base
        self.tail = (self.tail + self.pending[:cut])[-self.window :]
        self.pending = self.pending[cut:]
        self.base = upto
        if self.spans:
            self.spans = [sp for sp in self.spans if sp.end > upto - self.window]

    def _emit_range(self, a: int, b: int, out: list[str]) -> None:
        base, text = self.base, self.pending
        for sp in self.spans:
            if sp.end <= a:
                continue
            if sp.start >= b:
                break
            if sp.start > a:
                out.append(text[a - base : sp.start - base])
                a = sp.start
            if not sp.marked:
                sp.marked = True
                self.stats.copies += 1
                out.append(REDACTED)
            stop = min(sp.end, b)
            self.stats.redacted_chars += stop - a
            a = stop
        if a < b:
            out.append(text[a - base : b - base])


class ReasoningGuard:
    """The ``strip_reasoning`` action on one response (one guard per request)."""

    def __init__(self, cfg: StripReasoningConfig) -> None:
        self.cfg = cfg
        self.stats = GuardStats(mode=cfg.mode)
        self._choices: dict[int, ChoiceFilter] = {}

    def complete(self, result: Completion) -> Completion:
        """A JSON response: every choice checked whole (``result`` itself when nothing changed)."""
        choices = []
        changed = False
        for c in result.choices:
            f = ChoiceFilter(self.cfg, self.stats, hold_all=True)
            text, reasoning = f.feed(c.text, c.reasoning)  # (hold_all: no text yet)
            more, more_r = f.finish()
            text, new_reasoning = text + more, (reasoning + more_r) or None
            if text == c.text and new_reasoning == c.reasoning:
                choices.append(c)
            else:
                changed = True
                choices.append(replace(c, text=text, reasoning=new_reasoning))
        return replace(result, choices=tuple(choices)) if changed else result

    def feed(self, chunk: Chunk) -> list[Chunk]:
        """The chunks to send for one backend chunk (the chunk itself when nothing changes)."""
        out: list[Chunk] = []
        content = bool(chunk.text or chunk.reasoning or chunk.finish_reason is not None)
        if chunk.usage is not None:  # the final chunk: choices that did not finish end here
            out += self.close(keep=chunk.index if content else None)
        if not content:
            if chunk.usage is not None:
                out.append(chunk)
            return out
        f = self._choices.get(chunk.index)
        if f is None:
            f = self._choices[chunk.index] = ChoiceFilter(self.cfg, self.stats)
        text, reasoning = f.feed(chunk.text, chunk.reasoning)
        if chunk.finish_reason is not None:
            more, more_r = f.finish()
            text, reasoning = text + more, reasoning + more_r
            del self._choices[chunk.index]
        if text == chunk.text and (reasoning or None) == chunk.reasoning:
            out.append(chunk)
        elif text or reasoning or chunk.finish_reason is not None or chunk.usage is not None:
            out.append(replace(chunk, text=text, reasoning=reasoning or None))
        return out

    def close(self, keep: int | None = None) -> list[Chunk]:
        """What the choices (but ``keep``) still hold when the stream ends without their finish."""
        out: list[Chunk] = []
        for index, f in sorted(self._choices.items()):
            if index == keep:
                continue
            text, reasoning = f.finish()
            del self._choices[index]
            if text or reasoning:
                out.append(Chunk(index=index, text=text, reasoning=reasoning or None))
        return out

    async def stream(self, chunks: AsyncIterator[Chunk]) -> AsyncGenerator[Chunk, None]:
        try:
            async for chunk in chunks:
                for c in self.feed(chunk):
                    yield c
            for c in self.close():
                yield c
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
