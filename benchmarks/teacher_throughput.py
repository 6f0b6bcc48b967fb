"""Teacher throughput: generated tokens/s of the embedded SmolLM2 backend at 1 and 8 concurrent requests.

    .venv/bin/python benchmarks/teacher_throughput.py [--max-tokens 64] [--concurrency 1 8] [--threads 2]

The same 8 chat prompts are answered greedily (so every level generates the same tokens) with
``max_tokens`` each: at concurrency c, c requests run at a time through ``LocalBackend`` (continuous
batching in one engine thread). Also measures plain ``model.generate`` on one prompt as a reference.
Writes benchmarks/results/teacher_throughput.json and prints a table. The machine's load average is
recorded: other processes on a small machine change these numbers a lot.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks._util import percentile, print_table, write_results

PROMPTS = [
    "What is the capital of France?",
    "Explain photosynthesis in two sentences.",
    "Write a haiku about the sea.",
    "List three uses of a paperclip.",
    "Why is the sky blue?",
    "Give me a tip for learning Python.",
    "What does a compiler do?",
    "Describe a cat to someone who has never seen one.",
]


def _request(i: int, max_tokens: int) -> Any:
    from antidistill.backends.base import ChatMessage, GenerationRequest, SamplingParams

    return GenerationRequest(
        request_id=f"bench-{i}",
        model="teacher",
        kind="chat",
        params=SamplingParams(max_tokens=max_tokens, temperature=0.0),
        messages=(ChatMessage("user", PROMPTS[i % len(PROMPTS)]),),
    )


async def _one(backend: Any, req: Any) -> tuple[int, float, float]:
    """(completion tokens, time to first text, total latency) of one streamed request."""
    t0 = time.perf_counter()
    first = None
    tokens = 0
    async for chunk in backend.stream(req):
        if first is None and chunk.text:
            first = time.perf_counter() - t0
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    total = time.perf_counter() - t0
    return tokens, first if first is not None else total, total


async def _level(backend: Any, concurrency: int, max_tokens: int) -> dict[str, Any]:
    sem = asyncio.Semaphore(concurrency)

    async def gated(i: int) -> tuple[int, float, float]:
        async with sem:
            return await _one(backend, _request(i, max_tokens))

    engine = backend.engine
    engine.batch_sizes.clear()
    t0 = time.perf_counter()
    results = await asyncio.gather(*(gated(i) for i in range(len(PROMPTS))))
    wall = time.perf_counter() - t0
    tokens = sum(r[0] for r in results)
    steps = list(engine.batch_sizes)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "completion_tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "ttft_p50_s": round(percentile([r[1] for r in results], 50), 3),
        "latency_p50_s": round(percentile([r[2] for r in results], 50), 3),
        "mean_batch_rows": round(sum(steps) / len(steps), 2) if steps else 0.0,
    }


def _hf_generate_reference(model: Any, tokenizer: Any, max_tokens: int) -> dict[str, Any]:
    import torch

    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPTS[0]}], tokenize=False, add_generation_prompt=True
    )
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model.generate(
            ids, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False, pad_token_id=2
        )
        wall = time.perf_counter() - t0
    n = int(out.shape[1] - ids.shape[1])
    return {"concurrency": "hf.generate", "requests": 1, "completion_tokens": n, "wall_s": round(wall, 3),
            "tokens_per_s": round(n / wall, 2)}  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    from antidistill.backends.local import LocalBackend
    from antidistill.backends.model_loading import load_model
    from antidistill.settings import LocalBackendSettings

    settings = LocalBackendSettings(max_batch_size=max(args.concurrency), torch_threads=args.threads)
    t0 = time.perf_counter()
    loaded = load_model(settings)
    load_s = time.perf_counter() - t0
    backend = LocalBackend(settings, "teacher", model=loaded.model, tokenizer=loaded.tokenizer)
    await backend.start()
    try:
        await _one(backend, _request(0, 8))  # warm-up
        rows = [await _level(backend, c, args.max_tokens) for c in args.concurrency]
    finally:
        await backend.aclose()
    rows.append(_hf_generate_reference(loaded.model, loaded.tokenizer, args.max_tokens))
    data = {
        "model": loaded.source,
        "loaded_from_cache": loaded.from_cache,
        "load_s": round(load_s, 2),
        "max_tokens": args.max_tokens,
        "torch_threads": args.threads,
        "load_average_1m": os.getloadavg()[0],
        "levels": rows,
    }
    path = write_results("teacher_throughput", data)
    print_table(rows, ["concurrency", "requests", "completion_tokens", "wall_s", "tokens_per_s", "ttft_p50_s",
                       "latency_p50_s", "mean_batch_rows"])  # fmt: skip
    print(f"model load {load_s:.1f}s (cache: {loaded.from_cache}); results in {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
