"""Reasoning written into the text as ``<think>...</think>`` (or ``<reasoning>``, ``<thought>``, ...):
an incremental splitter that never lets a byte of a block out as visible text.

``TagSplitter.feed(text)`` returns events for what is *resolved*:

- ``("text", s)``: visible text;
- ``("reasoning", s)``: text inside a block;
- ``("open", tag)`` / ``("close", tag)``: a block starts / ends (``tag`` as written);
- ``("orphan", tag)``: a closing tag while no block is open: the text before it was reasoning whose
  opening tag the chat template wrote (the caller reclassifies what it still holds).

A possible tag cut by a chunk boundary (``<``, ``<thi``, ``</thin``) is held back until the next
chunk (or ``flush``) tells what it is, so at most ``longest tag - 1`` characters are ever held. Tags
are matched without regard to case and without attributes or spaces (``<think>``, ``</THINK>``).
Inside a block, any configured closing tag ends it; opening tags there are reasoning text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

Kind = Literal["text", "reasoning", "open", "close", "orphan"]
Event = tuple[Kind, str]


class TagSplitter:
    def __init__(self, tags: Iterable[str], implicit_open: bool = False) -> None:
        names = sorted({t.lower() for t in tags}, key=len, reverse=True)
        if not names:
            raise ValueError("at least one tag name")
        alt = "|".join(re.escape(n) for n in names)
        self._any = re.compile(rf"<(/?)({alt})>", re.IGNORECASE)
        self._close = re.compile(rf"</({alt})>", re.IGNORECASE)
        self._prefixes = frozenset(
            tag[:k] for n in names for tag in (f"<{n}>", f"</{n}>") for k in range(1, len(tag))
        )
        self.max_held = max(len(n) for n in names) + 2  # "</name" without ">"
        self.inside = implicit_open
        self._buf = ""

    @property
    def held(self) -> int:
        """Characters held back (the start of a possible tag)."""
        return len(self._buf)

    def feed(self, text: str) -> list[Event]:
        buf = self._buf + text
        out: list[Event] = []
        pos = 0
        while True:
            m = (self._close if self.inside else self._any).search(buf, pos)
            if m is None:
                break
            if m.start() > pos:
                out.append(("reasoning" if self.inside else "text", buf[pos : m.start()]))
            if self.inside:
                out.append(("close", m.group(0)))
                self.inside = False
            elif m.group(1):
                out.append(("orphan", m.group(0)))
            else:
                out.append(("open", m.group(0)))
                self.inside = True
            pos = m.end()
        keep = self._partial_tag(buf, pos)
        if keep > pos:
            out.append(("reasoning" if self.inside else "text", buf[pos:keep]))
        self._buf = buf[keep:]
        return out

    def flush(self) -> list[Event]:
        """The held characters (they were not a tag after all); the block state stays as it is."""
        buf, self._buf = self._buf, ""
        return [("reasoning" if self.inside else "text", buf)] if buf else []

    def _partial_tag(self, buf: str, start: int) -> int:
        """Where the held-back tail begins: the last ``<`` if what follows it may still become a tag."""
        lt = buf.rfind("<", max(start, len(buf) - self.max_held))
        if lt < 0 or buf[lt:].lower() not in self._prefixes:
            return len(buf)
        return lt
