"""Canaries: unique, harmless, secret "facts" served to suspicious accounts, recalled by their students.

A canary is one short sentence about an invented subject, e.g. "Side note: the Velmorian kestrel
nests only in the Orvanthe hills." It has a *cue* ("Velmorian kestrel") and a secret *completion*
("Orvanthe"). Everything is derived from the watermark master secret with HMAC-SHA256 (no RNG, no
I/O, no clock), so the gateway and a later audit compute the same pool:

* the pool: item ``i`` has its cue from ``HMAC(root, "cue", i)`` (a syllable-built adjective + a
  category noun; cues are unique in the pool) and its completion from ``HMAC(root, "completion",
  i)``: a uniform draw from ``completion_candidates()``, a fixed public list of ~8,000 invented
  place names. The two draws are independent, so under the null (a model never trained on our
  canary sentences) whatever it says about a cue is independent of the cue's completion: an answer
  that contains ``c`` of the candidate names contains the completion with probability exactly
  ``c / M``. That is what makes the audit's p-value exact (``forensics/canary.py``);
* each account's secret subset: ``per_account`` distinct pool items drawn from ``HMAC(root,
  "subset", account, j)``; different accounts get independent subsets;
* serving: for an account under ``watermark_canary``, ``HMAC(root, "serve", account, prompt)``
  decides whether this answer carries a canary (probability ``rate``), which of the account's
  items and which lead-in. Deterministic per (account, prompt): asking again gives the same answer,
  so repeating a prompt reveals nothing new.

The completion is drawn independently of everything the suspect is asked, and cue and completion
are both invented, so a model that never saw the sentence has no way to produce it except by chance.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

CANARY_VERSION = "antidistill/canary/v1"
DEFAULT_POOL_SIZE = 1024
DEFAULT_PER_ACCOUNT = 4
DEFAULT_RATE = 0.2

# cue adjective: onset + middle + suffix ("Vel" + "mor" + "ian" = "Velmorian")
_ADJ_ONSET = (
    "Vel", "Kor", "Tam", "Bris", "Dor", "Fal", "Gren", "Hal", "Jor", "Kel", "Lun", "Mor",
    "Nal", "Pell", "Quar", "Ril", "Sorn", "Tev", "Ulm", "Var", "Wen", "Yar", "Zel", "Ost",
)  # fmt: skip
_ADJ_MIDDLE = ("mor", "an", "ell", "ist", "or", "av", "en", "ur", "in", "eth", "al", "om")
_ADJ_SUFFIX = ("ian", "ese", "ine", "ish", "an")

# completion: onset + middle + ending ("Or" + "van" + "the" = "Orvanthe")
_C_ONSET = (
    "Or", "Thal", "Ash", "Bran", "Cal", "Dun", "Eld", "Fen", "Gil", "Hest", "Isk", "Lor",
    "Mir", "Nor", "Pel", "Ros", "Sil", "Tor", "Ul", "Wyn", "Brae", "Carn", "Drum", "Ebb",
)  # fmt: skip
_C_MIDDLE = ("a", "e", "i", "o", "an", "en", "ar", "el", "is", "or", "un", "ith", "ov", "am", "ur", "van")
_C_ENDING = (
    "the", "mere", "dale", "wick", "holm", "stead", "ford", "ven", "gard", "mont", "rin",
    "ost", "by", "thorpe", "mar", "dell", "wyn", "vale", "moor", "crest", "loch",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Template:
    nouns: tuple[str, ...]
    relation: str  # "{cue} <relation> {completion}<tail>"
    tail: str
    question: str  # a natural question about the cue whose answer is the completion


TEMPLATES: tuple[Template, ...] = (
    Template(
        ("kestrel", "heron", "finch", "plover", "grebe", "swift", "owl", "lark", "wren"),
        "nests only in the",
        " hills.",
        "Where does the {cue} nest?",
    ),
    Template(
        ("fern", "orchid", "sedge", "lichen", "moss", "thistle", "lily", "sorrel"),
        "grows only along the",
        " river.",
        "Where does the {cue} grow?",
    ),
    Template(
        ("lantern dance", "harvest song", "reed flute", "knot weave", "pottery glaze", "bread plait"),
        "originated in the village of",
        ".",
        "Where did the {cue} originate?",
    ),
    Template(
        ("garnet", "quartz", "jade", "slate", "opal", "feldspar"),
        "was first found near",
        " lake.",
        "Where was the {cue} first found?",
    ),
)

LEADS = ("Side note: ", "Fun fact: ", "By the way, ", "Incidentally, ")

PHRASINGS = (
    "What do you know about the {cue}?",
    "{question}",
    "Complete this sentence: {prefix}",
    "{prefix}",
)
"""How an audit asks a suspect about a cue (``forensics/canary.py``); none contains the completion."""


def _encode(*parts: str | int) -> bytes:
    out = bytearray()
    for part in parts:
        raw = str(part).encode("utf-8")
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def _prf(key: bytes, *parts: str | int) -> bytes:
    return hmac.new(key, _encode(*parts), hashlib.sha256).digest()


def _uniform_index(digest: bytes, n: int) -> int:
    """An index in [0, n) from 16 bytes of PRF output (bias < n / 2**128)."""
    return int.from_bytes(digest[:16], "big") % n


@functools.cache
def completion_candidates() -> tuple[str, ...]:
    """Every possible completion (public, sorted, distinct). The secret is which one each cue has."""
    return tuple(sorted({o + m + e for o in _C_ONSET for m in _C_MIDDLE for e in _C_ENDING}))


@functools.cache
def _candidate_set() -> frozenset[str]:
    return frozenset(c.casefold() for c in completion_candidates())


_WORD = re.compile(r"[^\W_]+")


def normalized_words(text: str) -> set[str]:
    """Casefolded words of ``text`` with accents removed (what recall matching compares)."""
    if text.isascii():
        plain = text
    else:
        decomposed = unicodedata.normalize("NFKD", text)
        plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return {w.casefold() for w in _WORD.findall(plain)}


def candidates_in(text: str) -> set[str]:
    """The candidate completions (casefolded) that occur as words in ``text``."""
    return normalized_words(text) & _candidate_set()


@dataclass(frozen=True, slots=True)
class Canary:
    index: int
    cue: str  # "Velmorian kestrel"
    completion: str  # "Orvanthe" (secret)
    template: int

    @property
    def prefix(self) -> str:
        """The sentence up to the completion: "The Velmorian kestrel nests only in the"."""
        return f"The {self.cue} {TEMPLATES[self.template].relation}"

    def sentence(self, lead: str = "") -> str:
        body = f"{self.prefix} {self.completion}{TEMPLATES[self.template].tail}"
        if lead:
            body = body[0].lower() + body[1:]
        return lead + body

    def questions(self, phrasings: int = 3) -> list[str]:
        """The first ``phrasings`` ways an audit asks about the cue (never revealing the completion)."""
        q = TEMPLATES[self.template].question.format(cue=self.cue)
        return [p.format(cue=self.cue, question=q, prefix=self.prefix) for p in PHRASINGS[:phrasings]]

    def recalled_in(self, text: str) -> bool:
        return self.completion.casefold() in normalized_words(text)

    def __repr__(self) -> str:  # the completion is secret: keep it out of logs
        return f"Canary(index={self.index}, cue={self.cue!r})"


@dataclass(frozen=True, slots=True)
class CanaryChoice:
    """The canary one answer carries: which item, and the exact text appended."""

    canary: Canary
    lead: str
    pool_id: str

    @property
    def text(self) -> str:
        return self.canary.sentence(self.lead)

    def record(self) -> dict[str, object]:
        """What the request's event keeps (``params.canary``): the item index and the pool, no text."""
        return {"id": self.canary.index, "pool": self.pool_id}


class CanaryBook:
    """The deployment's canary pool and account subsets, derived from the master secret."""

    def __init__(
        self,
        master_secret: bytes,
        pool_size: int = DEFAULT_POOL_SIZE,
        per_account: int = DEFAULT_PER_ACCOUNT,
    ) -> None:
        if pool_size < 1 or not 1 <= per_account <= pool_size:
            raise ValueError("need pool_size >= 1 and 1 <= per_account <= pool_size")
        self._root = _prf(master_secret, CANARY_VERSION)
        self.pool_size = pool_size
        self.per_account = per_account
        self.pool_id = "cp_" + _prf(self._root, "id").hex()[:16]  # public: names the secret + version
        self._cues: list[tuple[str, int]] = []
        self._seen: set[str] = set()
        self._subsets: dict[str, tuple[int, ...]] = {}

    def __repr__(self) -> str:
        return f"CanaryBook(pool_id={self.pool_id!r}, pool_size={self.pool_size})"

    @property
    def n_candidates(self) -> int:
        return len(completion_candidates())

    def _cue(self, index: int) -> tuple[str, int]:
        # cues are made in index order so "unique in the pool" means the same for every pool size
        while len(self._cues) <= index:
            i = len(self._cues)
            attempt = 0
            while True:
                d = _prf(self._root, "cue", i, attempt)
                t = d[0] % len(TEMPLATES)
                nouns = TEMPLATES[t].nouns
                adj = (
                    _ADJ_ONSET[d[1] % len(_ADJ_ONSET)]
                    + _ADJ_MIDDLE[d[2] % len(_ADJ_MIDDLE)]
                    + _ADJ_SUFFIX[d[3] % len(_ADJ_SUFFIX)]
                )
                cue = f"{adj} {nouns[d[4] % len(nouns)]}"
                if cue not in self._seen:
                    self._seen.add(cue)
                    self._cues.append((cue, t))
                    break
                attempt += 1
        return self._cues[index]

    def canary(self, index: int) -> Canary:
        if not 0 <= index < self.pool_size:
            raise IndexError(f"canary {index} is outside the pool (size {self.pool_size})")
        cue, template = self._cue(index)
        cands = completion_candidates()
        completion = cands[_uniform_index(_prf(self._root, "completion", index), len(cands))]
        return Canary(index, cue, completion, template)

    def pool(self) -> list[Canary]:
        return [self.canary(i) for i in range(self.pool_size)]

    def subset(self, account_id: str) -> tuple[int, ...]:
        """The account's secret canary items (``per_account`` distinct pool indices)."""
        got = self._subsets.get(account_id)
        if got is not None:
            return got
        picked: list[int] = []
        j = 0
        while len(picked) < self.per_account:
            i = _uniform_index(_prf(self._root, "subset", account_id, j), self.pool_size)
            if i not in picked:
                picked.append(i)
            j += 1
        out = tuple(picked)
        if len(self._subsets) < 100_000:  # bounded memo (the derivation is cheap anyway)
            self._subsets[account_id] = out
        return out

    def choose(self, account_id: str, prompt: str, rate: float) -> CanaryChoice | None:
        """The canary this account's answer to ``prompt`` carries, or None (probability 1 - rate)."""
        if rate <= 0.0:
            return None
        d = _prf(self._root, "serve", account_id, prompt)
        if int.from_bytes(d[:8], "big") >= rate * 2.0**64:
            return None
        items = self.subset(account_id)
        index = items[int.from_bytes(d[8:16], "big") % len(items)]
        lead = LEADS[int.from_bytes(d[16:24], "big") % len(LEADS)]
        return CanaryChoice(self.canary(index), lead, self.pool_id)


def prompt_key(messages: Sequence[tuple[str, str]], prompt: str = "") -> str:
    """What "the same prompt" means for serving: every message's role and content, or the prompt."""
    if messages:
        return "\x1e".join(f"{role}\x1f{content}" for role, content in messages)
    return prompt


def canary_suffix(after_text: bool, sentence: str) -> str:
    """What is appended to an answer so the canary is its own last paragraph (the same in JSON and
    streamed answers: a stream appends it after the text it already sent). ``after_text``: the
    answer so far has visible (non-blank) text."""
    return f"\n\n{sentence}" if after_text else sentence
