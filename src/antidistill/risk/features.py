"""Per-account (and per-cluster) behaviour features, updated one request at a time.

``ActivityState`` folds requests into bounded running statistics (counters, rolling-window deques,
a capped sample of prompt embeddings) and ``snapshot()`` turns them into a flat ``{feature: value}``
map. Every feature has a fixed direction: larger means "more like a harvester". Whether a value is
unusual is decided by the benign calibration (``calibration.py``), never by hand-set cut-offs here.

Pure: no I/O, no clock (times come from the events), bounded memory per account.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from antidistill.risk.types import RequestSignals, RiskEvent

HOUR = 3600.0
DAY = 86400.0
MAX_EMBEDDINGS = 8  # prompt embeddings kept per subject (the first ones): topic features, bounded cost
MAX_SKELETONS = 512  # distinct skeletons counted per subject (then new ones count as "other")
MIN_TEMPLATE_CHARS = 24  # prompts shorter than this ("hi", "thanks") never count as a template
BUSY_DAY = 20  # requests in a UTC day that make it a "busy day"


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    name: str
    description: str
    group: str  # kind of evidence; the score needs several kinds (see calibration.TOP_K)


# The features the calibrated score combines. Direction: higher = more harvester-like.
FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("peak_hour", "log(1 + requests in the busiest rolling hour)", "volume"),
    FeatureSpec("peak_day", "log(1 + requests in the busiest rolling 24 hours)", "volume"),
    FeatureSpec(
        "busy_days",
        f"log(1 + days with >= {BUSY_DAY} requests): sustained harvesting, not a burst",
        "persistence",
    ),
    FeatureSpec("regularity", "evenness of the gaps between requests (1 / (1 + std of log gaps))", "timing"),
    FeatureSpec("hour_spread", "share of the 24 hours of the day with activity", "diurnal"),
    FeatureSpec(
        "template_share", "share of prompts that reuse one of the subject's 3 commonest templates", "content"
    ),
    FeatureSpec("shared_templates", "share of prompts whose template other accounts also use", "content"),
    FeatureSpec("elicitation", "mean reasoning-elicitation score of the prompts", "reasoning"),
    FeatureSpec("single_turn", "share of single-turn requests (no conversation)", "harvest"),
    FeatureSpec("harvest_ratio", "answer tokens per prompt token", "harvest"),
    FeatureSpec(
        "topic_focus", "similarity of the prompts to their own centroid (narrow capability focus)", "topic"
    ),
    FeatureSpec("topic_shift", "distance of the prompt distribution from benign traffic (MMD)", "topic"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(f.group for f in FEATURES))


class _RollingMax:
    """Largest number of timestamps inside any window of ``width`` seconds seen so far."""

    __slots__ = ("best", "times", "width")

    def __init__(self, width: float) -> None:
        self.width = width
        self.times: deque[float] = deque()
        self.best = 0

    def add(self, ts: float) -> None:
        self.times.append(ts)
        while self.times and self.times[0] <= ts - self.width:
            self.times.popleft()
        self.best = max(self.best, len(self.times))


class ActivityState:
    """Running statistics of one subject's requests. ``add`` must see requests in time order
    (out-of-order ones are clamped to the latest time seen)."""

    __slots__ = (
        "_day",
        "_gap_m2",
        "_gap_mean",
        "_gap_n",
        "_hour",
        "_today",
        "_today_n",
        "busy_days",
        "completion_tokens",
        "elicit_langs",
        "elicit_sum",
        "embeddings",
        "first_ts",
        "hours",
        "last_ts",
        "n",
        "prompt_tokens",
        "shared_template_hits",
        "single_turn",
        "skeletons",
        "templated",
        "topic_cache",
    )

    def __init__(self) -> None:
        self.n = 0
        self.first_ts = math.nan
        self.last_ts = math.nan
        self._hour = _RollingMax(HOUR)
        self._day = _RollingMax(DAY)
        self._gap_n = 0
        self._gap_mean = 0.0
        self._gap_m2 = 0.0
        self.hours = np.zeros(24, dtype=np.int64)
        self._today = -1
        self._today_n = 0
        self.busy_days = 0
        self.skeletons: Counter[str] = Counter()
        self.templated = 0  # prompts long enough to count towards template features
        self.shared_template_hits = 0
        self.elicit_sum = 0.0
        self.elicit_langs: Counter[str] = Counter()
        self.single_turn = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.embeddings: list[np.ndarray] = []
        self.topic_cache: tuple[int, float] | None = None  # (embeddings seen, topic_shift) of the engine

    def add(
        self,
        event: RiskEvent,
        signals: RequestSignals,
        *,
        template_shared: bool = False,
        embedding: np.ndarray | None = None,
    ) -> None:
        ts = event.ts if self.n == 0 or event.ts >= self.last_ts else self.last_ts
        if self.n == 0:
            self.first_ts = ts
        else:
            gap = max(ts - self.last_ts, 0.1)  # sub-100 ms gaps are one burst
            lg = math.log(gap)
            self._gap_n += 1
            d = lg - self._gap_mean
            self._gap_mean += d / self._gap_n
            self._gap_m2 += d * (lg - self._gap_mean)
        self.n += 1
        self.last_ts = ts
        self._hour.add(ts)
        self._day.add(ts)
        self.hours[int(ts // HOUR) % 24] += 1
        day = int(ts // DAY)
        if day != self._today:
            self._today, self._today_n = day, 0
        self._today_n += 1
        if self._today_n == BUSY_DAY:
            self.busy_days += 1
        if signals.payload_chars >= MIN_TEMPLATE_CHARS:
            self.templated += 1
            if signals.skeleton in self.skeletons or len(self.skeletons) < MAX_SKELETONS:
                self.skeletons[signals.skeleton] += 1
            if template_shared:
                self.shared_template_hits += 1
        self.elicit_sum += signals.elicitation
        if signals.elicitation >= 0.5 and signals.elicitation_lang:
            self.elicit_langs[signals.elicitation_lang] += 1
        if signals.turns <= 1:
            self.single_turn += 1
        self.prompt_tokens += max(event.prompt_tokens, 1)
        self.completion_tokens += event.completion_tokens
        if embedding is not None and len(self.embeddings) < MAX_EMBEDDINGS:
            self.embeddings.append(embedding)

    def merge(self, other: ActivityState) -> None:
        """Fold ``other`` into this state (used when pooling cluster members). Rolling-window peaks
        and gap statistics are not additive; cluster features recompute them (see clusters.py)."""
        if other.n == 0:
            return
        self.first_ts = other.first_ts if self.n == 0 else min(self.first_ts, other.first_ts)
        self.last_ts = other.last_ts if self.n == 0 else max(self.last_ts, other.last_ts)
        self.n += other.n
        self.hours += other.hours
        self.busy_days = max(self.busy_days, other.busy_days)
        self.skeletons.update(other.skeletons)
        self.templated += other.templated
        self.shared_template_hits += other.shared_template_hits
        self.elicit_sum += other.elicit_sum
        self.elicit_langs.update(other.elicit_langs)
        self.single_turn += other.single_turn
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        room = MAX_EMBEDDINGS * 4 - len(self.embeddings)
        if room > 0:
            self.embeddings.extend(other.embeddings[:room])

    # -- features ---------------------------------------------------------------------------
    def template_share(self) -> float:
        if self.templated == 0:
            return 0.0
        top = sum(c for _, c in self.skeletons.most_common(3))
        return top / max(self.n, 1)

    def regularity(self) -> float:
        if self._gap_n < 2:
            return 0.0
        std = math.sqrt(self._gap_m2 / (self._gap_n - 1))
        return 1.0 / (1.0 + std)

    def snapshot(self, topic_shift: float = 0.0) -> dict[str, float]:
        n = max(self.n, 1)
        active_hours = int(np.count_nonzero(self.hours))
        return {
            "peak_hour": math.log1p(self._hour.best),
            "peak_day": math.log1p(self._day.best),
            "busy_days": math.log1p(self.busy_days),
            "regularity": self.regularity(),
            "hour_spread": active_hours / 24.0,
            "template_share": self.template_share(),
            "shared_templates": self.shared_template_hits / n,
            "elicitation": self.elicit_sum / n,
            "single_turn": self.single_turn / n,
            "harvest_ratio": self.completion_tokens / max(self.prompt_tokens, 1),
            "topic_focus": topic_focus(self.embeddings),
            "topic_shift": topic_shift,
        }


def topic_focus(embeddings: list[np.ndarray]) -> float:
    """Mean cosine similarity of unit vectors to their centroid direction; 0 when too few."""
    if len(embeddings) < 4:
        return 0.0
    m = np.asarray(embeddings, dtype=np.float32).mean(axis=0)
    return float(np.linalg.norm(m))


def stack(embeddings: list[np.ndarray]) -> np.ndarray | None:
    if len(embeddings) < 4:
        return None
    return np.asarray(embeddings, dtype=np.float32)
