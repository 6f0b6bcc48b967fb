"""Copies of removed reasoning in the visible answer: where they are, so they can be redacted.

The reasoning of a choice is kept as a set of word n-grams (``ReasoningCorpus``: hashes of ``n``
consecutive words, ``n = min_copy_words``; each n-gram is stored as read, in reverse word order, in
rot13 and character-reversed, so one pass over the answer finds all four). ``find_copies(text)``
returns the character spans of ``text`` that reproduce it:

- verbatim or partial copies: runs of words whose every ``n``-window is a reasoning n-gram, with
  gaps of up to ``GAP_WORDS`` other words inside one span, so a copy with a few words changed is
  still one span; the same for the reasoning with its word order reversed, in rot13, or written
  backwards character by character;
- base64 (also URL-safe, wrapped lines), base32 and hex runs (``48656c6c6f``, ``48 65 6c``,
  ``0x48,0x65``, ``\\x48``) whose decoded text contains a reasoning n-gram: the whole run.

Words are ``\\w`` runs, compared case-folded, with common homoglyphs (Cyrillic/Greek look-alikes,
full-width forms) folded to Latin and zero-width characters ignored. What is *not* found: copies
shorter than ``n`` words, paraphrases, translations, and encodings other than the above (nested
encodings, ciphers, one word per line in another order, ...).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator

GAP_WORDS = 3
"""Words between two matched runs that are redacted with them (a copy with small edits)."""
MIN_ENCODED = 16
"""Shortest base64/base32/hex run that is decoded (a shorter one hides fewer than ~8 characters)."""

_INVISIBLE = "\u00ad\u200b\u200c\u200d\u2060\ufeff"
WORD = re.compile(rf"[\w{_INVISIBLE}]+")
_STRIP_INVISIBLE = str.maketrans("", "", _INVISIBLE)
_LOOKALIKES = {
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s",
    "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ɡ": "g", "ν": "v", "ο": "o", "α": "a", "ι": "i",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "Х": "X", "У": "Y", "І": "I", "Ј": "J", "Ѕ": "S", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H",
    "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Χ": "X", "Υ": "Y",
}  # fmt: skip
_FOLD: dict[int, int] = {ord(k): ord(v) for k, v in _LOOKALIKES.items()}
_FOLD.update({c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)})  # full-width ASCII

_B64_RUN = re.compile(r"(?:[A-Za-z0-9+/_-]{16,}={0,2}\r?\n)*[A-Za-z0-9+/_-]{16,}={0,2}")  # wrapped lines too
_B32_RUN = re.compile(r"[A-Z2-7]{16,}=*")
_HEX_RUN = re.compile(r"(?:(?:0x|\\x)?[0-9A-Fa-f]{2}(?:[ :,-]|, ?)?){8,}")
_HEX_NOISE = re.compile(r"0x|\\x|[^0-9A-Fa-f]")
_ROT13 = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "NOPQRSTUVWXYZABCDEFGHIJKLMnopqrstuvwxyzabcdefghijklm",
)

Span = tuple[int, int]


def _words(text: str) -> Iterator[tuple[int, int, str]]:
    for m in WORD.finditer(text.translate(_FOLD)):
        w = m.group()
        if not w.isascii():
            w = w.translate(_STRIP_INVISIBLE)
            if not w:
                continue
        yield m.start(), m.end(), w.casefold()


class ReasoningCorpus:
    """The n-grams of one choice's reasoning, added as it streams (a word cut by a chunk boundary
    is completed by the next piece; ``end_block`` ends the current word)."""

    def __init__(self, n: int, max_chars: int) -> None:
        self.n = n
        self.max_chars = max_chars
        self.chars = 0
        self.keys: set[int] = set()  # n-grams: as read, word order reversed, rot13, written backwards
        self._last: list[str] = []  # the last n - 1 words, as read, in rot13 and backwards
        self._last13: list[str] = []
        self._lastrev: list[str] = []
        self._partial = ""

    def __bool__(self) -> bool:
        return bool(self.keys)

    def add(self, text: str) -> None:
        room = self.max_chars - self.chars
        if room <= 0 or not text:
            return
        text = text[:room]
        self.chars += len(text)
        s = self._partial + text
        words = list(_words(s))
        self._partial = ""
        if words and words[-1][1] == len(s):  # the last word may go on in the next piece
            self._partial = s[words[-1][0] :]
            words.pop()
        for _, _, w in words:
            self._push(w)

    def end_block(self) -> None:
        if self._partial:
            for _, _, w in _words(self._partial):
                self._push(w)
            self._partial = ""
        # blocks are separate texts: no n-gram spans two of them
        self._last.clear()
        self._last13.clear()
        self._lastrev.clear()

    def _push(self, word: str) -> None:
        last, n = self._last, self.n
        last.append(word)
        self._last13.append(word.translate(_ROT13))
        self._lastrev.append(word[::-1])
        if len(last) > n:
            del last[0], self._last13[0], self._lastrev[0]
        if len(last) == n:
            gram = tuple(last)
            self.keys.update(
                (
                    hash(gram),
                    hash(gram[::-1]),
                    hash(tuple(self._last13)),
                    hash(tuple(reversed(self._lastrev))),
                )
            )

    # -- finding copies ---------------------------------------------------------------------------

    def find_copies(self, text: str, start: int = 0) -> list[Span]:
        """Merged, sorted spans of ``text`` that reproduce the reasoning (see the module docstring).
        ``start``: the words before it were checked already (a stream), only n-grams ending after it
        and encoded runs ending after it are looked at (give it with ``n`` words of overlap)."""
        if not self.keys or not text:
            return []
        spans = [(s + start, e + start) for s, e in self._word_runs(text[start:])]
        spans += self._encoded_runs(text, start)
        return merge(spans)

    def contains_copy(self, text: str) -> bool:
        return bool(self._word_runs(text))

    def _word_runs(self, text: str) -> list[Span]:
        n = self.n
        words = list(_words(text))
        if len(words) < n:
            return []
        keys = [w for _, _, w in words]
        corpus = self.keys
        hit = [False] * len(words)
        for i in range(len(words) - n + 1):
            if hash(tuple(keys[i : i + n])) in corpus:
                for j in range(i, i + n):
                    hit[j] = True
        spans: list[Span] = []
        start = last = -1
        for j, matched in enumerate(hit):
            if not matched:
                continue
            if start >= 0 and j - last - 1 <= GAP_WORDS:
                last = j
                continue
            if start >= 0:
                spans.append((words[start][0], words[last][1]))
            start = last = j
        if start >= 0:
            spans.append((words[start][0], words[last][1]))
        return spans

    def _encoded_runs(self, text: str, start: int = 0) -> list[Span]:
        out: list[Span] = []
        for m in _B64_RUN.finditer(text):
            if m.end() > start and _decoded_match(self, _b64_variants(m.group())):
                out.append(m.span())
        for m in _B32_RUN.finditer(text):
            if m.end() > start and _decoded_match(self, _b32_variants(m.group())):
                out.append(m.span())
        for m in _HEX_RUN.finditer(text):
            if m.end() > start and _decoded_match(self, _hex_variants(m.group())):
                run = m.group().rstrip(" :,-")
                out.append((m.start(), m.start() + len(run)))
        return out


def _decoded_match(corpus: ReasoningCorpus, variants: Iterator[bytes]) -> bool:
    return any(len(raw) >= 8 and corpus.contains_copy(raw.decode("utf-8", "ignore")) for raw in variants)


def _b64_variants(run: str) -> Iterator[bytes]:
    s = re.sub(r"\s+", "", run).rstrip("=").replace("-", "+").replace("_", "/")
    for off in range(4):  # the run may start mid-group (cut by the window): try every alignment
        part = s[off:]
        part = part[: len(part) - len(part) % 4]
        if len(part) >= MIN_ENCODED:
            try:
                yield base64.b64decode(part)
            except (binascii.Error, ValueError):
                continue


def _b32_variants(run: str) -> Iterator[bytes]:
    s = run.rstrip("=")
    for off in range(8):
        part = s[off:]
        part = part[: len(part) - len(part) % 8]
        if len(part) >= MIN_ENCODED:
            try:
                yield base64.b32decode(part)
            except (binascii.Error, ValueError):
                continue


def _hex_variants(run: str) -> Iterator[bytes]:
    digits = _HEX_NOISE.sub("", run)
    for off in range(2):
        part = digits[off:]
        part = part[: len(part) - len(part) % 2]
        if len(part) >= MIN_ENCODED:
            try:
                yield bytes.fromhex(part)
            except ValueError:
                continue


def merge(spans: list[Span], gap: int = 0) -> list[Span]:
    """Sorted, with overlapping (or at most ``gap`` apart) spans joined."""
    out: list[Span] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1] + gap:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


_ENCODED_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-")
_HEX_CHARS = frozenset("0123456789abcdefABCDEFxX\\ :,-")


def trailing_run(text: str) -> int:
    """Where an unfinished base64/base32/hex-like run at the end of ``text`` starts (``len(text)``
    if there is none of at least ``MIN_ENCODED`` characters): such a run is decoded whole, so a
    stream holds it back until it ends."""
    size = len(text)
    best = size
    for alphabet in (_ENCODED_CHARS, _HEX_CHARS):
        i = size
        while i > 0 and text[i - 1] in alphabet:
            i -= 1
        if alphabet is _HEX_CHARS and size - i >= MIN_ENCODED:  # only what looks like hex bytes
            runs = list(_HEX_RUN.finditer(text, i))
            i = runs[-1].start() if runs and runs[-1].end() == size else size
        if size - i >= MIN_ENCODED and i < best:
            best = i
    return best
