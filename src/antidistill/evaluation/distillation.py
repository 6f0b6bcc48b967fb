"""End-to-end distillation experiment: harvest the watermarked teacher, train students, audit them.

1. The embedded teacher (SmolLM2-135M-Instruct) runs behind the gateway (in-process app, local
   backend, watermarking on: every answer is marked with its account's Gumbel key). The store holds
   the harvesting account(s), a few benign accounts and ``n_decoys`` decoy accounts, each with a
   recorded key, so naming the harvester is a test among more than ``n_decoys`` account keys.
2. The attacker harvests ``n_harvest`` prompts (offline corpora) through the OpenAI API from
   ``harvest_accounts`` accounts (round robin); benign accounts send a few requests too.
3. The same prompts go to a second gateway with watermarking off (same teacher, its own store): the
   control answers, i.e. what the distiller would have got from an unmarked copy of the teacher.
4. Students (``evaluation.student``) are trained on the harvested pairs and, identically, on the
   control pairs; in the full run also on fewer harvested examples and on mixes where the harvested
   (marked) answers are only a share of the training set (the rest: control answers to other prompts).
5. Each student is audited with the open-weights reading mode (``forensics.reading``: it reads the
   answers in our event log that its scenario harvested, plus the benign accounts' answers) and the
   API mode (``forensics.radioactivity``: it answers the harvested prompts, as an auditor would query
   it, and its answers are scored). Every recorded key is tested (Bonferroni); accounts are named
   over all account keys.
6. Nulls: the untouched teacher and a random tiny model read the same texts; and the reading / API
   tests of both main students are repeated with ``null_runs`` fresh master secrets (keys unrelated to
   the text), which counts false verdicts at ``alpha`` and checks that per-key p-values are uniform.

Writes ``DIR/results.json`` (and keeps the students, caches and stores under ``DIR/work``).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from antidistill.evaluation.distillation_audit import audit_student, make_auditor, null_runs
from antidistill.evaluation.distillation_world import (  # FULL, QUICK: the configurations callers run
    FULL,
    QUICK,
    RESULTS_VERSION,
    DistillationConfig,
    World,
    build_world,
)
from antidistill.evaluation.student import TrainStats, train_student

__all__ = ["FULL", "QUICK", "DistillationConfig", "run_distillation"]


# ---- the whole experiment ---------------------------------------------------------------------------
def _train(
    world: World, pairs: Sequence[tuple[str, str]], cfg: DistillationConfig, name: str
) -> tuple[Path, TrainStats]:
    out = world.root / "students" / name
    scfg = replace(cfg.student, threads=cfg.threads, seed=cfg.seed)
    done = out / "antidistill-train.json"  # a student trained with the same config and data is reused
    fingerprint = json.loads(
        json.dumps({"config": asdict(scfg), "pairs": len(pairs), "data": _digest(pairs)})
    )
    if done.is_file():
        saved = json.loads(done.read_text())
        if saved.get("fingerprint") == fingerprint:
            return out, TrainStats(**saved["stats"])
    teacher = world.teacher if scfg.kind == "lora" else None
    stats = train_student(
        pairs,
        world.tokenizer,
        world.vocab_size,
        scfg,
        out,
        teacher=teacher,
        progress=cfg.progress,
        desc=f"training {name}",
    )
    done.write_text(json.dumps({"fingerprint": fingerprint, "stats": stats.as_dict()}))
    return out, stats


def _digest(pairs: Sequence[tuple[str, str]]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(list(pairs)).encode()).hexdigest()[:16]


def _random_model(world: World, root: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(12345)
    out = root / "students" / "random-tiny"
    eos = world.tokenizer.eos_token_id
    GPT2LMHeadModel(
        GPT2Config(
            vocab_size=world.vocab_size,
            n_positions=512,
            n_embd=64,
            n_layer=2,
            n_head=2,
            eos_token_id=eos,
            bos_token_id=eos,
        )
    ).save_pretrained(out)
    world.tokenizer.save_pretrained(out)
    return out


def run_distillation(
    cfg: DistillationConfig, out_dir: Path, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the whole experiment and write ``out_dir/results.json``; returns the results."""
    import torch

    say = log or (lambda msg: print(msg, file=sys.stderr))
    torch.set_num_threads(cfg.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir.mkdir(parents=True, exist_ok=True)
    root = out_dir / "work"
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    world = build_world(cfg, root, say)
    timings["harvest_and_control_s"] = round(time.perf_counter() - t0, 1)
    aud = make_auditor(world, cfg)
    harvest_prompts = [p for p, _ in world.harvest.pairs]
    results: dict[str, Any] = {
        "version": RESULTS_VERSION,
        "variant": cfg.variant,
        "config": _config_json(cfg),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch_threads": cfg.threads,
        },
        "teacher": "SmolLM2-135M-Instruct (embedded GGUF) behind the gateway, Gumbel watermark per account",
        "harvest": {
            "examples": len(world.harvest.pairs),
            "accounts": world.harvest.accounts,
            "completion_tokens": world.harvest.completion_tokens,
            "seconds": round(world.harvest.seconds, 1),
        },
        "control_answers": {
            "examples": len(world.control.pairs),
            "completion_tokens": world.control.completion_tokens,
        },
        "n_account_keys": len(aud.account_keys),
        "n_keys": len(aud.keys),
        "event_log_texts_read": len(aud.docs),
    }
    harvester_names = set(world.harvesters)

    def named(acc: list[str]) -> bool:
        return bool(acc) and set(acc) <= harvester_names

    # the two main students
    t0 = time.perf_counter()
    wm_dir, wm_stats = _train(world, world.harvest.pairs, cfg, "watermarked")
    ctl_dir, ctl_stats = _train(world, world.control.pairs, cfg, "control")
    timings["train_main_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    wm, wm_docs, wm_answers = audit_student(wm_dir, aud, harvest_prompts, "watermarked-student")
    ctl, ctl_docs, ctl_answers = audit_student(ctl_dir, aud, harvest_prompts, "control-student")
    timings["audit_main_s"] = round(time.perf_counter() - t0, 1)
    results["watermarked_student"] = {
        **wm,
        "harvester_named": named(wm["accounts"]),
        "train": wm_stats.as_dict(),
    }
    results["control_student"] = {**ctl, "train": ctl_stats.as_dict()}
    say(f"watermarked student: log10 p = {wm['log10_p']:.1f}, accounts {wm['accounts']}")
    say(f"control student: log10 p = {ctl['log10_p']:.2f}, accounts {ctl['accounts']}")

    # untouched models read the same texts (null)
    t0 = time.perf_counter()
    teacher_read, _, _ = audit_student(
        wm_dir,
        aud,
        harvest_prompts,
        "untouched-teacher",
        model=world.teacher,
        tokenizer=world.tokenizer,
        api=False,
    )
    rnd, _, _ = audit_student(_random_model(world, root), aud, harvest_prompts, "random-tiny", api=False)
    results["untouched_teacher"] = teacher_read
    results["random_model"] = rnd
    timings["untouched_s"] = round(time.perf_counter() - t0, 1)

    # repeated runs with fresh keys
    t0 = time.perf_counter()
    results["null_runs"] = {
        "control_student": null_runs(ctl_docs, ctl_answers, aud, cfg.null_runs, cfg.seed + 1),
        "watermarked_student_unrelated_keys": null_runs(
            wm_docs, wm_answers, aud, cfg.null_runs, cfg.seed + 2
        ),
    }
    timings["null_runs_s"] = round(time.perf_counter() - t0, 1)

    # full run: p vs harvested examples and vs share of marked data
    if cfg.sizes:
        rows = []
        for n in cfg.sizes:
            pairs = world.harvest.pairs[:n]
            d, st = _train(world, pairs, cfg, f"examples-{n}")
            r, _, _ = audit_student(d, aud, [p for p, _ in pairs], f"examples-{n}")
            rows.append({"examples": n, **_row(r, named), "train": st.as_dict()})
            say(f"{n} harvested examples: log10 p = {r['log10_p']:.1f}")
        rows.append({"examples": len(world.harvest.pairs), **_row(wm, named), "train": wm_stats.as_dict()})
        results["vs_examples"] = rows
    if cfg.shares:
        rows = [{"share": 1.0, "marked_examples": len(world.harvest.pairs), **_row(wm, named)}]
        total = len(world.harvest.pairs)
        for s in cfg.shares:
            k = max(1, round(s * total))
            marked = world.harvest.pairs[:k]
            filler = world.control.pairs[k:]  # unmarked answers to the other prompts
            d, st = _train(world, marked + filler, cfg, f"share-{s:g}")
            r, _, _ = audit_student(d, aud, [p for p, _ in marked], f"share-{s:g}")
            rows.append(
                {
                    "share": s,
                    "marked_examples": k,
                    "total_examples": len(marked) + len(filler),
                    **_row(r, named),
                    "train": st.as_dict(),
                }
            )
            say(f"share {s:g} ({k} marked of {total}): log10 p = {r['log10_p']:.1f}")
        results["vs_share"] = rows
    timings["total_s"] = round(time.perf_counter() - t_start, 1)
    results["timings"] = timings
    aud.store.close()
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False, default=str) + "\n")
    return results


def _row(r: dict[str, Any], named: Callable[[list[str]], bool]) -> dict[str, Any]:
    return {
        "p_value": r["p_value"],
        "log10_p": r["log10_p"],
        "reading_log10_p": r["reading"]["log10_p"],
        "reading_n_scored": r["reading"]["n_scored"],
        "api_log10_p": (r.get("api") or {}).get("log10_p"),
        "api_suspect_generated_tokens": (r.get("api") or {}).get("suspect_generated_tokens"),
        "accounts": r["accounts"],
        "harvester_named": named(r["accounts"]),
    }


def _config_json(cfg: DistillationConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d.pop("progress", None)
    return d
