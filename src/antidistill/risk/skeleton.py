"""Prompt-template skeletons: the prompt with its variable payload masked, hashed.

Requests generated from one template (``"Question: {q}\\nLet's think step by step."``) should map
to one skeleton, distinct natural prompts to distinct skeletons. Per request we cannot know which
words repeat across requests, so the masking is heuristic:

* code blocks, inline code, URLs, e-mails, quoted strings and numbers become placeholders;
* capitalized words in mid-sentence (an approximation of named entities) become ``<e>``;
* list items, table rows and lines holding only placeholders become ``<list>``/``<table>``/``<v>``;
* the value after a short label (``"Text: ..."``, ``"问题：..."``) becomes ``<v>``, and so does the
  rest of a line after a colon that follows a longer sentence, if it has 3+ words;
* the paragraph after a line that ends with a colon or after a markdown header is payload (``<v>``);
* long lines (> 20 words; a CJK character counts half a word) become ``<long>`` when another,
  shorter line carries the template; in a message made only of long lines the opening sentence(s)
  (4+ words) are kept, so long natural prompts stay distinct, and the rest becomes ``<long>``;
* lists of numbers or names, and runs of list/table/value lines, become one placeholder
  (payloads with 3 or 7 items look alike).

Short messages ("hi", "thanks!") are kept as they are, so chit-chat does not collapse.

Besides the full skeleton, ``head``/``tail`` hash the first/last 4 words of the skeleton's first
and last lines: a template whose payload sits mid-sentence (``"Write a poem about {topic} in the
style of {poet}."``) still repeats its head and tail.

Work is bounded: only the first 4 kB and the last 512 characters of a message are looked at.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import NamedTuple

_HEAD_CHARS = 4096
_TAIL_CHARS = 512
_LONG_UNITS = 20  # a line longer than this (in words) is payload-like
_LABEL_MAX_WORDS = 4  # "Text to translate: ..." is a label; longer prefixes are sentences
_COLON_TAIL_UNITS = 3  # after a colon in a sentence, mask the rest if it is at least this long
_EDGE_UNITS = 4.0  # words kept for the head/tail hashes
_MIN_OPENING_UNITS = 4  # the kept opening of a long line has at least this many words

_CJK = "\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK}]+")
_FENCE_RE = re.compile(r"(```|~~~).*?(?:\1|\Z)", re.DOTALL)
_INLINE_CODE_RE = re.compile(r"`[^`\n]{1,300}`")
# ASCII classes and literal first characters keep the scans fast (Unicode \w, \d and IGNORECASE
# make ``re`` look up every character's category or give up its prefix scan).
_URL_RE = re.compile(r"https?://\S+|ftp://\S+|www\.\S+")
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_QUOTE_START_RE = re.compile('["“«「『‘„‹]')
_QUOTE_RE = re.compile(
    r'"[^"\n]{1,400}"|“[^”\n]{1,400}”|„[^“”\n]{1,400}[“”]|«[^»\n]{1,400}»|‹[^›\n]{1,400}›'
    r"|「[^」\n]{1,400}」|『[^』\n]{1,400}』|‘[^’\n]{1,400}’"
)
_SINGLE_QUOTE_RE = re.compile(r"'(?<!\w')[^'\n]{1,300}'(?!\w)")  # look-behind after the quote: fast scan
# A number (with units glued on: 12kg, 3.5%, 2024-01-31) or a list of them ("3, 5 and 8").
_NUM = r"[0-9](?:[0-9A-Za-z_%]|[.,:/-](?=[0-9]))*"
_LIST_SEP = r"(?:, ?| ?[;/&+-] ?|,? (?:and|or|et|und|y|e|и|или) )"
_NUMBER_RE = re.compile(f"{_NUM}(?:{_LIST_SEP}{_NUM})*")
_UPPER = "A-ZÀ-ÖØ-ÞА-ЯЁΑ-Ω"
# A capitalized word (or a run or list of them: "New York", "Paris, Rome and Oslo") preceded by a
# word, comma or placeholder and one space: a mid-sentence proper noun, roughly. The look-behind
# sits after the first character so that the scanner can skip quickly to upper-case letters.
_CAP = "[" + _UPPER + "][\\w'’-]*"
_ENTITY_RE = re.compile(
    "[" + _UPPER + "](?<=[\\w,;)>\\]] [" + _UPPER + f"])[\\w'’-]*(?:(?: |{_LIST_SEP}){_CAP})*"
)
_HSPACE_RE = re.compile(r"[ \t\f\v\r]{2,}|[\t\f\v\r]")
_LIST_RE = re.compile(
    r"(?:[-*•·●▪+]\s|<n>[.)、]|\(<n>\)|[a-zA-Z][.)]\s|\([a-z]\)\s|[一二三四五六七八九十]+、)"
)
_LABEL_RE = re.compile(r"([^\W\d][^:.?!。？！\n]{0,160}?) ?: ?(.*)")
_PLACEHOLDER_RE = re.compile(r"<(?:n|q|e|code|url|email|v|long|list|table|cut)>")
_WORD_CHAR_RE = re.compile(r"[^\W\d_]")
_SENTENCE_END_RE = re.compile(r"[.!?。！？](?:\s|$)|[。！？]")
_TOKEN_RE = re.compile(f"<\\w+>|[{_CJK}]|[^\\s{_CJK}]+")


class Skeleton(NamedTuple):
    text: str  # the masked, casefolded skeleton (for debugging and reasons)
    hash: str  # 16 hex chars
    head: str  # hash of the first 4 words of the first line
    tail: str  # hash of the last 4 words of the last line
    list_items: int
    table_rows: int


def short_hash(text: str) -> str:
    """16 hex characters of BLAKE2b (lone surrogates are hashed, not rejected)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def nfkc(text: str) -> str:
    """NFKC, computed as NFC(NFKD(x)): same result, ~20x faster in CPython on CJK text."""
    if text.isascii() or unicodedata.is_normalized("NFKC", text):
        return text
    return unicodedata.normalize("NFC", unicodedata.normalize("NFKD", text))


def _units(line: str) -> float:
    """Length in words; a CJK character counts half a word (no spaces to split on)."""
    if line.isascii() or _CJK_RE.search(line) is None:
        return float(line.count(" ") + 1)
    cjk = sum(len(run) for run in _CJK_RE.findall(line))
    rest = _CJK_RE.sub(" ", line)
    return cjk / 2 + len(rest.split())


def _mask_inline(text: str) -> str:
    """Placeholders for code, URLs, e-mails, quotes and numbers (entities: per kept line, later)."""
    if "```" in text or "~~~" in text:
        text = _FENCE_RE.sub("\n<code>\n", text)
    if "`" in text:
        text = _INLINE_CODE_RE.sub(" <code> ", text)
    if "://" in text or "www." in text:
        text = _URL_RE.sub("<url>", text)
    if "@" in text:
        text = _EMAIL_RE.sub("<email>", text)
    if '"' in text if text.isascii() else _QUOTE_START_RE.search(text) is not None:
        text = _QUOTE_RE.sub(" <q> ", text)
    if "'" in text:
        text = _SINGLE_QUOTE_RE.sub(" <q> ", text)
    text = _NUMBER_RE.sub("<n>", text)
    if "  " in text or "\t" in text or "\r" in text or "\f" in text or "\v" in text:
        text = _HSPACE_RE.sub(" ", text)
    return text


def _opening(line: str) -> str:
    """The opening sentence(s) of a long line: sentences up to at least 4 words ("Yeah." alone
    says nothing), at most ~20 words."""
    end = len(line)
    for m in _SENTENCE_END_RE.finditer(line, 0, 400):
        if _units(line[: m.end()]) >= _MIN_OPENING_UNITS:
            end = m.end()
            break
    first = line[:end].strip()
    if _units(first) <= _LONG_UNITS:
        return first
    if line.isascii():
        return " ".join(first.split()[:12])
    return first[:24]


def _classify(line: str) -> tuple[str, str, float]:
    """(kind, rendered, words) for one stripped, non-empty line. Kinds: table, list, value, label,
    long, text; a "long" line is rendered later, once we know whether another line is an anchor."""
    if line.count("|") >= 2:
        return "table", "<table>", 0.0
    if _LIST_RE.match(line):
        return "list", "<list>", 0.0
    if not _WORD_CHAR_RE.search(_PLACEHOLDER_RE.sub("", line) if "<" in line else line):
        return "value", ("<v>" if len(line) > 12 else line), 0.0
    units = _units(line)
    label = _LABEL_RE.match(line) if ":" in line[:200] else None
    if label is not None and label.group(2):
        prefix, rest = label.group(1), label.group(2)
        if prefix.count(" ") < _LABEL_MAX_WORDS and _units(prefix) <= _LABEL_MAX_WORDS:
            return "label", f"{prefix}: <v>", units
        if _units(rest) >= _COLON_TAIL_UNITS:
            return "label", f"{prefix}: <v>", units
    if units > _LONG_UNITS:
        return "long", line, units
    return "text", line, units


def _edge(line: str, from_end: bool) -> str:
    """The first (or last) 4 words of ``line``; CJK characters count half a word."""
    if line.isascii():
        words = line.split()
        n = int(_EDGE_UNITS)
        return " ".join(words[-n:] if from_end else words[:n])
    tokens = _TOKEN_RE.findall(line[-400:] if from_end else line[:400])
    if from_end:
        tokens.reverse()
    kept: list[str] = []
    weight = 0.0
    for tok in tokens:
        if weight >= _EDGE_UNITS:
            break
        kept.append(tok)
        weight += 0.5 if _CJK_RE.fullmatch(tok) else 1.0
    if from_end:
        kept.reverse()
    return " ".join(kept)


_PAYLOAD_ROW = ("value", "<v>", 0.0)


def template_skeleton(text: str) -> Skeleton:
    """The skeleton of one message (normally the last user message)."""
    if len(text) > _HEAD_CHARS + _TAIL_CHARS:
        text = text[:_HEAD_CHARS] + "\n<cut>\n" + text[-_TAIL_CHARS:]
    text = _mask_inline(nfkc(text))
    rows: list[tuple[str, str, float]] = []
    intro = payload = False  # after "...:" or a "# header" line, the next paragraph is payload
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            payload = False
        elif intro or payload:
            rows.append(_PAYLOAD_ROW)
            intro, payload = False, True
        else:
            rows.append(_classify(line))
            intro = line.endswith(":") or line.startswith("#")
    # An anchor is a line that plausibly carries the template: a label or a short sentence.
    has_anchor = False
    for kind, _, units in rows:
        if kind == "label" or (kind == "text" and units >= 2):
            has_anchor = True
            break
    out: list[str] = []
    list_items = table_rows = 0
    for kind, rendered, _ in rows:
        list_items += kind == "list"
        table_rows += kind == "table"
        if kind == "long":
            rendered = "<long>" if has_anchor else f"{_opening(rendered)} <long>"
        if kind in ("text", "label", "long"):
            rendered = _ENTITY_RE.sub("<e>", rendered)
        if out and rendered == out[-1] and rendered.startswith("<"):
            continue
        out.append(rendered)
    skeleton = " / ".join(out).casefold()
    digest = short_hash(skeleton)
    lines = skeleton.split(" / ")
    head, tail = _edge(lines[0], from_end=False), _edge(lines[-1], from_end=True)
    return Skeleton(
        text=skeleton,
        hash=digest,
        head=digest if head == skeleton else short_hash(head),
        tail=digest if tail == skeleton else short_hash(tail),
        list_items=list_items,
        table_rows=table_rows,
    )
