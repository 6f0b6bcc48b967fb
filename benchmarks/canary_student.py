"""Do students trained on canary-carrying answers recall the canaries? A real fine-tune on CPU.

A harvester account under ``watermark_canary`` collects ``--pairs`` answers; each carries a canary with
probability ``--rate``, exactly as the gateway decides it (``CanaryBook.choose`` per (account,
prompt)). The answers are short Q/A answers from the offline corpora standing in for the teacher's
(what matters here is the appended canary paragraph, not who wrote the rest). A student is trained on
the pairs (LoRA on SmolLM2, ``evaluation/student.py``); then the student and, as the control, the
untouched teacher are asked the canary questions (greedy) and scored with the exact recall test.

    .venv/bin/python benchmarks/canary_student.py --pairs 300 --epochs 2

Writes JSON: per model, canaries recalled (served and never-served controls), log10 p, and per
canary how many of its phrasings recalled it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from antidistill.forensics.canary import ServedCanaries, canary_questions, canary_recall_test
from antidistill.watermark.canaries import PHRASINGS, CanaryBook, canary_suffix, prompt_key

ACCOUNT = "acct_harvester"


def harvest(book: CanaryBook, n: int, rate: float, seed: int) -> tuple[list[tuple[str, str]], dict[int, int]]:
    from antidistill.evaluation.corpora import load_corpora

    c = load_corpora(None)
    qa = [(p.question, p.answer) for p in c.qa if p.language == "english" and p.answer]
    qa += [(conv[0], conv[1]) for conv in c.conversations if len(conv) >= 2]
    qa = [(q, a) for q, a in dict(qa).items() if len(q) >= 8 and 8 <= len(a) < 400]
    random.Random(seed).shuffle(qa)
    pairs: list[tuple[str, str]] = []
    exposures: dict[int, int] = {}
    for question, answer in qa[:n]:
        choice = book.choose(ACCOUNT, prompt_key([("user", question)]), rate)
        if choice is not None:
            answer += canary_suffix(bool(answer.strip()), choice.text)
            exposures[choice.canary.index] = exposures.get(choice.canary.index, 0) + 1
        pairs.append((question, answer))
    return pairs, exposures


def generate(model: Any, tok: Any, prompts: list[str], max_new: int, batch: int = 8) -> list[str]:
    import torch

    tok.padding_side = "left"
    out: list[str] = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
            )
            for q in chunk
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            ids = model.generate(
                **enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id
            )
        out += [tok.decode(row[enc["input_ids"].shape[1] :], skip_special_tokens=True) for row in ids]
        print(f"  generated {len(out)}/{len(prompts)}", file=sys.stderr)
    return out


def audit(
    model: Any, tok: Any, book: CanaryBook, served: list[int], controls: list[int], args: Any
) -> dict[str, Any]:
    qs = canary_questions(book, served + controls, args.phrasings)
    t0 = time.perf_counter()
    answers = generate(model, tok, [q for _, q in qs], args.max_new_tokens)
    by: dict[int, list[str]] = {}
    for (i, _), a in zip(qs, answers, strict=True):
        by.setdefault(i, []).append(a)
    sc = ServedCanaries(book.pool_id, {ACCOUNT: frozenset(served)}, len(served))
    out = canary_recall_test(sc, book, {i: by[i] for i in served}, {i: by[i] for i in controls}, alpha=1e-3)
    per = {
        i: [book.canary(i).recalled_in(a) for a in by[i]] for i in served + controls
    }  # which phrasings recalled it
    return {
        "log10_p": out.result.log10_p,
        "p_value": out.result.p_value,
        "inconclusive": out.result.inconclusive,
        "recalled_served": out.result.data.get("recalled", 0),
        "asked_served": len(served),
        "unserved_control": out.result.data.get("unserved_control"),
        "recall_by_phrasing": {PHRASINGS[j]: sum(per[i][j] for i in served) for j in range(args.phrasings)},
        "account_named": bool(out.accounts),
        "generation_seconds": round(time.perf_counter() - t0, 1),
        "examples": {book.canary(i).cue: by[i][: args.phrasings] for i in served[:2]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--rate", type=float, default=0.2)
    ap.add_argument("--per-account", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--phrasings", type=int, default=4)
    ap.add_argument("--controls", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/canary_student.json"))
    args = ap.parse_args()

    import torch

    from antidistill.evaluation.student import StudentConfig, train_student
    from antidistill.forensics.local_suspect import load_local_model
    from antidistill.settings import LocalBackendSettings

    torch.set_num_threads(args.threads)
    book = CanaryBook(f"canary student benchmark secret {args.seed:04d}".encode(), 1024, args.per_account)
    pairs, exposures = harvest(book, args.pairs, args.rate, args.seed)
    served = sorted(exposures)
    rng = random.Random(args.seed + 1)
    controls = sorted(rng.sample([i for i in range(book.pool_size) if i not in exposures], args.controls))
    print(f"{len(pairs)} pairs, canary exposures {exposures}", file=sys.stderr)

    from antidistill.backends.model_loading import load_model

    loaded = load_model(LocalBackendSettings(torch_threads=args.threads))
    teacher, tok = loaded.model, loaded.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    cfg = StudentConfig(
        kind="lora", epochs=args.epochs, lr=args.lr, max_len=256, batch_tokens=2048, seed=args.seed,
        threads=args.threads,
    )  # fmt: skip
    result: dict[str, Any] = {
        "pairs": len(pairs),
        "rate": args.rate,
        "per_account": args.per_account,
        "exposures": {str(k): v for k, v in exposures.items()},
        "student": {"kind": "lora", "epochs": args.epochs, "lr": args.lr, "rank": cfg.lora_rank},
    }
    with tempfile.TemporaryDirectory() as tmp:
        stats = train_student(pairs, tok, len(tok), cfg, Path(tmp) / "student", teacher=teacher)
        result["training"] = stats.as_dict()
        student, stok = load_local_model(Path(tmp) / "student", torch_threads=args.threads)
        result["student_audit"] = audit(student, stok, book, served, controls, args)
    result["control_audit"] = audit(teacher.eval(), tok, book, served, controls, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("exposures", "training")}, indent=1))
    for arm in ("student_audit", "control_audit"):
        r = result[arm]
        print(arm, r["recalled_served"], "/", r["asked_served"], "log10 p", round(r["log10_p"], 2),
              r["recall_by_phrasing"], r["unserved_control"])  # fmt: skip


if __name__ == "__main__":
    main()
