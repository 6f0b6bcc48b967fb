"""Incremental detokenization with stop strings held back (used by the local engine)."""

from __future__ import annotations

from collections.abc import Callable, Sequence


class TextStream:
    """Incremental detokenization of one sequence, with stop strings held back.

    ``push(token)`` returns ``(text, stopped)``: the text that is now safe to show and whether a stop
    string was found (the text then ends just before it). Text is released only when it decodes
    cleanly (no trailing U+FFFD from a partial multi-byte character) and is not the beginning of a
    stop string that may still complete. ``finish()`` releases what is left. Decoding uses a sliding
    window of token ids (the previous piece as context), so each step costs O(piece), not O(text).
    """

    _MAX_UNDECODED = 6  # a UTF-8 character spans at most 4 byte tokens; past this, emit U+FFFD as is

    def __init__(self, decode: Callable[[Sequence[int]], str], stops: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stops = tuple(s for s in stops if s)
        self._ids: list[int] = []
        self._prefix = self._read = 0  # ids[prefix:read] is the context, ids[read:] the new part
        self._held = ""
        self.stopped = False

    def push(self, token: int) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        self._ids.append(token)
        return self._release(self._decoded(force=False))

    def finish(self) -> tuple[str, bool]:
        """Everything not yet released (held text, undecodable bytes), cut at a stop string."""
        if self.stopped:
            return "", True
        text, stopped = self._release(self._decoded(force=True))
        text, self._held = text + self._held, ""
        return text, stopped

    def _decoded(self, *, force: bool) -> str:
        context = self._decode(self._ids[self._prefix : self._read]) if self._read > self._prefix else ""
        full = self._decode(self._ids[self._prefix :])
        if len(full) <= len(context) and not force:
            return ""
        clean = not full.endswith("\ufffd") or len(self._ids) - self._read > self._MAX_UNDECODED
        if not (clean or force):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return full[len(context) :]

    def _release(self, piece: str) -> tuple[str, bool]:
        if not self._stops:
            return piece, False
        held = self._held + piece
        cut = min((i for i in (held.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held, self.stopped = "", True
            return held[:cut], True
        keep = max((_overlap(held, s) for s in self._stops), default=0)
        self._held = held[len(held) - keep :]
        return held[: len(held) - keep], False


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for k in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0
