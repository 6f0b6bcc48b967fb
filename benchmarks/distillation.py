"""End-to-end distillation experiment (issue 6): harvest the watermarked teacher through the gateway,
train students on CPU, audit them (reading mode + API mode), with a control student and nulls.

    .venv/bin/python benchmarks/distillation.py [--quick] [--n-harvest N] [--out DIR]

Same code as ``antidistill eval distillation`` (``antidistill.evaluation.distillation``); this script
also copies ``results.json`` to ``benchmarks/results/distillation/<variant>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from antidistill.evaluation.distillation import FULL, QUICK, run_distillation
from benchmarks._util import RESULTS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the small variant")
    ap.add_argument("--n-harvest", type=int, help="prompts harvested")
    ap.add_argument("--epochs", type=int, help="student epochs")
    ap.add_argument("--null-runs", type=int, help="fresh-key repetitions of the null")
    ap.add_argument("--sizes", help="comma-separated harvested-example counts for p vs n ('' for none)")
    ap.add_argument("--shares", help="comma-separated shares of marked data ('' for none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/antidistill-distillation"))
    ap.add_argument("--name", help="results file name [default: the variant]")
    args = ap.parse_args()
    cfg = QUICK if args.quick else FULL
    over: dict[str, object] = {"threads": args.threads, "seed": args.seed}
    if args.n_harvest:
        over["n_harvest"] = args.n_harvest
        over["sizes"] = tuple(n for n in cfg.sizes if n < args.n_harvest)
    if args.sizes is not None:
        over["sizes"] = tuple(int(x) for x in args.sizes.split(",") if x.strip())
    if args.shares is not None:
        over["shares"] = tuple(float(x) for x in args.shares.split(",") if x.strip())
    if args.epochs:
        over["student"] = replace(cfg.student, epochs=args.epochs)
    if args.null_runs:
        over["null_runs"] = args.null_runs
    cfg = replace(cfg, **over)  # type: ignore[arg-type]
    t0 = time.time()
    results = run_distillation(cfg, args.out)
    target = RESULTS / "distillation" / f"{args.name or cfg.variant}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.out / "results.json", target)
    wm, ctl = results["watermarked_student"], results["control_student"]
    print(
        json.dumps(
            {
                "results": str(target),
                "watermarked_log10_p": wm["log10_p"],
                "accounts": wm["accounts"],
                "control_log10_p": ctl["log10_p"],
                "minutes": round((time.time() - t0) / 60, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
