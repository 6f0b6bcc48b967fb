"""The distillation experiment's audits: students read (reading mode) and queried (API mode)
over every recorded key, and the fresh-key null runs (see ``evaluation/distillation.py``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from antidistill.evaluation.distillation_world import DISTILLED_P, DistillationConfig, World


# ---- the audit part ---------------------------------------------------------------------------------
@dataclass
class Auditor:
    """Everything an audit needs that does not depend on the suspect."""

    store: Any
    tok: Any  # TextTokenizer
    keys: list[Any]
    account_keys: list[Any]
    docs: list[Any]  # watermarked event-log Documents (harvest + benign)
    doc_prompts: list[str]
    ids: list[list[int]]
    prompt_ids: list[list[int]]
    cfg: DistillationConfig
    root: Path
    harvested: set[str] = field(default_factory=set)  # every harvested prompt

    def texts_for(self, prompts: set[str]) -> tuple[list[list[int]], list[list[int]]]:
        """Event-log texts served for ``prompts`` (this scenario's harvest) and all benign texts."""
        keep = [i for i, p in enumerate(self.doc_prompts) if p in prompts or p not in self.harvested]
        return [self.ids[i] for i in keep], [self.prompt_ids[i] for i in keep]


def make_auditor(world: World, cfg: DistillationConfig) -> Auditor:
    from antidistill.forensics.reading import event_log_documents
    from antidistill.settings import WatermarkSettings
    from antidistill.store import open_store
    from antidistill.watermark.keystore import load_master_secret
    from antidistill.watermark.texts import TextTokenizer, recorded_keys

    store = open_store(world.store_url)
    secret = load_master_secret(WatermarkSettings(master_secret_file=str(world.secret_file)), create=False)
    tok = TextTokenizer(world.tokenizer, world.vocab_size, "teacher")
    keys = recorded_keys(store, secret, tok)
    account_keys = recorded_keys(store, secret, tok, scope="account")
    docs = event_log_documents(store, cfg.reading_texts, seed=cfg.seed)
    ids, prompt_ids = tok.encode(docs)
    assert prompt_ids is not None
    doc_prompts = [d.messages[-1][1] if d.messages else (d.prompt or "") for d in docs]
    return Auditor(
        store,
        tok,
        keys,
        account_keys,
        docs,
        doc_prompts,
        ids,
        prompt_ids,
        cfg,
        world.root,
        harvested={p for p, _ in world.harvest.pairs},
    )


def _outcome_json(o: Any) -> dict[str, Any]:
    r = o.result
    return {
        "p_value": r.p_value,
        "log10_p": r.log10_p,
        "n_scored": r.n,
        "inconclusive": r.inconclusive,
        "best_key": r.data.get("best_key"),
        "accounts": [a.get("account") or a.get("ident") for a in o.accounts],
        "detail": r.detail,
    }


def audit_student(
    model_dir: Path,
    aud: Auditor,
    prompts: Sequence[str],
    label: str,
    *,
    model: Any = None,
    tokenizer: Any = None,
    api: bool = True,
) -> tuple[dict[str, Any], list[Any], list[tuple[str, str]]]:
    """Reading mode on the scenario's texts, API mode on its prompts; (json, reading docs, answers)."""
    from antidistill.forensics.local_suspect import LocalSuspect, reading_docs
    from antidistill.forensics.radioactivity import radioactivity_test
    from antidistill.forensics.reading import reading_test
    from antidistill.forensics.suspect import ResponseCache

    cfg = aud.cfg
    cache = ResponseCache(aud.root / "audit-cache.sqlite")
    try:
        suspect = LocalSuspect(
            model_dir,
            cache,
            budget=len(prompts) + 10,
            batch_size=cfg.batch_size,
            progress=cfg.progress,
            label=label,
            model=model,
            tokenizer=tokenizer,
        )
        ids, pids = aud.texts_for(set(prompts))
        rdocs = reading_docs(suspect, ids, pids)
        reading = reading_test(
            rdocs, aud.keys, aud.account_keys, aud.store, alpha=cfg.alpha, min_tokens=cfg.min_tokens
        )
        out: dict[str, Any] = {"reading": _outcome_json(reading)}
        answers: list[tuple[str, str]] = []
        if api:
            params = {"temperature": cfg.audit_temperature, "max_tokens": cfg.audit_max_tokens}
            got = suspect.query(list(prompts)[: cfg.audit_prompts], params)
            answers = [(a.prompt, a.text) for a in got if a.text]
            radio = radioactivity_test(
                answers,
                aud.tok,
                aud.keys,
                aud.account_keys,
                aud.store,
                alpha=cfg.alpha,
                min_tokens=cfg.min_tokens,
                curve=False,
            )
            gen_tokens = sum(len(x) for x in aud.tok.encode([_doc(a) for _, a in answers])[0])
            out["api"] = {
                **_outcome_json(radio),
                "suspect_generated_tokens": gen_tokens,
                "prompts": len(answers),
            }
    finally:
        cache.close()
    tests = [out["reading"]] + ([out["api"]] if "api" in out else [])
    best = min(t["log10_p"] for t in tests)
    log10_p = min(0.0, best + math.log10(len(tests)))  # Bonferroni over the tests, as the audit report
    named = out["reading"]["accounts"] or (out.get("api") or {}).get("accounts") or []
    out.update(
        p_value=10.0**log10_p, log10_p=log10_p, accounts=named, distilled=log10_p <= math.log10(DISTILLED_P)
    )
    return out, rdocs, answers


def _doc(text: str) -> Any:
    from antidistill.watermark.texts import Document

    return Document(text)


def null_runs(
    rdocs: list[Any], answers: list[tuple[str, str]], aud: Auditor, runs: int, seed: int
) -> dict[str, Any]:
    """The reading and API tests repeated with ``runs`` fresh master secrets: every key is unrelated to
    the texts, so every verdict is a false one. Also pools the per-key (unadjusted) p-values, which are
    independent across keys, for a uniformity check."""
    from scipy import stats

    from antidistill.forensics.reading import score_keys
    from antidistill.watermark.detect import Detector
    from antidistill.watermark.keys import Keyring
    from antidistill.watermark.schemes.pvalues import bonferroni

    rng = np.random.default_rng(seed)
    idents = [k.ident for k in aud.keys]
    scopes = [k.scope for k in aud.keys]
    ids, pids = aud.tok.encode([_doc_prompt(p, a) for p, a in answers]) if answers else ([], None)
    min_lp: dict[str, list[float]] = {"reading": [], "api": []}
    per_key: dict[str, list[float]] = {"reading": [], "api": []}
    cache: dict[int, Any] = {}
    for _ in range(runs):
        secret = bytes(rng.integers(0, 256, 32, dtype=np.uint8))
        ring = Keyring(secret, aud.tok.fingerprint, aud.tok.vocab_size)
        keys = [ring.derive(s, i, 1) for s, i in zip(scopes, idents, strict=True)]
        scores, cache = score_keys(rdocs, keys, cache=cache)
        lps = np.array([s.log10_p for s in scores])
        per_key["reading"] += lps.tolist()
        min_lp["reading"].append(float(bonferroni(lps.min(), len(keys))))
        if answers:
            det = Detector().detect(ids, keys, pids, pool=True)
            lps = np.array([k.log10_p for k in det.keys])
            per_key["api"] += lps.tolist()
            min_lp["api"].append(det.log10_p_adj)
    out: dict[str, Any] = {"runs": runs, "keys_per_run": len(aud.keys)}
    for name in ("reading", "api"):
        if not min_lp[name]:
            continue
        p = 10.0 ** np.array(per_key[name])
        # the discrete KGW test would make this conservative; these keys are Gumbel (continuous)
        ks = stats.kstest(p, "uniform")
        out[name] = {
            "false_verdicts_at_alpha": int(sum(lp <= math.log10(aud.cfg.alpha) for lp in min_lp[name])),
            "min_log10_p_adj": float(min(min_lp[name])),
            "median_p_adj": float(np.median(10.0 ** np.array(min_lp[name]))),
            "per_key_p_values": int(p.shape[0]),
            "per_key_ks_p": float(ks.pvalue),
            "per_key_share_below_0.01": float(np.mean(p <= 0.01)),
            "per_key_share_below_0.001": float(np.mean(p <= 0.001)),
        }
    return out


def _doc_prompt(prompt: str, text: str) -> Any:
    from antidistill.watermark.texts import Document

    return Document(text, prompt=prompt)
