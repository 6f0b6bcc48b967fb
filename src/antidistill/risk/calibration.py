"""Benign calibration: turn feature snapshots into a score whose false-positive rate is known.

Two levels, fitted on benign traffic only, on disjoint halves of the benign accounts:

1. **Per-feature tails** (half A). For every look bucket (the subject's request count, see
   ``CHECKPOINTS``) and feature, the benign values are kept sorted; a value ``x`` gets the
   conservative empirical tail ``p = (1 + #{benign >= x}) / (N + 1)``; beyond the largest benign value
   the tail is extended exponentially, ``p = exp(-(x - max) / scale) / (N + 1)``, with ``scale`` the
   mean excess of the benign values over their 90th percentile (the maximum-likelihood exponential
   tail; floored per feature by ``MIN_SCALE``), so that values far outside benign behaviour keep
   ranking above values just outside it, up to ``MAX_NEG_LOG`` nats in all. A look's statistic is the sum of
   the ``TOP_K`` largest ``-ln p`` over features: one strongly unusual feature or a few moderately
   unusual ones raise it; irrelevant features add nothing.
2. **Account level** (half B). Each benign account's final statistic is the maximum over all its looks
   (its own and its cluster's), exactly as the engine computes it live. The flag threshold is the
   smallest value that at most ``target_fpr`` of those accounts reach, and the reported score is the
   benign CDF of the statistic: ``score = 1 - (tail probability among benign accounts)``.

Because the maximum over looks is what is calibrated, repeated looks (sequential testing) are
accounted for. The realized rate on fresh benign traffic is what the evaluation harness reports.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from antidistill.errors import ConfigError
from antidistill.risk.features import FEATURE_NAMES, FEATURES, GROUPS

TOP_K = 4
# One kind of evidence adds at most this many nats (p = 4.5e-5), whatever the bucket: the score
# rewards several independent kinds of unusual behaviour over one extreme one, which a legitimate heavy
# user (a benchmark run, a batch job) also shows; the same cap for every bucket keeps accounts of every
# size on one scale.
MAX_NEG_LOG = 10.0
# Smallest tail scale per feature (in the feature's own units): beyond the largest benign value, the
# tail decays exponentially with the benign excess scale, never faster than these allow.
MIN_SCALE: dict[str, float] = {
    "peak_hour": 0.1,
    "peak_day": 0.1,
    "busy_days": 0.1,
    "regularity": 0.03,
    "hour_spread": 1 / 24,
    "template_share": 0.03,
    "shared_templates": 0.03,
    "elicitation": 0.03,
    "single_turn": 0.03,
    "harvest_ratio": 0.25,
    "topic_focus": 0.02,
    "topic_shift": 0.01,
}
MIN_BUCKET_SAMPLES = 40  # a look bucket with fewer benign snapshots borrows the nearest smaller one
FORMAT_VERSION = 2
_GROUP_INDEX = np.array([GROUPS.index(f.group) for f in FEATURES])


def _checkpoints(limit: int = 1 << 22) -> tuple[int, ...]:
    """4, 6, 8, 12, 16, 24, ...: two looks per doubling of the request count."""
    out: list[int] = []
    n = 4
    while n <= limit:
        out.append(n)
        out.append(n * 3 // 2)
        n *= 2
    return tuple(out)


CHECKPOINTS: tuple[int, ...] = _checkpoints()
_CHECKPOINT_SET = frozenset(CHECKPOINTS)


def is_checkpoint(n: int) -> bool:
    return n in _CHECKPOINT_SET


def bucket_of(n: int) -> int:
    """Index of the largest checkpoint <= n (-1 below the first)."""
    return bisect.bisect_right(CHECKPOINTS, n) - 1


def role_of(subject: str) -> str:
    """Deterministic role of a benign account in calibration: ``reference`` (1/8: its prompts are
    the benign topic reference), ``tails`` (3/8: level 1) or ``level`` (1/2: level 2). Disjoint, so
    no level is fitted on data it is then judged with."""
    b = hashlib.blake2b(subject.encode(), digest_size=1).digest()[0]
    if b & 1:
        return "level"
    return "reference" if b % 8 == 0 else "tails"


@dataclass
class Calibration:
    """Fitted benign reference. Build with ``CalibrationBuilder``; save/load as ``.npz``."""

    feature_names: tuple[str, ...]
    tails: dict[int, np.ndarray]  # bucket -> (n_snapshots, n_features), each column sorted
    scales: dict[int, np.ndarray]  # bucket -> (n_features,) exponential tail scale beyond the max
    account_max: np.ndarray  # sorted final statistics of benign accounts (the ``level`` role)
    target_fpr: float
    reference_embeddings: np.ndarray | None = None  # benign prompt sample for topic_shift
    embedder: str = "none"
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tails:
            raise ConfigError("calibration has no benign snapshots; calibrate on more benign traffic")
        self._buckets = sorted(self.tails)
        self.threshold = self._threshold_for(self.target_fpr)

    # -- level 1 ----------------------------------------------------------------------------
    def _bucket(self, n_requests: int) -> int:
        i = bisect.bisect_right(self._buckets, bucket_of(n_requests)) - 1
        return self._buckets[max(i, 0)]

    def neg_log_tails(self, n_requests: int, features: dict[str, float]) -> np.ndarray:
        """``-ln p`` per feature for a subject with ``n_requests`` requests."""
        b = self._bucket(n_requests)
        table, scale = self.tails[b], self.scales[b]
        x = np.array([features.get(f, 0.0) for f in self.feature_names], dtype=np.float64)
        n = table.shape[0]
        ge = np.array(
            [n - np.searchsorted(table[:, j], x[j], side="left") for j in range(table.shape[1])],
            dtype=np.float64,
        )
        nl = -np.log((1.0 + ge) / (n + 1.0))
        beyond = np.maximum(x - table[-1], 0.0) / scale
        return np.minimum(nl + beyond, MAX_NEG_LOG)

    def look_statistic(self, n_requests: int, features: dict[str, float]) -> tuple[float, np.ndarray]:
        """Sum of the ``TOP_K`` strongest *kinds* of evidence (each kind's strongest feature), and
        the per-feature ``-ln p``. Several features of one kind (three volume measures) count once."""
        nl = self.neg_log_tails(n_requests, features)
        per_group = np.full(len(GROUPS), 0.0)
        np.maximum.at(per_group, _GROUP_INDEX, nl)
        top = np.sort(per_group)[-TOP_K:]
        return float(top.sum()), nl

    # -- level 2 ----------------------------------------------------------------------------
    def _threshold_for(self, fpr: float) -> float:
        a = self.account_max
        if a.size == 0:
            return float("inf")
        # smallest t such that #{benign >= t} / N <= fpr: strictly above the k-th largest value
        k = int(np.floor(fpr * a.size))
        return float(np.nextafter(a[a.size - 1 - k], np.inf)) if k < a.size else float(a[0])

    def score(self, statistic: float) -> float:
        """Calibrated score in [0, 1]: the share of benign accounts whose statistic is lower."""
        a = self.account_max
        if a.size == 0:
            return 0.0
        return float(np.searchsorted(a, statistic, side="left") / (a.size + 1))

    def threshold_for(self, fpr: float) -> float:
        return self._threshold_for(fpr)

    def with_target(self, fpr: float) -> Calibration:
        """The same fit, flagging at another target false-positive rate (the benign account-level
        statistics are kept, so only the threshold moves)."""
        return Calibration(
            self.feature_names,
            self.tails,
            self.scales,
            self.account_max,
            fpr,
            self.reference_embeddings,
            self.embedder,
            self.meta,
        )

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        arrays = {f"tail_{b}": t for b, t in self.tails.items()}
        arrays.update({f"scale_{b}": v for b, v in self.scales.items()})
        arrays["account_max"] = self.account_max
        if self.reference_embeddings is not None:
            arrays["reference_embeddings"] = self.reference_embeddings
        meta = {
            "format": FORMAT_VERSION,
            "feature_names": list(self.feature_names),
            "target_fpr": self.target_fpr,
            "embedder": self.embedder,
            "meta": self.meta,
        }
        arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> Calibration:
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read risk calibration {path}: {exc}") from exc
        meta = json.loads(bytes(data["meta_json"]).decode())
        if meta.get("format") != FORMAT_VERSION:
            raise ConfigError(
                f"risk calibration {path} has format {meta.get('format')}, need {FORMAT_VERSION}"
            )
        names = tuple(meta["feature_names"])
        if names != FEATURE_NAMES:
            raise ConfigError(f"risk calibration {path} was fitted for other features; re-run calibration")
        tails = {int(k[5:]): data[k] for k in data.files if k.startswith("tail_")}
        scales = {int(k[6:]): data[k] for k in data.files if k.startswith("scale_")}
        ref = data["reference_embeddings"] if "reference_embeddings" in data.files else None
        return cls(
            names,
            tails,
            scales,
            data["account_max"],
            float(meta["target_fpr"]),
            ref,
            meta["embedder"],
            meta["meta"],
        )


class CalibrationBuilder:
    """Collects benign looks during a calibration replay, then fits a ``Calibration``.

    Pass 1 (``add_snapshot``) gathers per-bucket feature values from half A; ``fit_tails`` fixes
    level 1. Pass 2 replays with that partial calibration and ``add_account_statistic`` receives the
    final max statistic of each half-B account."""

    def __init__(self) -> None:
        self._snapshots: dict[int, list[list[float]]] = defaultdict(list)
        self._account_stats: list[float] = []

    def add_snapshot(self, n_requests: int, features: dict[str, float]) -> None:
        b = bucket_of(n_requests)
        if b >= 0:
            self._snapshots[b].append([features.get(f, 0.0) for f in FEATURE_NAMES])

    def fit_tails(self) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """Sorted benign values and exponential tail scales per look bucket."""
        tails: dict[int, np.ndarray] = {}
        scales: dict[int, np.ndarray] = {}
        floor = np.array([MIN_SCALE.get(f, 1e-3) for f in FEATURE_NAMES])
        for b in sorted(self._snapshots):
            rows = self._snapshots[b]
            if len(rows) >= MIN_BUCKET_SAMPLES or not tails:
                t = np.sort(np.asarray(rows, dtype=np.float64), axis=0)
                q90 = t[int(0.9 * (len(t) - 1))]
                above = t > q90
                counts = above.sum(axis=0)
                sums = np.where(above, t - q90, 0.0).sum(axis=0)
                mean_excess = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
                tails[b], scales[b] = t, np.maximum(mean_excess, floor)
        return tails, scales

    def add_account_statistics(self, stats: Iterable[float]) -> None:
        self._account_stats.extend(stats)

    def build(
        self,
        tails: dict[int, np.ndarray],
        scales: dict[int, np.ndarray],
        target_fpr: float,
        reference_embeddings: np.ndarray | None,
        embedder: str,
        meta: dict[str, object],
    ) -> Calibration:
        return Calibration(
            FEATURE_NAMES,
            tails,
            scales,
            np.sort(np.asarray(self._account_stats, dtype=np.float64)),
            target_fpr,
            reference_embeddings,
            embedder,
            meta,
        )


def describe_top(nl: np.ndarray, names: Sequence[str], k: int = 3, min_neg_log: float = 2.0) -> list[str]:
    """Names of the features that contributed most (``-ln p`` >= ``min_neg_log``, i.e. p <= 0.14)."""
    order = np.argsort(nl)[::-1][:k]
    return [names[i] for i in order if nl[i] >= min_neg_log]
