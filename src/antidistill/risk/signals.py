"""Cheap per-request signals, computed on every request in the gateway hot path.

``extract_signals(event)`` is a pure function of the event: no I/O, no clock, no state. Its work is
bounded whatever the input: cue scanning reads at most the first 4 kB and last 1 kB of each
scanned message (system/developer prompts, the first 2 and the last 6 user messages); the skeleton
reads the first 4 kB and last 512 characters of the last user message; code/structure/script
checks read its first 4 kB.

Reasoning elicitation looks at the system prompt and at *every* user message, not only the last
one, so an instruction given once at the start of a conversation ("from now on, always show your
full reasoning") is still seen on later turns.
"""

from __future__ import annotations

import re
from itertools import islice
from typing import Any, NamedTuple

from antidistill.risk.lexicon import CUES, TAG_CUE, Cue, fold, squeeze, word_text
from antidistill.risk.skeleton import Skeleton, short_hash, template_skeleton
from antidistill.risk.types import RequestSignals, RiskEvent

_SCAN_HEAD = 4096
_SCAN_TAIL = 1024
_FIRST_USER_TURNS = 2
_LAST_USER_TURNS = 6
_SAMPLE_CHARS = 4096  # code/structure checks look at this much of the last user message
_SCRIPT_SAMPLE = 1024  # the writing system is decided on this many characters
_SYSTEM_HASH_MAX = 65536
_INSTRUCTION_ROLES = frozenset({"system", "developer"})
_SHORT = 120  # squeezed texts this short are searched whole (anchor positions are not needed)
_MAX_WINDOWS = 16  # beyond this many anchor hits for one cue, search the whole (bounded) text
_UNSPACED_LANGS = frozenset({"zh", "ja", "ko", "ar", "und"})  # cues not checked to start a word
# Anchors in CJK or Arabic script are found as substrings of the squeezed text; others as stems
# at the start of a word of the word text.
_SUBSTRING_SCRIPT_RE = re.compile("[\u0600-\u06ff\u1100-\u11ff\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def _trie_pattern(words: list[str]) -> str:
    """A regex matching any of ``words`` (longest first), written as a trie so that ``re`` can
    skip quickly over positions where no word starts."""
    root: dict[str, Any] = {}
    for w in words:
        node = root
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        alts = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if "" in node:
            return "(?:" + body + ")?" if len(alts) == 1 else body + "?"
        return body

    return emit(root)


_Tables = tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str], dict[str, frozenset[int]]]


def _anchor_tables() -> _Tables:
    by_anchor: dict[str, set[int]] = {}
    for i, cue in enumerate(CUES):
        for anchor in cue.anchors:
            by_anchor.setdefault(anchor, set()).add(i)
    # A hit on the longest anchor stands for all anchors that are its prefixes ("passo" -> "pas").
    cues_of = {
        a: frozenset(i for b, ids in by_anchor.items() if a.startswith(b) for i in ids) for a in by_anchor
    }
    words = [a for a in by_anchor if not _SUBSTRING_SCRIPT_RE.search(a)]
    subs = [a for a in by_anchor if _SUBSTRING_SCRIPT_RE.search(a)]
    word_start = re.compile("[ \n]" + "(" + _trie_pattern(words) + ")")
    anywhere = re.compile(_trie_pattern(words))
    return word_start, anywhere, re.compile(_trie_pattern(subs)), cues_of


_WORD_ANCHOR_RE, _ANY_WORD_ANCHOR_RE, _SUBSTRING_ANCHOR_RE, _CUES_OF_ANCHOR = _anchor_tables()


class CueMatch(NamedTuple):
    cue: Cue
    start: int  # offsets in the squeezed text (-1 for the tag cue, found in the folded text)
    end: int


class Elicitation(NamedTuple):
    score: float  # noisy-or of the weights of the distinct cues found, in [0, 1]
    lang: str | None  # language of the strongest cue
    cues: tuple[str, ...]  # ids of the cues found, strongest first


def _candidates(words: str, squeezed: str) -> dict[int, list[int]]:
    """Cues with an anchor in the text -> positions of those anchors in ``squeezed`` (positions
    are only computed for texts long enough to be searched in windows)."""
    spaced = " " + words
    found: list[tuple[str, int]]
    if len(squeezed) > _SHORT:
        found = []
        for m in _WORD_ANCHOR_RE.finditer(spaced):
            start = m.start(1)
            found.append((m.group(1), start - 1 - spaced.count(" ", 1, start)))
    else:
        found = [(anchor, 0) for anchor in _WORD_ANCHOR_RE.findall(spaced)]
    if _spaced_out(words):
        found.extend((m.group(0), m.start()) for m in _ANY_WORD_ANCHOR_RE.finditer(squeezed))
    if not squeezed.isascii() and _SUBSTRING_SCRIPT_RE.search(squeezed) is not None:
        found.extend((m.group(0), m.start()) for m in _SUBSTRING_ANCHOR_RE.finditer(squeezed))
    hits: dict[int, list[int]] = {}
    for anchor, pos in found:
        for i in _CUES_OF_ANCHOR[anchor]:
            hits.setdefault(i, []).append(pos)
    return hits


def _windows(positions: list[int], width: int, size: int) -> list[tuple[int, int]]:
    """Merged spans of ``squeezed`` that can hold a match (at most ``width`` long) containing one of
    the anchors at ``positions``; the whole text when that is about as cheap."""
    if size <= max(_SHORT, 2 * width) or len(positions) > _MAX_WINDOWS:
        return [(0, size)]
    spans: list[tuple[int, int]] = []
    for pos in sorted(positions):
        lo, hi = max(0, pos - width), min(size, pos + width)
        if spans and lo <= spans[-1][1]:
            spans[-1] = (spans[-1][0], hi)
        else:
            spans.append((lo, hi))
    return spans


def _spaced_out(words: str) -> bool:
    """A third of the text is spaces: letters spaced out ("t h i n k")."""
    return words.count(" ") * 3 > len(words) > 8


def _starts_word(words: str, squeezed_pos: int) -> bool:
    """Whether position ``squeezed_pos`` of the squeezed text starts a word of ``words``: find the
    word-text position p with p = squeezed_pos + (spaces before p) by fixed-point iteration."""
    pos = squeezed_pos
    while True:
        nxt = squeezed_pos + words.count(" ", 0, pos + 1)
        if nxt == pos:
            break
        pos = nxt
    while pos < len(words) and words[pos] == " ":
        pos += 1
    return pos == 0 or words[pos - 1] in " \n"


def find_cues(text: str) -> list[CueMatch]:
    """Non-overlapping cue matches in ``text``, strongest first: where two matches overlap, the
    weaker one is dropped ("think step by step" does not also count as a bare "step by step")."""
    folded = fold(text)
    words = word_text(folded)
    squeezed = squeeze(words)
    size = len(squeezed)
    found: list[tuple[float, int, int, int]] = []  # (-weight, start, end, cue index)
    for i, positions in _candidates(words, squeezed).items():
        cue = CUES[i]
        if cue.required and not all(lit in squeezed for lit in cue.required):
            continue
        for lo, hi in _windows(positions, cue.width, size):
            for m in islice(cue.regex.finditer(squeezed, lo, hi), 2):
                found.append((-cue.weight, m.start(), m.end(), i))
    found.sort()
    spaced_out = _spaced_out(words)
    kept: list[CueMatch] = []
    for _, start, end, i in found:
        if CUES[i].lang not in _UNSPACED_LANGS and not spaced_out and not _starts_word(words, start):
            continue  # "that is how reasoning works": "s|how reasoning" is no "show reasoning"
        if all(end <= k.start or start >= k.end for k in kept):
            kept.append(CueMatch(CUES[i], start, end))
    if "<" in folded and TAG_CUE.regex.search(folded) is not None:
        kept.insert(0, CueMatch(TAG_CUE, -1, -1))
    return kept


def _bounded(text: str) -> str:
    if len(text) <= _SCAN_HEAD + _SCAN_TAIL:
        return text
    return text[:_SCAN_HEAD] + "\n" + text[-_SCAN_TAIL:]


def _cue_texts(event: RiskEvent) -> list[str]:
    instructions = [m.content for m in event.messages if m.role in _INSTRUCTION_ROLES]
    users = [m.content for m in event.messages if m.role == "user"]
    if len(users) > _FIRST_USER_TURNS + _LAST_USER_TURNS:
        users = users[:_FIRST_USER_TURNS] + users[-_LAST_USER_TURNS:]
    return [_bounded(t) for t in instructions[:2] + users if isinstance(t, str) and t]


def elicitation(texts: list[str]) -> Elicitation:
    """Score how strongly ``texts`` ask for step-by-step reasoning. A cue may span lines of one
    text ("think\nstep by step") but not two texts."""
    matches = find_cues("\n".join(t.replace("\n", " ") for t in texts)) if texts else []
    if not matches:
        return _NO_ELICITATION
    weights: dict[str, float] = {}
    for m in sorted(matches, key=lambda m: -m.cue.weight):
        weights.setdefault(m.cue.id, m.cue.weight)
    miss = 1.0
    for w in weights.values():
        miss *= 1.0 - w
    specific = [m for m in matches if m.cue.lang != "und"]  # a <think> tag has no language
    best = max(specific or matches, key=lambda m: m.cue.weight)
    return Elicitation(round(1.0 - miss, 6), best.cue.lang, tuple(weights))


_NO_ELICITATION = Elicitation(0.0, None, ())
_SCRIPT_RES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("latin", re.compile("[A-Za-z\u00c0-\u024f\u1e00-\u1eff]+")),
    (
        "cjk",
        re.compile(
            "[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+"
        ),
    ),
    ("cyrillic", re.compile("[\u0400-\u052f]+")),
    ("arabic", re.compile("[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufefc]+")),
)
_ASCII_LETTER_RE = re.compile("[A-Za-z]")


def dominant_script(text: str) -> str:
    """The writing system with the most letters in the first 1 kB of ``text``: "latin", "cjk"
    (Han, kana, Hangul), "cyrillic", "arabic", or "other" (no letters of these)."""
    sample = text[:_SCRIPT_SAMPLE]
    if sample.isascii():
        return "latin" if _ASCII_LETTER_RE.search(sample) else "other"
    best, best_count = "other", 0
    for name, regex in _SCRIPT_RES:
        count = sum(len(run) for run in regex.findall(sample))
        if count > best_count:
            best, best_count = name, count
    return best


_CODE_LINE_RE = re.compile(
    r"\n[ \t]*(?:def [\w]+ ?\(|class \w+[:(\s{]|import [\w.]+|from [\w.]+ import |#include\b|#!/"
    r"|(?:async )?function\b|(?:public|private|protected|static) [\w<>\[\]]+ |(?:const|let|var) \w+ ?="
    r"|fn \w+|package \w|using namespace|func \w+\(|SELECT .+ FROM|<\?php|(?:if|for|while) ?\(.*\) ?\{)"
)
_BLOCK_RE = re.compile(r"\) ?\{|\};?\s*$|;\s*\n")
_LIST_LINE_RE = re.compile(r"\n[ \t]*(?:[-*•·+]|\d{1,3}[.)、]|\(\d{1,3}\)|[a-z][.)])[ \t]")
_TABLE_RE = re.compile(r"\n[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*\|")
_JSON_RE = re.compile(r'\s*[\[{]\s*"[^"\n]{1,80}"\s*:')  # used with match(): at the start only


def has_code(sample: str) -> bool:
    """Fenced code, a line that starts like code, or braces-and-semicolons-heavy text."""
    if "```" in sample or _CODE_LINE_RE.search("\n" + sample) is not None:
        return True
    braces = sample.count("{") + sample.count("}")
    return braces >= 2 and sample.count(";") >= 2 and _BLOCK_RE.search(sample) is not None


def has_structure(sample: str, skeleton: Skeleton) -> bool:
    """Numbered/bulleted lists (2+ items), tables, or a JSON object/array."""
    if skeleton.list_items >= 2 or skeleton.table_rows >= 2:
        return True
    lined = "\n" + sample
    if len(_LIST_LINE_RE.findall(lined)) >= 2 or _TABLE_RE.search(lined) is not None:
        return True
    return _JSON_RE.match(sample) is not None or "```json" in sample or "```JSON" in sample


def _system_hash(system: str | None) -> str | None:
    if not isinstance(system, str) or not system.strip():
        return None
    text = system.strip()
    if len(text) > _SYSTEM_HASH_MAX:  # bounded: head, length and tail identify it well enough
        text = f"{text[: _SYSTEM_HASH_MAX - 4096]}\x00{len(text)}\x00{text[-4096:]}"
    return short_hash("system\x00" + text)


def extract_signals(event: RiskEvent) -> RequestSignals:
    """All per-request signals for ``event``; never raises on odd input (empty, huge, surrogates)."""
    last = event.last_user if event.messages else ""
    if not isinstance(last, str):
        last = ""
    found = elicitation(_cue_texts(event))
    skeleton = template_skeleton(last)
    sample = last[:_SAMPLE_CHARS]
    return RequestSignals(
        elicitation=found.score,
        elicitation_lang=found.lang,
        skeleton=skeleton.hash,
        payload_chars=len(last),
        payload_lines=(last.count("\n") + 1 - last.endswith("\n")) if last else 0,
        has_code=has_code(sample),
        has_structure=has_structure(sample, skeleton),
        system_hash=_system_hash(event.system),
        turns=sum(1 for m in event.messages if m.role == "user"),
        script=dominant_script(last),
        elicitation_cues=found.cues,
        skeleton_head=skeleton.head,
        skeleton_tail=skeleton.tail,
    )
