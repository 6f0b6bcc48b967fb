"""The risk engine: requests in (time order), findings out.

``RiskEngine.process(events)`` takes a batch of requests in time order. For each it extracts the cheap
request signals, updates the account's running features and the account graph (clusters), and, when
the account's (or its cluster's) request count reaches a look checkpoint (4, 6, 8, 12, 16, ...),
scores it against the benign calibration and emits a ``Finding`` with reasons in words.

Without a calibration the engine *records* looks instead (``calibrating=True``); ``fit_calibration``
then fits the benign reference from those records (see ``calibration.py``).

Heavy work (prompt embeddings) is batched per ``process`` call and bounded per account (the first
``MAX_EMBEDDINGS`` prompts). The engine holds no I/O: the gateway, ``antidistill analyze`` and
``antidistill replay`` feed it and store what it returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from antidistill.risk.calibration import (
    Calibration,
    CalibrationBuilder,
    describe_top,
    is_checkpoint,
    role_of,
)
from antidistill.risk.clusters import Cluster, ClusterIndex
from antidistill.risk.embedding import Embedder, embed_distinct
from antidistill.risk.features import FEATURE_NAMES, MAX_EMBEDDINGS, ActivityState, stack
from antidistill.risk.reasons import feature_reason
from antidistill.risk.signals import extract_signals
from antidistill.risk.topic import TopicShift
from antidistill.risk.types import Finding, RequestSignals, RiskEvent

MIN_EMBED_CHARS = 8
EMBED_CHARS = 400
EMBED_CACHE = 20_000  # distinct prompt texts whose embeddings are kept (~30 MB for MiniLM)
SHARED_TEMPLATE_ACCOUNTS = 3  # a template used by >= this many other accounts is "shared"
MIN_CLUSTER_SIZE = 3


@dataclass
class SubjectRecord:
    """What the engine remembers about one account beyond its running features."""

    state: ActivityState = field(default_factory=ActivityState)
    own_stat: float = 0.0
    stat: float = 0.0  # max over own looks and its clusters' looks
    reasons: tuple[str, ...] = ()
    cluster: str | None = None
    first_flag_ts: float | None = None
    requests_before_flag: int | None = None
    pending_embeddings: int = 0
    looks: list[tuple[int, dict[str, float], int]] = field(default_factory=list)  # calibration only
    cluster_looks: list[int] = field(default_factory=list)  # calibration only


@dataclass
class _ClusterRecord:
    stat: float = 0.0
    reasons: tuple[str, ...] = ()
    flagged_ts: float | None = None


class RiskEngine:
    def __init__(
        self,
        calibration: Calibration | None,
        embedder: Embedder | None = None,
        *,
        signal_fn: Callable[[RiskEvent], RequestSignals] = extract_signals,
    ) -> None:
        self.calibration = calibration
        self.calibrating = calibration is None
        self.embedder = embedder
        self._signals = signal_fn
        self.accounts: dict[str, SubjectRecord] = {}
        self._states: dict[str, ActivityState] = {}
        self.graph = ClusterIndex()
        self._clusters: dict[str, _ClusterRecord] = {}
        self._template_accounts: dict[str, set[str]] = {}
        ref = calibration.reference_embeddings if calibration is not None else None
        self._topic = TopicShift(ref) if ref is not None and embedder is not None else None
        # calibration only: (requests, features, the cluster's embeddings at the look)
        self.cluster_look_features: list[tuple[int, dict[str, float], np.ndarray | None]] = []
        self.requests = 0
        self._embed_cache: dict[str, np.ndarray] = {}  # insertion-ordered: oldest evicted first

    # -- public ---------------------------------------------------------------------------------
    def fresh(self) -> RiskEngine:
        """A new engine with the same calibration and embedder and no state (for a worker that must
        rebuild from the store, e.g. after another worker held its lease meanwhile)."""
        return RiskEngine(self.calibration, self.embedder, signal_fn=self._signals)

    def process(self, events: Sequence[RiskEvent]) -> list[Finding]:
        signals = [self._signals(e) for e in events]
        embeddings = self._embed(events, signals)
        findings: list[Finding] = []
        for i, (event, sig) in enumerate(zip(events, signals, strict=True)):
            findings.extend(self._observe(event, sig, embeddings.get(i)))
        return findings

    def account_stat(self, account: str) -> float:
        rec = self.accounts.get(account)
        return rec.stat if rec else 0.0

    @property
    def threshold(self) -> float:
        return self.calibration.threshold if self.calibration is not None else math.inf

    def score_of(self, stat: float) -> float:
        return self.calibration.score(stat) if self.calibration is not None else 0.0

    def account_summary(self, account: str) -> dict[str, object]:
        rec = self.accounts[account]
        return {
            "account": account,
            "score": round(self.score_of(rec.stat), 6),
            "statistic": round(rec.stat, 4),
            "flagged": rec.first_flag_ts is not None,
            "first_flagged_ts": rec.first_flag_ts,
            "requests_before_flag": rec.requests_before_flag,
            "requests": rec.state.n,
            "cluster": rec.cluster,
            "reasons": list(rec.reasons),
        }

    # -- internals -------------------------------------------------------------------------------
    def _embed(self, events: Sequence[RiskEvent], signals: list[RequestSignals]) -> dict[int, np.ndarray]:
        if self.embedder is None:
            return {}
        idx: list[int] = []
        texts: list[str] = []
        for i, (e, s) in enumerate(zip(events, signals, strict=True)):
            rec = self.accounts.get(e.account)
            have = (len(rec.state.embeddings) + rec.pending_embeddings) if rec else 0
            if have < MAX_EMBEDDINGS and s.payload_chars >= MIN_EMBED_CHARS:
                if rec is None:
                    rec = self.accounts[e.account] = SubjectRecord()
                    self._states[e.account] = rec.state
                rec.pending_embeddings += 1
                idx.append(i)
                texts.append(e.last_user[:EMBED_CHARS])
        if not texts:
            return {}
        vectors = self._embed_cached(texts)
        for i in idx:
            self.accounts[events[i].account].pending_embeddings -= 1
        return dict(zip(idx, vectors, strict=True))

    def _embed_cached(self, texts: list[str]) -> list[np.ndarray]:
        """Embed ``texts`` through the engine's bounded cache (templated and copied prompts repeat)."""
        assert self.embedder is not None
        return embed_distinct(self.embedder, texts, self._embed_cache, EMBED_CACHE)

    def _observe(self, event: RiskEvent, sig: RequestSignals, emb: np.ndarray | None) -> list[Finding]:
        self.requests += 1
        a = event.account
        rec = self.accounts.get(a)
        if rec is None:
            rec = self.accounts[a] = SubjectRecord()
            self._states[a] = rec.state
        shared = False
        if sig.payload_chars >= 24:
            users = self._template_accounts.setdefault(sig.skeleton, set())
            if len(users) < 64:
                users.add(a)
            shared = len(users) > SHARED_TEMPLATE_ACCOUNTS
        rec.state.add(event, sig, template_shared=shared, embedding=emb)
        cluster, was_member = self.graph.observe(event, sig, self._states)
        out: list[Finding] = []
        if is_checkpoint(rec.state.n):
            f = self._look_account(a, rec, event.ts)
            if f is not None:
                out.append(f)
        if cluster is not None:
            if was_member:
                cluster.state.add(event, sig, template_shared=shared, embedding=emb)
            rec.cluster = cluster.cid
            if len(cluster.members) >= MIN_CLUSTER_SIZE and (
                is_checkpoint(cluster.state.n) or cluster.cid not in self._clusters
            ):
                f = self._look_cluster(cluster, event.ts)
                if f is not None:
                    out.append(f)
            crec = self._clusters.get(cluster.cid)
            if crec is not None and crec.stat > rec.stat:
                self._raise(a, rec, crec.stat, crec.reasons, event.ts)
        return out

    def _features(self, state: ActivityState, per_member: int = 1) -> dict[str, float]:
        shift = 0.0
        if self._topic is not None:
            k = len(state.embeddings)
            cached = state.topic_cache
            if cached is not None and cached[0] == k:
                shift = cached[1]
            else:  # recomputed only when the subject's embedding sample grew
                x = stack(state.embeddings)
                shift = self._topic.mmd2(x) if x is not None else 0.0
                state.topic_cache = (k, shift)
        f = state.snapshot(topic_shift=shift)
        if per_member > 1:  # a cluster's rates are judged per member
            for name in ("peak_hour", "peak_day"):
                f[name] = math.log1p(math.expm1(f[name]) / per_member)
        return f

    def _look_account(self, a: str, rec: SubjectRecord, ts: float) -> Finding | None:
        feats = self._features(rec.state)
        if self.calibrating:
            rec.looks.append((rec.state.n, feats, len(rec.state.embeddings)))
            return None
        assert self.calibration is not None
        stat, nl = self.calibration.look_statistic(rec.state.n, feats)
        if stat > rec.own_stat:
            rec.own_stat = stat
        reasons = tuple(
            feature_reason(name, feats[name], nl[FEATURE_NAMES.index(name)], rec.state)
            for name in describe_top(nl, FEATURE_NAMES)
        )
        if stat > rec.stat:
            self._raise(a, rec, stat, reasons, ts)
        return self._account_finding(a, rec, ts, stat, feats)

    def _look_cluster(self, cluster: Cluster, ts: float) -> Finding | None:
        feats = self._features(cluster.state, per_member=len(cluster.members))
        crec = self._clusters.setdefault(cluster.cid, _ClusterRecord())
        if self.calibrating:
            look = len(self.cluster_look_features)
            self.cluster_look_features.append((cluster.state.n, feats, stack(cluster.state.embeddings)))
            for m in cluster.members:
                self.accounts[m].cluster_looks.append(look)
            return None
        assert self.calibration is not None
        stat, nl = self.calibration.look_statistic(cluster.state.n, feats)
        top = [
            feature_reason(n, feats[n], nl[FEATURE_NAMES.index(n)], cluster.state)
            for n in describe_top(nl, FEATURE_NAMES)
        ]
        reasons = (f"member of cluster {cluster.cid}: {self.graph.describe_links(cluster)}", *top)
        if stat > crec.stat:
            crec.stat, crec.reasons = stat, reasons
            for m in cluster.members:
                mrec = self.accounts[m]
                if stat > mrec.stat:
                    self._raise(m, mrec, stat, reasons, ts)
        if crec.flagged_ts is None and stat > self.threshold:
            crec.flagged_ts = ts
        out = {k: round(v, 6) for k, v in feats.items()}
        out["look_statistic"] = round(stat, 4)
        out["members"] = float(len(cluster.members))
        return Finding(
            subject_kind="cluster",
            subject_id=cluster.cid,
            ts=ts,
            score=self.score_of(crec.stat),
            flagged=crec.flagged_ts is not None,
            reasons=crec.reasons,
            features=out,
            cluster=cluster.cid,
            requests_seen=cluster.state.n,
        )

    def _account_finding(
        self, a: str, rec: SubjectRecord, ts: float, look_stat: float, feats: dict[str, float]
    ) -> Finding:
        """An account's finding carries its running (sticky) score and the reasons behind its highest
        look, own or via its cluster; this look's own statistic is kept among the features."""
        out = {k: round(v, 6) for k, v in feats.items()}
        out["look_statistic"] = round(look_stat, 4)
        return Finding(
            subject_kind="account",
            subject_id=a,
            ts=ts,
            score=self.score_of(rec.stat),
            flagged=rec.first_flag_ts is not None,
            reasons=rec.reasons,
            features=out,
            cluster=rec.cluster,
            requests_seen=rec.state.n,
        )

    def _raise(self, a: str, rec: SubjectRecord, stat: float, reasons: tuple[str, ...], ts: float) -> None:
        rec.stat, rec.reasons = stat, reasons
        if rec.first_flag_ts is None and stat > self.threshold:
            rec.first_flag_ts = ts
            rec.requests_before_flag = rec.state.n


def fit_calibration(
    engine: RiskEngine, target_fpr: float, meta: dict[str, object] | None = None, max_reference: int = 1024
) -> Calibration:
    """Fit the benign calibration from a ``calibrating`` engine that has seen benign traffic only.

    The topic reference is the prompts of the ``reference`` accounts; every recorded look's
    ``topic_shift`` (0 while recording: there was no reference yet) is recomputed against it from
    the embeddings the subject had at that look, so calibration and live scoring see the same
    feature."""
    if not engine.calibrating:
        raise ValueError("fit_calibration needs an engine built without a calibration")
    roles = {a: role_of(a) for a in engine.accounts}
    ref_rows = [
        e for a, rec in engine.accounts.items() if roles[a] == "reference" for e in rec.state.embeddings
    ]
    ref = np.asarray(ref_rows[:max_reference], dtype=np.float32) if len(ref_rows) >= 2 else None
    topic = TopicShift(ref) if ref is not None else None

    def with_shift(feats: dict[str, float], x: np.ndarray | None) -> dict[str, float]:
        if topic is None or x is None or len(x) < 4:
            return feats
        return {**feats, "topic_shift": topic.mmd2(x)}

    def account_looks(rec: SubjectRecord) -> list[tuple[int, dict[str, float]]]:
        return [(n, with_shift(f, stack(rec.state.embeddings[:k]))) for n, f, k in rec.looks]

    builder = CalibrationBuilder()
    for account, rec in engine.accounts.items():
        if roles[account] == "tails":
            for n, feats in account_looks(rec):
                builder.add_snapshot(n, feats)
    tails, scales = builder.fit_tails()
    name = getattr(engine.embedder, "name", type(engine.embedder).__name__) if engine.embedder else "none"
    partial = Calibration(FEATURE_NAMES, tails, scales, np.array([0.0]), target_fpr)  # level 1 only
    cluster_stats = [
        partial.look_statistic(n, with_shift(f, x))[0] for n, f, x in engine.cluster_look_features
    ]
    stats: list[float] = []
    for account, rec in engine.accounts.items():
        if roles[account] == "level" and rec.state.n > 0:
            own = max((partial.look_statistic(n, f)[0] for n, f in account_looks(rec)), default=0.0)
            via = max((cluster_stats[i] for i in rec.cluster_looks), default=0.0)
            stats.append(max(own, via))
    builder.add_account_statistics(stats)
    full_meta = {"benign_accounts": len(engine.accounts), "level_accounts": len(stats), **(meta or {})}
    return builder.build(tails, scales, target_fpr, ref, name, full_meta)
