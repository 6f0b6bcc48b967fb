"""Side by side with the peer toolkit markllm 0.1.5: KGW detection on the same unwatermarked tokens.

    scripts/setup_markllm.sh                       # once: .venv-markllm/ with markllm 0.1.5, CPU torch
    .venv/bin/python benchmarks/markllm_compare.py [--keys 25] [--our-keys 1000] [--tokens 200]

Corpora (SmolLM2-tokenized, nothing in them is watermarked with any key used here):
* repetitive: 20 everyday sentences / list items / code lines, each repeated to ``--tokens`` tokens;
* natural: the unwatermarked teacher responses saved by benchmarks/watermark_teacher.py
  (benchmarks/results/watermark_teacher_plain_texts.json) plus a few hand-written paragraphs,
  cut to ``--tokens`` tokens.

markllm runs in its own venv (subprocess, JSON in / out) with its public API: ``KGW(config,
TransformersConfig(...)).detect_watermark(text)`` -> ``{"is_watermarked": z > z_threshold, "score":
z}``. Its KGW detector scores every token after the prefix, with no deduplication, and reports a
one-proportion z-score (normal approximation; it gives no p-value). Two configurations, each with
``--keys`` different ``hash_key`` values: markllm's shipped default (gamma 0.5, prefix 1, z > 4) and
one matching our canary (gamma 0.25, prefix 2, z > 4). Ours: ``Detector`` (exact binomial tail,
(window, token) tuples deduplicated) with the same gamma / window, ``--our-keys`` account keys; also
ours with dedup switched off, to show where the difference comes from.

Each (text, key) pair is one test of an honest (unwatermarked) text: its false-positive rate is
compared at markllm's own threshold (z > 4, nominally p = 3.2e-5 one-sided) and at p <= 1e-3
(z > 3.09 for markllm's normal approximation). Detection time per text is measured on the same
tokens. If .venv-markllm is missing, the markllm columns are computed with a clearly labelled
"markllm-equivalent statistic" (same z-score, our PRF) instead.

Writes benchmarks/results/markllm_compare.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MARKLLM_PY = ROOT / ".venv-markllm" / "bin" / "python"
PLAIN_TEXTS = ROOT / "benchmarks" / "results" / "watermark_teacher_plain_texts.json"
MASTER = b"markllm-compare-master-secret-00"
Z_THRESHOLD = 4.0  # markllm's shipped KGW threshold
# (label, gamma, markllm prefix_length == our window)
CONFIGS: tuple[tuple[str, float, int], ...] = (
    ("markllm default: gamma 0.5, prefix/window 1", 0.5, 1),
    ("canary: gamma 0.25, prefix/window 2", 0.25, 2),
)

REPEATED = (
    "The cat sat on the mat and looked out of the window. ",
    "Thank you for your message, I will get back to you soon. ",
    "- Buy milk\n",
    "I am sorry, but I cannot help with that request. ",
    "for i in range(10):\n    print(i)\n",
    "Yes. ",
    "The quick brown fox jumps over the lazy dog. ",
    "Step 1: Open the box. Step 2: Remove the device. ",
    "| Name | Value |\n",
    "Please let me know if you have any other questions. ",
    "It was a dark and stormy night. ",
    "1, 2, 3, 4, 5, ",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ",
    "The answer is 42. ",
    "Hello world! ",
    "Water boils at one hundred degrees Celsius at sea level. ",
    '{"id": 1, "name": "test"},\n',
    "Remember to drink water and get enough sleep every day. ",
    "ha ",
    "The meeting is at 3 pm in room B. ",
)

NATURAL = (
    "Bread has been baked for thousands of years. Early bakers mixed crushed grain with water and "
    "cooked the paste on hot stones; later, someone noticed that dough left out for a day rose and "
    "tasted better. That accident, wild yeast at work, is the ancestor of every sourdough loaf sold "
    "today. Modern bakeries use cultivated yeast for speed, but many still keep a starter alive for "
    "flavour, feeding it flour and water every morning like a pet.",
    "The library opens at nine, but the regulars arrive earlier. An old man with a thermos waits by "
    "the door with yesterday's crossword, two students compare notes on a bench, and a mother tries "
    "to keep a toddler from climbing the bike rack. When the doors finally slide open, everyone "
    "heads somewhere different: newspapers, computers, the children's corner, the quiet room upstairs.",
    "To repot a houseplant, choose a pot one size larger with a drainage hole. Water the plant a day "
    "before so the root ball holds together. Tip the old pot, ease the plant out, and loosen circling "
    "roots with your fingers. Set it at the same depth in fresh potting mix, fill the sides, firm "
    "gently and water until it drains. Keep it out of direct sun for a week while it settles.",
    "Tides are caused mainly by the moon's gravity pulling on the oceans. The water on the side of "
    "the Earth facing the moon is pulled a little more than the planet's centre, and the water on the "
    "far side a little less, so two bulges form. As the Earth turns, a coast passes through both "
    "bulges each day, which is why most places see two high tides and two low tides.",
    "Our team met on Tuesday to review the quarter. Sales grew in the north but fell slightly in the "
    "south, mostly because a large client postponed an order. Marketing will test two new campaigns "
    "next month, and support asked for another person to handle the growing number of tickets. We "
    "agreed to revisit the budget in three weeks, once the postponed order is confirmed or cancelled.",
    "Chess looks simple at first: sixteen pieces each, sixty-four squares, a handful of rules. Yet "
    "the number of possible games is larger than the number of atoms in the observable universe. "
    "Beginners are often told to control the centre, develop knights and bishops early, castle to "
    "protect the king, and avoid moving the same piece twice in the opening without a good reason.",
)


# ---- markllm worker (runs inside .venv-markllm; stdlib + torch + markllm only) ---------------------


def worker(inp: Path, out: Path) -> None:
    import torch
    from markllm.utils.transformers_config import TransformersConfig
    from markllm.watermark.kgw.kgw import KGW
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    job = json.loads(inp.read_text())
    tok = AutoTokenizer.from_pretrained(job["tokenizer_dir"])
    tc = TransformersConfig(model=None, tokenizer=tok, vocab_size=job["vocab_size"], device="cpu")
    mismatched = sum(
        tok(t, add_special_tokens=False)["input_ids"] != ids
        for t, ids in zip(job["texts"], job["ids"], strict=True)
    )
    results: dict[str, Any] = {"tokenization_mismatches": mismatched, "configs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in job["configs"]:
            z: list[list[float]] = []  # [key][text]
            flagged: list[list[bool]] = []
            seconds = 0.0
            for hash_key in job["hash_keys"]:
                path = Path(tmp) / f"kgw-{hash_key}.json"
                path.write_text(
                    json.dumps(
                        {
                            "algorithm_name": "KGW",
                            "gamma": cfg["gamma"],
                            "delta": 2.0,
                            "hash_key": hash_key,
                            "prefix_length": cfg["window"],
                            "z_threshold": job["z_threshold"],
                            "f_scheme": "time",
                            "window_scheme": "left",
                        }
                    )
                )
                wm = KGW(algorithm_config=str(path), transformers_config=tc)
                row_z, row_f = [], []
                for text in job["texts"]:
                    t0 = time.perf_counter()
                    res = wm.detect_watermark(text)
                    seconds += time.perf_counter() - t0
                    row_z.append(float(res["score"]))
                    row_f.append(bool(res["is_watermarked"]))
                z.append(row_z)
                flagged.append(row_f)
            results["configs"].append(
                {"label": cfg["label"], "z": z, "flagged": flagged, "detect_seconds": seconds}
            )
    out.write_text(json.dumps(results))


# ---- main side (project venv) --------------------------------------------------------------------


def _hash_keys(n: int) -> list[int]:
    """markllm seeds with (hash_key * f) % vocab_size: keys must be coprime to 49152 = 2^14 * 3."""
    keys: list[int] = []
    k = 15485863  # markllm's default key first
    while len(keys) < n:
        if k % 2 and k % 3:
            keys.append(k)
        k += 7919 * 2
    return keys


def _markllm_equivalent(ids: list[list[int]], gamma: float, window: int, n_keys: int) -> dict[str, Any]:
    """markllm's statistic (every token after the prefix, no dedup, one-proportion z), our PRF."""
    import numpy as np

    from antidistill.watermark import derive_key

    z = np.zeros((n_keys, len(ids)))
    t0 = time.perf_counter()
    for k in range(n_keys):
        key = derive_key(
            MASTER, "account", f"eq-{k}", 1, scheme="kgw", scheme_params={"gamma": gamma, "window": window}
        )
        scheme = key.build_scheme()
        for j, doc in enumerate(ids):
            s = scheme.score(np.asarray(doc), key)
            s = s[~np.isnan(s)]
            z[k, j] = (s.sum() - gamma * s.size) / math.sqrt(s.size * gamma * (1 - gamma))
    return {
        "z": z.tolist(),
        "flagged": (z > Z_THRESHOLD).tolist(),
        "detect_seconds": time.perf_counter() - t0,
    }


def _ours(ids: list[list[int]], gamma: float, window: int, n_keys: int, dedup: bool) -> tuple[Any, float]:
    """(log10 p [key, text], seconds per text for one key) with our detector."""
    import numpy as np

    from antidistill.watermark import Detector, derive_key

    keys = [
        derive_key(
            MASTER, "account", f"acct-{k}", 1, scheme="kgw", scheme_params={"gamma": gamma, "window": window}
        )
        for k in range(n_keys)
    ]
    det = Detector(dedup=dedup)
    lp = np.array([[r.log10_p for r in det.detect(ids, [k], None, pool=False).documents] for k in keys])
    # timing: one key, one text at a time (what markllm's detect_watermark does)
    t0 = time.perf_counter()
    reps = 0
    for k in keys[: min(5, n_keys)]:
        for doc in ids:
            det.detect([doc], [k], None, pool=False)
            reps += 1
    return lp, (time.perf_counter() - t0) / reps


def _rate(mask: Any) -> dict[str, Any]:
    import numpy as np
    from scipy import stats

    m = np.asarray(mask, dtype=bool)
    k, n = int(m.sum()), int(m.size)
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson") if n else None
    return {
        "hits": k,
        "tests": n,
        "rate": k / n if n else float("nan"),
        "ci95": [round(float(ci.low), 4), round(float(ci.high), 4)] if ci else None,
    }


def main(args: argparse.Namespace) -> None:
    import numpy as np
    from scipy import stats

    from antidistill.backends.model_loading import load_model
    from antidistill.settings import LocalBackendSettings
    from benchmarks._util import print_table, write_results

    tok = load_model(LocalBackendSettings()).tokenizer
    vocab = len(tok)

    def cut(text: str) -> str | None:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) < args.tokens:
            return None
        # decode the first N tokens; keep the text only if it re-tokenizes to the same N ids
        t = tok.decode(ids[: args.tokens], clean_up_tokenization_spaces=False)
        return t if tok(t, add_special_tokens=False)["input_ids"] == ids[: args.tokens] else None

    rep_texts = [cut(p * (4 * args.tokens)) for p in REPEATED]
    natural_src = list(NATURAL)
    if PLAIN_TEXTS.exists():
        natural_src = [t["text"] for t in json.loads(PLAIN_TEXTS.read_text())["texts"]] + natural_src
    nat_texts = [cut(t) for t in natural_src]
    nat_texts += [cut(" ".join(NATURAL))]  # the hand-written paragraphs are short: one long mix too
    corpora = {
        "repetitive": [t for t in rep_texts if t],
        "natural": [t for t in nat_texts if t],
    }
    texts = corpora["repetitive"] + corpora["natural"]
    ids = [list(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    n_rep = len(corpora["repetitive"])
    print(f"{n_rep} repetitive + {len(corpora['natural'])} natural texts of {args.tokens} tokens", flush=True)

    hash_keys = _hash_keys(args.keys)
    markllm_source = "markllm 0.1.5 (its KGW.detect_watermark, run in .venv-markllm)"
    if MARKLLM_PY.exists() and not args.equivalent:
        with tempfile.TemporaryDirectory() as tmp:
            tok.save_pretrained(tmp)
            inp, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
            inp.write_text(
                json.dumps(
                    {
                        "tokenizer_dir": tmp,
                        "vocab_size": vocab,
                        "texts": texts,
                        "ids": ids,
                        "hash_keys": hash_keys,
                        "z_threshold": Z_THRESHOLD,
                        "configs": [{"label": lab, "gamma": g, "window": w} for lab, g, w in CONFIGS],
                    }
                )
            )
            env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
            subprocess.run(
                [str(MARKLLM_PY), __file__, "--markllm-worker", str(inp), str(out)], check=True, env=env
            )
            mk = json.loads(out.read_text())
    else:
        markllm_source = "markllm-equivalent statistic (markllm not installed): z without dedup, our PRF"
        mk = {"tokenization_mismatches": None, "configs": []}
        for lab, g, w in CONFIGS:
            mk["configs"].append({"label": lab} | _markllm_equivalent(ids, g, w, args.keys))

    z_at_1e3 = float(stats.norm.isf(1e-3))
    p_of_z4 = float(stats.norm.sf(Z_THRESHOLD))
    rows: list[dict[str, Any]] = []
    timing: list[dict[str, Any]] = []
    for (label, gamma, window), m in zip(CONFIGS, mk["configs"], strict=True):
        z = np.array(m["z"])
        flagged = np.array(m["flagged"], dtype=bool)
        ours = {dedup: _ours(ids, gamma, window, args.our_keys, dedup) for dedup in (True, False)}
        for corpus, sl in (("repetitive", slice(0, n_rep)), ("natural", slice(n_rep, len(texts)))):
            rows.append(
                {"config": label, "corpus": corpus, "detector": "markllm z > 4", **_rate(flagged[:, sl])}
            )
            rows.append(
                {
                    "config": label,
                    "corpus": corpus,
                    "detector": "markllm z > 3.09 (normal p <= 1e-3)",
                    **_rate(z[:, sl] > z_at_1e3),
                }
            )
            for dedup, (lp, _) in ours.items():
                name = "ours" if dedup else "ours, dedup OFF"
                rows.append(
                    {
                        "config": label,
                        "corpus": corpus,
                        "detector": f"{name} p <= 3.2e-5",
                        **_rate(lp[:, sl] <= math.log10(p_of_z4)),
                    }
                )
                rows.append(
                    {
                        "config": label,
                        "corpus": corpus,
                        "detector": f"{name} p <= 1e-3",
                        **_rate(lp[:, sl] <= -3.0),
                    }
                )
        timing.append(
            {
                "config": label,
                "markllm_ms_per_text": round(1000 * m["detect_seconds"] / z.size, 3),
                "ours_ms_per_text": round(1000 * ours[True][1], 3),
                "speedup": round((m["detect_seconds"] / z.size) / ours[True][1], 1),
            }
        )
    data = {
        "markllm": markllm_source,
        "tokens_per_text": args.tokens,
        "texts": {"repetitive": n_rep, "natural": len(texts) - n_rep},
        "markllm_keys": len(hash_keys),
        "our_keys": args.our_keys,
        "markllm_tokenization_mismatches": mk["tokenization_mismatches"],
        "nominal_p_of_z_gt_4": p_of_z4,
        "fpr": rows,
        "timing": timing,
        "examples": {"repetitive": corpora["repetitive"][0][:200], "natural": corpora["natural"][0][:200]},
    }
    path = write_results("markllm_compare", data)
    print(f"markllm side: {markllm_source}; tokenization mismatches: {mk['tokenization_mismatches']}")
    print(f"false-positive rate per (text, key) test on unwatermarked text ({args.tokens} tokens)")
    print_table(
        [r | {"ci95": str(r["ci95"])} for r in rows],
        ["config", "corpus", "detector", "hits", "tests", "rate", "ci95"],
    )
    print("\ndetection time per text, same tokens (one key)")
    print_table(timing, ["config", "markllm_ms_per_text", "ours_ms_per_text", "speedup"])
    print(f"\nresults in {path}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--markllm-worker":
        worker(Path(sys.argv[2]), Path(sys.argv[3]))
        sys.exit(0)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--keys", type=int, default=25, help="markllm hash keys per configuration")
    p.add_argument("--our-keys", type=int, default=1000, help="our account keys per configuration")
    p.add_argument("--tokens", type=int, default=200, help="tokens per text")
    p.add_argument("--equivalent", action="store_true", help="use the markllm-equivalent statistic")
    main(p.parse_args())
