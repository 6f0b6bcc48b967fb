"""Watermarks on the real embedded teacher (SmolLM2-135M-Instruct): power, false positives, quality, speed.

    .venv/bin/python benchmarks/watermark_teacher.py [--n-docs 8] [--n-docs-low-temp 4]
        [--max-tokens 450] [--levels 100 200 400] [--tp-rounds 2] [--threads 1] [--conditions ...]

The defaults (~20k generated tokens) take 8-14 minutes on the 2 shared cores here (28-45 tok/s
depending on what else runs); the recorded results used larger --n-docs (see "args" in the JSON).

Long-answer chat prompts are answered through ``LocalBackend`` (continuous batching, the production
sampling path) with a per-request ``WatermarkSampler`` for: KGW canary (gamma 0.25, window 2,
delta 2 and 3), Gumbel (window 4) and no watermark, at temperature 1.0 and at temperature 0.7.
Every response is re-tokenized from its text (what an auditor has) and tested with the
chat-templated prompt ids as ``prompt_seqs`` (windows seen in the prompt are not scored).

Reported:
* TPR at p <= 1e-3 at exactly N scored tuples (each response cut at the token where its N-th
  scored, deduplicated tuple ends); responses with fewer than N scored tuples are dropped at that
  level and counted. Wilson 95% intervals.
* FPR: the unwatermarked responses tested against the real keys and against ``--fpr-keys`` other
  account keys per scheme (per (document, key) test at 1e-3; the tests share documents, so the
  Wilson interval is only indicative), and the KGW responses tested against other accounts' keys
  (false attribution).
* Quality: mean token NLL of each response under the teacher itself (its raw logits, i.e.
  temperature 1, recorded by a wrapper around the sampler at each generated token: the numbers a
  teacher-forced pass over the generated ids gives, without a second forward pass) -> perplexity,
  with document-bootstrap 95% intervals, and the difference to the unwatermarked responses of the
  same temperature; mean teacher entropy per token along the generated path; length statistics;
  how many responses re-tokenize to exactly the generated ids.
* Speed: batches of the same prompts generated with a timing wrapper around (a) the default sampler
  and (b) the watermark samplers, rounds interleaved (ABC, CBA, ...) to cancel drift; tokens/s and
  sampler milliseconds per token.

Writes benchmarks/results/watermark_teacher.json (plus the unwatermarked texts, for
benchmarks/markllm_compare.py, in benchmarks/results/watermark_teacher_plain_texts.json).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from numpy.typing import NDArray

from antidistill.backends.base import (
    ChatMessage,
    Completion,
    GenerationRequest,
    SamplingParams,
    TokenSampler,
    WatermarkAssignment,
)
from antidistill.backends.sampling import DefaultSampler
from antidistill.watermark import Detector, WatermarkKey, WatermarkSampler, derive_key
from antidistill.watermark.tuples import extract
from benchmarks._util import RESULTS, print_table, write_results

MASTER = b"teacher-benchmark-master-secret0"
ALPHA = 1e-3
LOG10_ALPHA = math.log10(ALPHA)

# 100 varied instruction prompts that ask for long answers (>= 100 new tokens is the point).
PROMPTS: tuple[str, ...] = (
    "Write a detailed, multi-paragraph essay on the history of the bicycle.",
    "Explain in depth how a refrigerator keeps food cold. Use several paragraphs.",
    "Describe a day in the life of a lighthouse keeper in at least four paragraphs.",
    "Write a long story about a dragon who learns to bake bread.",
    "Give a thorough, step-by-step guide to starting a vegetable garden.",
    "Explain the causes and consequences of the French Revolution in detail.",
    "Write a detailed review of an imaginary Italian restaurant, covering food, service and decor.",
    "Describe, step by step and in detail, how an email travels across the internet.",
    "Write a long letter to a friend describing your recent trip to the mountains.",
    "Explain the water cycle to a ten-year-old, with examples, in several paragraphs.",
    "Compare cats and dogs as pets in a detailed essay with pros and cons.",
    "Write an extended short story about a robot who wants to become a painter.",
    "Explain how vaccines train the immune system. Be thorough.",
    "Describe the city of Paris to someone who has never been there, in rich detail.",
    "Give a long, practical guide to saving money on groceries.",
    "Write a detailed biography of an imaginary inventor from the nineteenth century.",
    "Explain how airplanes stay in the air, covering lift, thrust, drag and weight.",
    "Write a long bedtime story about a turtle who travels around the world.",
    "Discuss the advantages and disadvantages of working from home in a detailed essay.",
    "Explain how a bill becomes a law, step by step, in detail.",
    "Write a detailed guide for a beginner who wants to learn to play the guitar.",
    "Describe the life cycle of a butterfly in several detailed paragraphs.",
    "Write a long persuasive essay arguing that cities should have more parks.",
    "Explain how photosynthesis works, with all the main steps, in depth.",
    "Tell a long adventure story about two friends lost in a jungle.",
    "Write a thorough explanation of how credit cards and interest work.",
    "Describe the rules of soccer in detail for someone who has never watched a game.",
    "Write a detailed travel itinerary for a week in Japan, day by day.",
    "Explain the theory of evolution by natural selection in several paragraphs.",
    "Write a long diary entry of a sailor crossing the Atlantic in the 1700s.",
    "Give detailed advice on how to prepare for a job interview.",
    "Explain how the human heart pumps blood, in detail, for a high-school student.",
    "Write a detailed essay on why reading books is important.",
    "Describe how bread is made, from wheat field to bakery, step by step.",
    "Write a long fairy tale about a princess who becomes a blacksmith.",
    "Explain what causes earthquakes and how scientists measure them, in depth.",
    "Write a detailed product description and user guide for an imaginary smart lamp.",
    "Discuss the history of the Roman Empire in a long, detailed essay.",
    "Explain how a computer processor executes instructions, in several paragraphs.",
    "Write a long motivational speech for a graduating class.",
    "Describe the solar system planet by planet, with interesting facts about each.",
    "Give a comprehensive guide to keeping a houseplant healthy.",
    "Write a long mystery story set in a small seaside village.",
    "Explain how the stock market works to a complete beginner, in detail.",
    "Write a detailed essay on the importance of sleep for health.",
    "Describe how to cook a three-course dinner for four people, with recipes.",
    "Explain the difference between weather and climate, with many examples.",
    "Write a long story about a time traveler who visits ancient Egypt.",
    "Write a detailed guide to training for a first marathon.",
    "Explain how electricity gets from a power plant to a home, step by step.",
    "Write a thorough essay about the role of bees in agriculture.",
    "Describe the history of music recording from the phonograph to streaming.",
    "Write a long dialogue between a teacher and a curious student about the stars.",
    "Explain how recycling works and why it matters, in several paragraphs.",
    "Write a detailed plan for organizing a community festival.",
    "Describe the culture and traditions of an imaginary island nation in detail.",
    "Explain how a car engine works, covering each stroke of the cycle.",
    "Write a long letter from a grandparent to a grandchild full of life advice.",
    "Give a detailed overview of the causes of climate change and possible solutions.",
    "Write an extended story about a detective who solves crimes using music.",
    "Explain the basics of nutrition: proteins, fats, carbohydrates and vitamins, in depth.",
    "Describe how to build a simple wooden bookshelf, step by step.",
    "Write a detailed essay about the invention of the printing press and its effects.",
    "Explain how the moon affects tides on Earth, in several paragraphs.",
    "Write a long story about a village that wakes up one day with no colors.",
    "Give a thorough introduction to the game of chess for a beginner.",
    "Explain how search engines find and rank web pages, in detail.",
    "Write a detailed essay about the benefits and risks of social media for teenagers.",
    "Describe a walk through a busy market in Marrakech, using all five senses.",
    "Explain how the immune system fights a common cold, step by step.",
    "Write a long science-fiction story about the first colony on Mars.",
    "Give a detailed guide to writing a good résumé.",
    "Explain how rainbows form, with the physics involved, in depth.",
    "Write a long essay comparing life in a big city and life in the countryside.",
    "Describe the process of making cheese in detail.",
    "Write a detailed history of the Olympic Games.",
    "Explain what a neural network is and how it learns, for a curious beginner.",
    "Write a long story about an old clockmaker and a mysterious clock.",
    "Give detailed instructions for planning a camping trip, including what to pack.",
    "Explain the main ideas of the Renaissance and why it mattered, in several paragraphs.",
    "Write a long speech a mayor might give when opening a new library.",
    "Describe how volcanoes form and erupt, with examples of famous eruptions.",
    "Write a detailed guide to learning a new language as an adult.",
    "Explain how money and banks came to exist, in a long historical overview.",
    "Write a long story about a cat who becomes the captain of a ship.",
    "Describe the steps of the scientific method with a worked example.",
    "Write a detailed essay on the ethics of keeping animals in zoos.",
    "Explain how glass is made and shaped, in depth.",
    "Write a long letter of complaint to a company about a broken washing machine.",
    "Give a thorough explanation of how the human eye sees color.",
    "Write a detailed essay about the history and future of electric cars.",
    "Describe a thunderstorm from the point of view of a farmer, in several paragraphs.",
    "Explain how a library organizes its books, in detail.",
    "Write a long story about a young inventor who builds a flying machine.",
    "Give a detailed guide to making friends in a new city.",
    "Explain how satellites stay in orbit and what they are used for, in depth.",
    "Write a detailed essay about the importance of clean drinking water.",
    "Describe how a newspaper is produced, from the news event to the printed page.",
    "Write a long fable about a fox, a crow and a river, with a moral at the end.",
    "Explain in detail how maps are made and how to read one.",
)
assert len(PROMPTS) == 100


# ---- conditions and keys ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    name: str
    scheme: str | None  # None: no watermark
    params: tuple[tuple[str, float], ...]
    temperature: float
    ident: str  # account the key belongs to

    def key(self, tokenizer_id: str, vocab_size: int) -> WatermarkKey | None:
        if self.scheme is None:
            return None
        return derive_key(
            MASTER,
            "account",
            self.ident,
            1,
            scheme=self.scheme,
            scheme_params=dict(self.params),
            tokenizer=tokenizer_id,
            vocab_size=vocab_size,
        )


CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in (
        Condition("plain@1.0", None, (), 1.0, "-"),
        Condition("kgw-d2@1.0", "kgw", (("gamma", 0.25), ("delta", 2.0), ("window", 2)), 1.0, "acct-kgw-d2"),
        Condition("kgw-d3@1.0", "kgw", (("gamma", 0.25), ("delta", 3.0), ("window", 2)), 1.0, "acct-kgw-d3"),
        Condition("gumbel@1.0", "gumbel", (("window", 4),), 1.0, "acct-gumbel"),
        Condition("plain@0.7", None, (), 0.7, "-"),
        Condition("kgw-d2@0.7", "kgw", (("gamma", 0.25), ("delta", 2.0), ("window", 2)), 0.7, "acct-kgw-d2"),
        Condition("kgw-d3@0.7", "kgw", (("gamma", 0.25), ("delta", 3.0), ("window", 2)), 0.7, "acct-kgw-d3"),
        Condition("gumbel@0.7", "gumbel", (("window", 4),), 0.7, "acct-gumbel"),
    )
}


def other_keys(
    scheme: str, params: dict[str, float], n: int, tokenizer_id: str, vocab: int
) -> list[WatermarkKey]:
    """``n`` keys of other accounts (never used to generate anything here)."""
    return [
        derive_key(
            MASTER,
            "account",
            f"other-{i}",
            1,
            scheme=scheme,
            scheme_params=params,
            tokenizer=tokenizer_id,
            vocab_size=vocab,
        )
        for i in range(n)
    ]


# ---- generation through the backend ----------------------------------------------------------------


class TimedSampler:
    """Wraps any TokenSampler and accumulates the time spent choosing tokens."""

    def __init__(self, inner: TokenSampler) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    def sample(self, context: Sequence[int], logits: np.ndarray, params: SamplingParams) -> int:
        t0 = time.perf_counter()
        token = self.inner.sample(context, logits, params)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return token


class RecordingSampler:
    """Wraps any TokenSampler and records, per generated token, its NLL and the entropy of the
    teacher's own next-token distribution (raw logits = temperature 1): the teacher's perplexity of
    its generations, without a second forward pass."""

    def __init__(self, inner: TokenSampler) -> None:
        self.inner = inner
        self.tokens: list[int] = []
        self.nll: list[float] = []
        self.entropy: list[float] = []

    def sample(self, context: Sequence[int], logits: np.ndarray, params: SamplingParams) -> int:
        token = self.inner.sample(context, logits, params)
        z = np.asarray(logits, dtype=np.float64)
        z = z - z.max()
        log_norm = math.log(float(np.exp(z).sum()))
        logp = z - log_norm
        self.tokens.append(token)
        self.nll.append(-float(logp[token]))
        self.entropy.append(-float(np.dot(np.exp(logp), logp)))
        return token


@dataclass(frozen=True, slots=True)
class Job:
    prompt: str
    key: WatermarkKey | None
    temperature: float
    max_tokens: int
    seed: int
    wrap: str = ""  # "timed" / "record": wrap the sampler (default or watermark) in a Timed/RecordingSampler


@dataclass(slots=True)
class Result:
    job: Job
    completion: Completion
    sampler: TokenSampler | None = None
    prompt_ids: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)  # the response re-tokenized from its text

    @property
    def text(self) -> str:
        return self.completion.choices[0].text


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big")


def build_request(i: int, job: Job) -> tuple[GenerationRequest, TokenSampler | None]:
    """The request of one job; its sampler (n = 1: a sampler is shared by a request's choices)."""
    params = SamplingParams(
        max_tokens=job.max_tokens, temperature=job.temperature, top_p=1.0, n=1, seed=job.seed
    )
    sampler: TokenSampler | None = None
    if job.key is not None:
        sampler = WatermarkSampler.for_key(job.key)
    elif job.wrap:  # the engine's own default sampler for choice 0 (no penalties here)
        sampler = DefaultSampler.for_request(params)
    if sampler is not None and job.wrap == "timed":
        sampler = TimedSampler(sampler)
    elif sampler is not None and job.wrap == "record":
        sampler = RecordingSampler(sampler)
    wm = None
    if sampler is not None:
        kid = job.key.key_id if job.key is not None else "none"
        chash = job.key.config_hash if job.key is not None else "none"
        wm = WatermarkAssignment(sampler=sampler, key_id=kid, config_hash=chash)
    req = GenerationRequest(
        request_id=f"wmt-{i}",
        model="teacher",
        kind="chat",
        params=params,
        messages=(ChatMessage("user", job.prompt),),
        watermark=wm,
    )
    return req, sampler


async def run_jobs(backend: Any, jobs: Sequence[Job], progress: str = "") -> list[Result]:
    """Submit every job at once (the engine batches them) and wait for all; with ``progress``, print
    a line every 10% of the responses."""
    built = [build_request(i, j) for i, j in enumerate(jobs)]
    done = 0
    t0 = time.perf_counter()

    async def one(req: GenerationRequest) -> Completion:
        nonlocal done
        out: Completion = await backend.complete(req)
        done += 1
        if progress and (done == len(built) or done % max(1, len(built) // 10) == 0):
            print(f"{progress}: {done}/{len(built)} responses, {time.perf_counter() - t0:.0f}s", flush=True)
        return out

    completions = await asyncio.gather(*(one(r) for r, _ in built))
    return [Result(j, c, s) for j, c, (_, s) in zip(jobs, completions, built, strict=True)]


def chat_prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The chat-templated prompt ids, exactly as the local backend encodes a chat request."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def retokenize(tokenizer: Any, results: Sequence[Result]) -> None:
    """What an auditor does with text: tokenize it again (no special tokens)."""
    for r in results:
        r.prompt_ids = chat_prompt_ids(tokenizer, r.job.prompt)
        r.ids = list(tokenizer(r.text, add_special_tokens=False)["input_ids"])


# ---- detection ---------------------------------------------------------------------------------------


def scored_prefix(ids: Sequence[int], prompt_ids: Sequence[int], window: int, n: int) -> int | None:
    """Length of the shortest prefix of ``ids`` with exactly ``n`` scored tuples (per-document
    dedup, prompt windows excluded), or None when the whole response has fewer."""
    ts = extract([ids], window, [prompt_ids], dedup="document")
    if ts.n_scored < n:
        return None
    tail = min(window, len(prompt_ids))
    token_pos = int(ts.starts[n - 1]) + window - tail  # index in ``ids`` of the n-th scored token
    return token_pos + 1


def doc_log10_p(ids: Sequence[int], prompt_ids: Sequence[int], key: WatermarkKey) -> tuple[float, int]:
    d = Detector().detect([list(ids)], [key], [list(prompt_ids)], pool=False)
    return d.documents[0].log10_p, d.documents[0].n_scored


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def power_rows(
    cond: Condition, key: WatermarkKey, results: Sequence[Result], levels: Sequence[int]
) -> list[dict[str, Any]]:
    window = key.build_scheme().window
    rows = []
    for n in (*levels, 0):
        lps: list[float] = []
        dropped = 0
        for r in results:
            cut = len(r.ids) if n == 0 else scored_prefix(r.ids, r.prompt_ids, window, n)
            if cut is None:
                dropped += 1
                continue
            lp, n_scored = doc_log10_p(r.ids[:cut], r.prompt_ids, key)
            if n:
                assert n_scored == n, (n_scored, n)
            lps.append(lp)
        hits = sum(lp <= LOG10_ALPHA for lp in lps)
        lo, hi = wilson(hits, len(lps))
        rows.append(
            {
                "condition": cond.name,
                "scored": n if n else "all",
                "docs": len(lps),
                "dropped": dropped,
                "detected": hits,
                "tpr": hits / len(lps) if lps else float("nan"),
                "tpr_ci95": [round(lo, 4), round(hi, 4)],
                "median_log10_p": float(np.median(lps)) if lps else float("nan"),
                "max_log10_p": float(np.max(lps)) if lps else float("nan"),
            }
        )
    return rows


def fpr_row(label: str, results: Sequence[Result], keys: Sequence[WatermarkKey]) -> dict[str, Any]:
    """Every (document, key) pair tested alone at ALPHA (raw per-test p, no Bonferroni)."""
    lps: list[float] = []
    for r in results:
        d = Detector().detect([r.ids], list(keys), [r.prompt_ids], pool=True)
        lps.extend(k.log10_p for k in d.keys)
    arr = np.array(lps)
    fp = int((arr <= LOG10_ALPHA).sum())
    lo, hi = wilson(fp, arr.size)
    return {
        "test": label,
        "docs": len(results),
        "keys": len(keys),
        "tests": int(arr.size),
        "false_positives": fp,
        "fpr": fp / arr.size if arr.size else float("nan"),
        "fpr_ci95_indicative": [round(lo, 6), round(hi, 6)],
        "fpr_at_0.01": float((arr <= -2).mean()) if arr.size else float("nan"),
        "min_log10_p": float(arr.min()) if arr.size else float("nan"),
    }


# ---- quality -------------------------------------------------------------------------------------------


def bootstrap_ratio(
    sums: NDArray[np.float64], counts: NDArray[np.float64], rng: np.random.Generator, n_boot: int = 2000
) -> NDArray[np.float64]:
    """Bootstrap replicates (over documents) of sum(sums) / sum(counts)."""
    idx = rng.integers(0, sums.size, (n_boot, sums.size))
    return np.asarray(sums[idx].sum(axis=1) / counts[idx].sum(axis=1))


def recorded(r: Result) -> tuple[NDArray[np.float64], NDArray[np.float64], list[int]]:
    """(NLLs, entropies, token ids) of the response's content tokens (a final EOS is left out)."""
    rec = r.sampler
    assert isinstance(rec, RecordingSampler), "quality needs jobs run with wrap='record'"
    n = len(rec.tokens) - (1 if r.completion.choices[0].finish_reason == "stop" else 0)
    return np.array(rec.nll[:n]), np.array(rec.entropy[:n]), rec.tokens[:n]


def quality_rows(groups: dict[str, list[Result]]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    boots: dict[str, NDArray[np.float64]] = {}
    means: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    for name, results in groups.items():
        rec = [recorded(r) for r in results]
        sums = np.array([a.sum() for a, _, _ in rec])
        ents = np.array([e.sum() for _, e, _ in rec])
        counts = np.array([a.size for a, _, _ in rec], dtype=np.float64)
        # does the auditor's re-tokenization of the text give back the generated ids?
        same = sum(list(t) == r.ids for (_, _, t), r in zip(rec, results, strict=True))
        mean = means[name] = float(sums.sum() / counts.sum())
        boots[name] = bootstrap_ratio(sums, counts, rng)
        lengths = np.array([r.completion.usage.completion_tokens for r in results])
        cap = results[0].job.max_tokens
        rows.append(
            {
                "condition": name,
                "docs": len(results),
                "tokens": int(counts.sum()),
                "nll": round(mean, 4),
                "ppl": round(math.exp(mean), 3),
                "ppl_ci95": [round(math.exp(float(np.percentile(boots[name], q))), 3) for q in (2.5, 97.5)],
                "entropy": round(float(ents.sum() / counts.sum()), 4),
                "len_mean": round(float(lengths.mean()), 1),
                "len_median": float(np.median(lengths)),
                "at_cap": round(float((lengths >= cap).mean()), 3),
                "retokenized_identical": f"{same}/{len(results)}",
            }
        )
    for row in rows:
        cond = CONDITIONS[row["condition"]]
        base = f"plain@{cond.temperature}"
        if cond.scheme is None or base not in boots:
            continue
        diff = boots[row["condition"]] - boots[base]
        row["d_nll_vs_plain"] = round(means[row["condition"]] - means[base], 4)
        row["d_nll_ci95"] = [round(float(np.percentile(diff, q)), 4) for q in (2.5, 97.5)]
    return rows


# ---- speed ---------------------------------------------------------------------------------------------


async def throughput(
    backend: Any, keys: dict[str, WatermarkKey | None], batch: int, max_tokens: int, rounds: int
) -> list[dict[str, Any]]:
    """Rounds of ``batch`` identical prompts per condition, order ABC CBA ABC ... (drift cancels)."""
    names = list(keys)
    per: dict[str, list[tuple[int, float, float, int]]] = {n: [] for n in names}
    for rnd in range(rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        for name in order:
            jobs = [
                Job(PROMPTS[i], keys[name], 1.0, max_tokens, _seed("tp", rnd, i), wrap="timed")
                for i in range(batch)
            ]
            t0 = time.perf_counter()
            res = await run_jobs(backend, jobs)
            wall = time.perf_counter() - t0
            toks = sum(r.completion.usage.completion_tokens for r in res)
            samp = [r.sampler for r in res if isinstance(r.sampler, TimedSampler)]
            per[name].append((toks, wall, sum(s.seconds for s in samp), sum(s.calls for s in samp)))
    base = sum(t for t, *_ in per[names[0]]) / sum(w for _, w, *_ in per[names[0]])
    rows = []
    for name in names:
        toks = sum(t for t, *_ in per[name])
        wall = sum(w for _, w, *_ in per[name])
        s_sec = sum(s for *_, s, _ in per[name])
        calls = sum(c for *_, c in per[name])
        rows.append(
            {
                "sampler": name,
                "rounds": rounds,
                "tokens": toks,
                "wall_s": round(wall, 2),
                "tokens_per_s": round(toks / wall, 2),
                "vs_plain": round((toks / wall) / base, 3),
                "sampler_ms_per_token": round(1000 * s_sec / max(1, calls), 3),
                "per_round_tokens_per_s": [round(t / w, 2) for t, w, *_ in per[name]],
            }
        )
    return rows


# ---- main ----------------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    from antidistill.backends.local import LocalBackend
    from antidistill.backends.model_loading import load_model
    from antidistill.settings import LocalBackendSettings
    from antidistill.watermark.keystore import tokenizer_fingerprint

    t_start = time.perf_counter()
    settings = LocalBackendSettings(max_batch_size=args.batch, torch_threads=args.threads)
    loaded = load_model(settings)
    model, tok = loaded.model, loaded.tokenizer
    vocab = int(model.config.vocab_size)
    tok_id = tokenizer_fingerprint(tok)
    conds = [CONDITIONS[c] for c in args.conditions]
    keys = {c.name: c.key(tok_id, vocab) for c in conds}

    jobs: list[tuple[str, Job]] = []
    for c in conds:
        n = args.n_docs if c.temperature == 1.0 else args.n_docs_low_temp
        for i in range(n):
            jobs.append(
                (
                    c.name,
                    Job(
                        PROMPTS[i % len(PROMPTS)],
                        keys[c.name],
                        c.temperature,
                        args.max_tokens,
                        _seed(c.name, i),
                        wrap="record",
                    ),
                )
            )
    # interleave the conditions in submission order: every batch mixes them (drift hits all alike)
    jobs.sort(key=lambda nj: (PROMPTS.index(nj[1].prompt), nj[0]))

    backend = LocalBackend(settings, "teacher", model=model, tokenizer=tok, max_pending=len(jobs) + 64)
    await backend.start()
    try:
        t0 = time.perf_counter()
        results = await run_jobs(backend, [j for _, j in jobs], progress="generation")
        gen_s = time.perf_counter() - t0
        tp_keys: dict[str, WatermarkKey | None] = {"none (default sampler)": None}
        for name in ("kgw-d2@1.0", "gumbel@1.0"):
            c = CONDITIONS[name]
            tp_keys[f"{c.scheme} {dict(c.params)}"] = c.key(tok_id, vocab)
        t1 = time.perf_counter()
        tp = (
            await throughput(backend, tp_keys, args.batch, args.tp_max_tokens, args.tp_rounds)
            if args.tp_rounds
            else []
        )
        tp_s = time.perf_counter() - t1
    finally:
        await backend.aclose()

    t_analysis = time.perf_counter()
    retokenize(tok, results)
    groups: dict[str, list[Result]] = {c.name: [] for c in conds}
    for (name, _), r in zip(jobs, results, strict=True):
        groups[name].append(r)
    gen_tokens = sum(r.completion.usage.completion_tokens for r in results)

    power: list[dict[str, Any]] = []
    for c in conds:
        key = keys[c.name]
        if key is not None:
            power += power_rows(c, key, groups[c.name], args.levels)

    fpr: list[dict[str, Any]] = []
    real_keys = [k for k in keys.values() if k is not None]
    uniq = list({k.key_id: k for k in real_keys}.values())
    plain = [r for c in conds if c.scheme is None for r in groups[c.name]]
    if plain and uniq:
        fpr.append(fpr_row("plain responses vs the real keys", plain, uniq))
    kgw_params = {"gamma": 0.25, "delta": 2.0, "window": 2}
    others = {
        "kgw": other_keys("kgw", kgw_params, args.fpr_keys, tok_id, vocab),
        "gumbel": other_keys("gumbel", {"window": 4}, args.fpr_keys, tok_id, vocab),
    }
    if plain:
        for scheme, ks in others.items():
            fpr.append(fpr_row(f"plain responses vs {len(ks)} other {scheme} keys", plain, ks))
    for c in conds:
        if c.scheme is not None:
            fpr.append(
                fpr_row(
                    f"{c.name} responses vs {args.fpr_keys} other {c.scheme} keys (false attribution)",
                    groups[c.name],
                    others[c.scheme],
                )
            )
    # pooled: all plain responses as one suspect corpus, one test per real key (Bonferroni over them)
    pooled = None
    if plain and uniq:
        d = Detector().detect([r.ids for r in plain], uniq, [r.prompt_ids for r in plain], pool=True)
        pooled = {
            "docs": len(plain),
            "n_scored": d.n_scored,
            "log10_p_adj": round(d.log10_p_adj, 3),
            "explanation": d.explanation,
        }

    quality = quality_rows(groups)
    analysis_s = time.perf_counter() - t_analysis
    total_s = time.perf_counter() - t_start

    data = {
        "model": loaded.source,
        "args": vars(args),
        "alpha": ALPHA,
        "load_average_1m_end": os.getloadavg()[0],
        "generation": {
            "responses": len(results),
            "completion_tokens": gen_tokens,
            "wall_s": round(gen_s, 1),
            "tokens_per_s": round(gen_tokens / gen_s, 2),
        },
        "keys": {name: (k.record() | {"key_id": k.key_id}) if k else None for name, k in keys.items()},
        "power": power,
        "fpr": fpr,
        "pooled_plain": pooled,
        "quality": quality,
        "throughput": tp,
        "throughput_wall_s": round(tp_s, 1),
        "analysis_wall_s": round(analysis_s, 1),
        "total_wall_s": round(total_s, 1),
        "samples": {name: rs[0].text[:400] for name, rs in groups.items() if rs},
    }
    path = write_results("watermark_teacher", data)
    texts = [{"prompt": r.job.prompt, "temperature": r.job.temperature, "text": r.text} for r in plain]
    (RESULTS / "watermark_teacher_plain_texts.json").write_text(
        json.dumps({"model": loaded.source, "texts": texts}, indent=1) + "\n"
    )

    print(
        f"generated {gen_tokens} tokens in {gen_s:.0f}s ({gen_tokens / gen_s:.1f} tok/s); "
        f"total {total_s:.0f}s\n"
    )
    print("TPR at p <= 1e-3 (N scored tuples; 'all' = whole response)")
    print_table(
        power,
        [
            "condition",
            "scored",
            "docs",
            "dropped",
            "detected",
            "tpr",
            "tpr_ci95",
            "median_log10_p",
            "max_log10_p",
        ],
    )
    print("\nFalse positives at 1e-3 (each (document, key) pair a separate test)")
    print_table(fpr, ["test", "tests", "false_positives", "fpr", "fpr_ci95_indicative", "min_log10_p"])
    if pooled:
        print(f"pooled plain corpus vs the real keys: log10 p_adj = {pooled['log10_p_adj']}")
    print(
        "\nQuality under the teacher (PPL of the responses; d_nll vs unwatermarked at the same temperature)"
    )
    print_table(
        quality,
        [
            "condition",
            "docs",
            "tokens",
            "ppl",
            "ppl_ci95",
            "d_nll_vs_plain",
            "d_nll_ci95",
            "entropy",
            "len_mean",
            "at_cap",
        ],
    )
    if tp:
        print("\nThroughput (interleaved rounds, same prompts and batch)")
        print_table(
            tp,
            [
                "sampler",
                "tokens",
                "wall_s",
                "tokens_per_s",
                "vs_plain",
                "sampler_ms_per_token",
                "per_round_tokens_per_s",
            ],
        )
    print(f"\nresults in {path}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--n-docs", type=int, default=8, help="responses per condition at temperature 1.0")
    p.add_argument(
        "--n-docs-low-temp", type=int, default=4, help="responses per condition at temperature 0.7"
    )
    p.add_argument("--max-tokens", type=int, default=450)
    p.add_argument("--levels", type=int, nargs="+", default=[100, 200, 400], help="scored tuples per test")
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    p.add_argument("--fpr-keys", type=int, default=500, help="other account keys per scheme for the FPR")
    p.add_argument("--batch", type=int, default=16, help="engine max_batch_size")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)"
    )
    p.add_argument("--tp-rounds", type=int, default=2, help="throughput rounds per sampler (0: skip)")
    p.add_argument("--tp-max-tokens", type=int, default=48)
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
