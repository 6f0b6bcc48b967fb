"""``antidistill eval detection``: labelled traffic through our engine and two baselines, side by side.

1. Calibration traffic: benign accounts only, from the ``calib`` half of the benign corpora, with its
   own seed. Our engine, the MMD baseline and the rate-limit baseline are all calibrated on it.
2. Test traffic: benign accounts (the ``test`` half, another seed) mixed with every attacker family.
3. Each detector replays the test traffic; per account we keep its maximum score and, for its own
   flag rule (calibrated for the target FPR on the calibration traffic), when it first flagged.
4. ``metrics.evaluate`` + ``report.write_report``: JSON and an HTML page with ROC and delay plots.

Nothing is tuned on the test traffic: the thresholds of the "deployed" operating point come from the
calibration traffic only. The 1% / 0.1% operating points pick their thresholds on the test benign
accounts (a ROC point), as the metrics module documents.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from antidistill.evaluation import replay as rp
from antidistill.evaluation.metrics import AccountOutcome, RunCost, evaluate
from antidistill.evaluation.report import write_report
from antidistill.evaluation.traffic import generate_trace, preset
from antidistill.risk.calibration import Calibration
from antidistill.risk.detectors.mmd import AccountMmdTester, MmdWindowDetector, threshold_for_fpr
from antidistill.risk.detectors.ratelimit import RateLimitBaseline
from antidistill.risk.embedding import Embedder, embed_distinct
from antidistill.risk.engine import EMBED_CHARS, RiskEngine
from antidistill.risk.types import RiskEvent

log = logging.getLogger("antidistill.eval")

CALIBRATION_SEED = 101
TEST_SEED = 5151  # never used while developing the engine (tuning used 202; 4242 was the first report)
SHIPPED_CALIBRATIONS = {
    "minilm": Path(__file__).resolve().parent.parent / "risk" / "data" / "default-minilm.npz"
}
MMD_MAX_PROMPTS = 16  # per account (the paper's smallest window is 100; CPU budget, see README)
MMD_CALIBRATION_ACCOUNTS = 1500
MMD_MIN_PROMPTS = 8


@dataclass(frozen=True)
class DetectionEvalConfig:
    preset: str = "default"
    embedder: str = "minilm"
    target_fpr: float = 1e-3
    calibration_seed: int = CALIBRATION_SEED
    test_seed: int = TEST_SEED
    chunk: int = 2000
    baselines: bool = True
    progress: bool = True


def benign_only(events: Iterable[RiskEvent]) -> list[RiskEvent]:
    """Events of accounts that never send an attack request."""
    evs = list(events)
    attackers = {e.account for e in evs if e.label == "attack"}
    return [e for e in evs if e.account not in attackers]


def calibration_trace(preset_name: str, seed: int) -> list[RiskEvent]:
    cfg = replace(preset(preset_name, seed), split="calib")
    return benign_only(generate_trace(cfg))


def build_default_calibration(
    embedder: str,
    target_fpr: float,
    *,
    progress: bool = True,
    preset_name: str = "default",
    seed: int = CALIBRATION_SEED,
) -> Calibration:
    events = calibration_trace(preset_name, seed)
    meta = {"source": f"bundled benign corpora, preset {preset_name}, seed {seed}", "requests": len(events)}
    return rp.calibrate(
        events, rp.make_embedder(embedder), target_fpr, total=len(events), progress=progress, meta=meta
    )


def default_calibration(
    embedder: str,
    target_fpr: float,
    *,
    progress: bool = True,
    preset_name: str = "default",
    seed: int = CALIBRATION_SEED,
) -> Calibration:
    """The bundled-corpora calibration: the one shipped in the package (MiniLM, preset ``default``,
    seed 101; rebuilt by ``antidistill risk calibrate --embedder minilm --out
    src/antidistill/risk/data/default-minilm.npz``), else built once and cached in
    ~/.cache/antidistill/risk."""
    shipped = SHIPPED_CALIBRATIONS.get(embedder)
    if shipped is not None and shipped.exists() and (preset_name, seed) == ("default", CALIBRATION_SEED):
        try:
            return Calibration.load(shipped).with_target(target_fpr)
        except Exception as exc:  # stale after a feature change: rebuilt below (and a test fails)
            log.warning("ignoring the shipped calibration %s: %s", shipped, exc)
    path = rp.cache_path(f"{embedder}|{target_fpr}|{preset_name}|{seed}|v1")
    if path.exists():
        try:
            return Calibration.load(path)
        except Exception as exc:  # a stale or broken cache file is rebuilt
            log.warning("ignoring cached calibration %s: %s", path, exc)
    log.warning(
        "building the default risk calibration from the bundled benign corpora (once; cached at %s)", path
    )
    cal = build_default_calibration(
        embedder, target_fpr, progress=progress, preset_name=preset_name, seed=seed
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    cal.save(tmp)
    tmp.replace(path)
    return cal


class CachingEmbedder:
    """An embedder that embeds each distinct text once per run."""

    def __init__(self, inner: Embedder | None) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", "none")
        self._cache: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        assert self.inner is not None
        return self.inner.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        assert self.inner is not None
        vecs = embed_distinct(self.inner, texts, self._cache)
        return np.asarray(vecs, dtype=np.float32).reshape(len(texts), self.dim)


# -- per-account bookkeeping ------------------------------------------------------------------------
@dataclass
class _Truth:
    label: str = "benign"
    family: str = "benign"
    share: float | None = None
    campaign: str | None = None
    n: int = 0
    attacks: int = 0
    times: list[float] | None = None
    attack_times: list[float] | None = None


def _truth(events: Sequence[RiskEvent]) -> dict[str, _Truth]:
    out: dict[str, _Truth] = defaultdict(_Truth)
    for e in events:
        t = out[e.account]
        t.n += 1
        if t.times is None:
            t.times, t.attack_times = [], []
        t.times.append(e.ts)
        if e.label == "attack":
            t.label = "attack"
            t.attacks += 1
            assert t.attack_times is not None
            t.attack_times.append(e.ts)
            t.family = e.family or "attack"
        elif t.label == "benign" and e.family:
            t.family = e.family
        share = getattr(e, "share", None)
        if share is not None:
            t.share = share
        campaign = getattr(e, "campaign", None)
        if campaign:
            t.campaign = campaign
    for t in out.values():
        if t.label == "attack" and t.share is None and t.attacks < t.n:
            t.share = round(t.attacks / t.n, 2)
    return out


def _count_upto(times: list[float] | None, ts: float | None) -> int | None:
    if ts is None or times is None:
        return None
    return int(np.searchsorted(np.asarray(times), ts, side="right"))


def _outcome(
    det: str, account: str, t: _Truth, score: float, flag_ts: float | None, cluster: str | None
) -> AccountOutcome:
    fam = t.family if t.label == "attack" else "benign"
    return AccountOutcome(
        account=account,
        label="attack" if t.label == "attack" else "benign",
        family=fam,
        share=t.share if t.label == "attack" else None,
        detector=det,
        score=min(max(score, 0.0), 1.0),
        n_requests=t.n,
        first_flag_ts=flag_ts,
        requests_before_flag=_count_upto(t.times, flag_ts),
        attack_requests_before_flag=_count_upto(t.attack_times, flag_ts),
        cluster=cluster,
        campaign=t.campaign if t.label == "attack" else None,
    )


def squash(stat: float) -> float:
    """A monotone map of the engine's statistic onto [0, 1) that does not saturate where the
    calibrated score does (beyond the most extreme benign account), so ROC points stay resolved."""
    return 1.0 - math.exp(-max(stat, 0.0) / 10.0)


# -- detectors --------------------------------------------------------------------------------------
def run_ours(
    cal: Calibration,
    embedder: Embedder | None,
    test: Sequence[RiskEvent],
    truth: dict[str, _Truth],
    cfg: DetectionEvalConfig,
) -> tuple[list[AccountOutcome], RunCost, RiskEngine]:
    engine = RiskEngine(cal, embedder)
    stats = rp.run(engine, test, chunk=cfg.chunk, total=len(test), progress=cfg.progress)
    outs = [
        _outcome("antidistill", a, truth[a], squash(rec.stat), rec.first_flag_ts, rec.cluster)
        for a, rec in engine.accounts.items()
    ]
    return outs, RunCost("antidistill", stats.requests, stats.seconds_cpu, stats.seconds_wall), engine


def run_rate_limit(
    calib: Sequence[RiskEvent], test: Sequence[RiskEvent], truth: dict[str, _Truth], target_fpr: float
) -> tuple[list[AccountOutcome], RunCost]:
    w0, c0 = time.perf_counter(), time.process_time()
    by_acc: dict[str, list[float]] = defaultdict(list)
    for e in calib:
        by_acc[e.account].append(e.ts)
    benign = [np.asarray(v) for v in by_acc.values()]
    # two windows share the target (union bound); too few benign accounts cannot certify a tiny one
    feasible = max(target_fpr, 4.0 / max(len(benign), 1))
    if feasible > target_fpr:
        log.warning("rate-limit baseline: %d benign accounts; calibrated for FPR %.3g", len(benign), feasible)
    baseline = RateLimitBaseline.calibrate(benign, feasible)
    test_acc: dict[str, list[float]] = defaultdict(list)
    for e in test:
        test_acc[e.account].append(e.ts)
    outs = []
    for a, ts in test_acc.items():
        v = baseline.evaluate(np.asarray(ts))
        # score: the account's peak over the tightest limit, squashed monotonically onto [0, 1)
        r = max(c / (rule.threshold + 1) for (_, c), rule in zip(v.max_counts, baseline.rules, strict=True))
        outs.append(_outcome("rate_limit", a, truth[a], r / (1.0 + r), v.first_flag_ts, None))
    return outs, RunCost("rate_limit", len(test), time.process_time() - c0, time.perf_counter() - w0)


def run_mmd(
    calib: Sequence[RiskEvent],
    test: Sequence[RiskEvent],
    truth: dict[str, _Truth],
    emb: Embedder | None,
    target_fpr: float,
    progress: bool,
) -> tuple[list[AccountOutcome], RunCost]:
    """The published MMD window test (Liu, Guo & Dong 2026), per account, on its first
    ``MMD_MAX_PROMPTS`` prompts (the paper's small window), thresholds from benign windows."""
    if emb is None:
        return [], RunCost("mmd_window", 0, 0.0, 0.0)
    w0, c0 = time.perf_counter(), time.process_time()

    def first_prompts(events: Sequence[RiskEvent]) -> dict[str, list[tuple[float, str]]]:
        acc: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for e in events:
            lst = acc[e.account]
            if len(lst) < MMD_MAX_PROMPTS:
                lst.append((e.ts, e.last_user[:EMBED_CHARS]))
        return acc

    def embed_all(groups: dict[str, list[tuple[float, str]]]) -> dict[str, np.ndarray]:
        keys = list(groups)
        distinct = list(dict.fromkeys(t for k in keys for _, t in groups[k]))
        index = {t: i for i, t in enumerate(distinct)}
        parts = []
        with tqdm(total=len(distinct), unit="prompt", desc="mmd embed", disable=not progress) as bar:
            for i in range(0, len(distinct), 512):
                parts.append(emb.embed(distinct[i : i + 512]))
                bar.update(len(parts[-1]))
        vecs = np.concatenate(parts) if parts else np.zeros((0, emb.dim), dtype=np.float32)
        return {k: vecs[[index[t] for _, t in groups[k]]] for k in keys}

    cal_groups = first_prompts(calib)
    keep = sorted(cal_groups)[:: max(1, len(cal_groups) // MMD_CALIBRATION_ACCOUNTS)]
    cal_vecs = embed_all({k: cal_groups[k] for k in keep})
    rows = np.concatenate(list(cal_vecs.values()))
    rng = np.random.default_rng(0)
    detector, held_out = MmdWindowDetector.from_benign(
        rows, reference_size=min(2000, len(rows) // 2), rng=rng, window=MMD_MAX_PROMPTS
    )
    n_windows = max(500, 2 * math.ceil(1 / target_fpr))  # enough null windows to certify the target
    tester = AccountMmdTester(
        detector, held_out, target_fpr=target_fpr, n_windows=n_windows, min_n=8, max_n=MMD_MAX_PROMPTS
    )
    test_groups = first_prompts(test)
    test_vecs = embed_all(test_groups)
    # Variant 2 (fairer to the method when it is applied per account): the null distribution is the
    # MMD² of whole benign *accounts* (calibration accounts not in the sample above), not of windows
    # drawn from the pooled benign prompts, whose topics are far more mixed than one user's.
    others = [k for k in cal_groups if k not in set(keep) and len(cal_groups[k]) >= MMD_MIN_PROMPTS]
    other_vecs = embed_all({k: cal_groups[k] for k in others})
    null = np.array([detector.score(v) for v in other_vecs.values()])
    if len(null) >= 20:
        account_threshold = threshold_for_fpr(null, min(0.5, max(target_fpr, 2.0 / len(null))))
    else:  # too few benign accounts to set a threshold: this variant flags nobody
        account_threshold = math.inf
    outs = []
    for a, lst in test_groups.items():
        x = test_vecs[a]
        res = tester.test(x) if len(lst) >= 2 else None
        flag_ts = lst[-1][0] if res is not None and res.flagged else None
        score = 1.0 - res.p_value if res is not None else 0.0
        outs.append(_outcome("mmd_window", a, truth[a], score, flag_ts, None))
        s2 = detector.score(x) if len(lst) >= MMD_MIN_PROMPTS else -1.0
        flag2 = lst[-1][0] if len(lst) >= MMD_MIN_PROMPTS and s2 > account_threshold else None
        outs.append(_outcome("mmd_account", a, truth[a], 0.5 + math.atan(20.0 * s2) / math.pi, flag2, None))
    cost = RunCost("mmd_window", len(test), time.process_time() - c0, time.perf_counter() - w0)
    return outs, cost


def run_detection_eval(cfg: DetectionEvalConfig, out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    calib = calibration_trace(cfg.preset, cfg.calibration_seed)
    test = generate_trace(replace(preset(cfg.preset, cfg.test_seed), split="test"))
    truth = _truth(test)
    # one model and one cache of prompt embeddings for the whole run (all detectors embed the same
    # prompts; the cache is an evaluation shortcut, the costs below include the first embedding)
    shared = CachingEmbedder(rp.make_embedder(cfg.embedder))
    emb = shared if shared.inner is not None else None
    cal = rp.calibrate(
        calib,
        emb,
        cfg.target_fpr,
        chunk=cfg.chunk,
        total=len(calib),
        progress=cfg.progress,
        meta={"preset": cfg.preset, "seed": cfg.calibration_seed},
    )
    outcomes, cost, engine = run_ours(cal, emb, test, truth, cfg)
    costs = [cost]
    if cfg.baselines:
        o, c = run_rate_limit(calib, test, truth, cfg.target_fpr)
        outcomes += o
        costs.append(c)
        o, c = run_mmd(calib, test, truth, emb, cfg.target_fpr, cfg.progress)
        if o:
            outcomes += o
            costs += [c, replace(c, detector="mmd_account")]
    results = evaluate(outcomes, costs)
    results["setup"] = {
        "preset": cfg.preset,
        "embedder": cfg.embedder,
        "target_fpr": cfg.target_fpr,
        "calibration_requests": len(calib),
        "test_requests": len(test),
        "test_accounts": len(truth),
        "calibration_meta": cal.meta,
        "threshold": cal.threshold,
        "clusters": len(engine.graph.clusters()),
    }
    write_report(results, out_dir)
    return results
