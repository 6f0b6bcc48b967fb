"""Maximum mean discrepancy (MMD) window test: the published baseline of Liu, Guo & Dong (2026).

Embed each prompt, compare a window of W queries to a benign reference sample with the unbiased
MMD² under an RBF kernel, and flag when it exceeds a threshold set from benign-vs-benign windows
at a target false-positive rate. Pure numpy; no I/O, no clock, no globals. Inputs are never
modified. Kernel sums run in blocks of at most ``max_block`` entries, so memory stays bounded.

Kernel: ``k(x, y) = exp(-||x - y||² / (2 σ²))`` with σ the median pairwise distance of the
reference sample (median heuristic), fixed once the detector is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_BLOCK = 1 << 22  # kernel entries per block (16 MiB of float32)


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)  # a copy when the input is not float32; never written to
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (n, dim), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _kernel_block(x: np.ndarray, sx: np.ndarray, y: np.ndarray, sy: np.ndarray, gamma: float) -> np.ndarray:
    d2 = x @ y.T
    d2 *= -2.0
    d2 += sx[:, None]
    d2 += sy[None, :]
    np.maximum(d2, 0.0, out=d2)
    d2 *= -gamma
    return np.exp(d2, out=d2)


def rbf_kernel_sum(
    x: np.ndarray, y: np.ndarray, gamma: float, *, max_block: int = DEFAULT_MAX_BLOCK
) -> float:
    """Σ_ij exp(-gamma ||x_i - y_j||²) over all pairs, in blocks."""
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    sx, sy = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
    side = max(1, math.isqrt(max_block))
    total = 0.0
    for a in range(0, len(x), side):
        for b in range(0, len(y), side):
            k = _kernel_block(x[a : a + side], sx[a : a + side], y[b : b + side], sy[b : b + side], gamma)
            total += float(k.sum(dtype=np.float64))
    return total


def rbf_self_sum(x: np.ndarray, gamma: float, *, max_block: int = DEFAULT_MAX_BLOCK) -> float:
    """Σ_{i≠j} exp(-gamma ||x_i - x_j||²): the off-diagonal kernel sum of one sample (symmetric
    blocks computed once; the diagonal is exactly 1 and left out)."""
    x = _as_matrix(x, "x")
    sx = np.einsum("ij,ij->i", x, x)
    side = max(1, math.isqrt(max_block))
    total = 0.0
    for a in range(0, len(x), side):
        for b in range(a, len(x), side):
            k = _kernel_block(x[a : a + side], sx[a : a + side], x[b : b + side], sx[b : b + side], gamma)
            if a == b:
                total += float(k.sum(dtype=np.float64)) - float(np.trace(k, dtype=np.float64))
            else:
                total += 2.0 * float(k.sum(dtype=np.float64))
    return total


def median_heuristic_bandwidth(x: np.ndarray, *, max_points: int = 1000) -> float:
    """Median pairwise Euclidean distance over (an evenly spaced subsample of) ``x``."""
    x = _as_matrix(x, "x")
    if len(x) < 2:
        raise ValueError("the median heuristic needs at least 2 points")
    if len(x) > max_points:
        x = x[np.linspace(0, len(x) - 1, max_points).astype(np.int64)]
    sx = np.einsum("ij,ij->i", x, x).astype(np.float64)
    xd = x.astype(np.float64)
    d2 = sx[:, None] + sx[None, :] - 2.0 * (xd @ xd.T)
    iu = np.triu_indices(len(x), k=1)
    sigma = float(np.median(np.sqrt(np.maximum(d2[iu], 0.0))))
    if not sigma > 0.0:
        raise ValueError("the reference sample has (almost) no spread: median pairwise distance is 0")
    return sigma


def gamma_of(bandwidth: float) -> float:
    return 1.0 / (2.0 * bandwidth * bandwidth)


def mmd2_unbiased(
    x: np.ndarray, y: np.ndarray, bandwidth: float, *, max_block: int = DEFAULT_MAX_BLOCK
) -> float:
    """Unbiased MMD² between samples ``x`` (m ≥ 2) and ``y`` (n ≥ 2): mean off-diagonal k(x,x')
    + mean off-diagonal k(y,y') - 2 mean k(x,y). Zero in expectation when both come from one
    distribution (so it can be negative); symmetric in ``x`` and ``y``."""
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("the unbiased MMD² needs at least 2 points per sample")
    g = gamma_of(bandwidth)
    m, n = len(x), len(y)
    kxx = rbf_self_sum(x, g, max_block=max_block) / (m * (m - 1))
    kyy = rbf_self_sum(y, g, max_block=max_block) / (n * (n - 1))
    kxy = rbf_kernel_sum(x, y, g, max_block=max_block) / (m * n)
    return kxx + kyy - 2.0 * kxy


def threshold_for_fpr(null_scores: np.ndarray, target_fpr: float) -> float:
    """Threshold t with P(new benign score > t) <= target_fpr for exchangeable benign scores:
    the k-th smallest of n null scores with k = ceil((n + 1)(1 - target_fpr)) (conformal quantile)."""
    s = np.sort(np.asarray(null_scores, dtype=np.float64))
    if not 0.0 < target_fpr < 1.0:
        raise ValueError("target_fpr must be in (0, 1)")
    n = len(s)
    k = math.ceil((n + 1) * (1.0 - target_fpr))
    if k > n:
        need = math.ceil(1.0 / target_fpr) - 1
        raise ValueError(f"{n} null scores cannot certify FPR {target_fpr:g}: need at least {need}")
    return float(s[k - 1])


def null_p_value(null_scores: np.ndarray, score: float) -> float:
    """(1 + #{null >= score}) / (1 + n): the share of benign calibration windows at least as
    extreme, with the +1 that makes it a valid p-value (never 0)."""
    s = np.asarray(null_scores, dtype=np.float64)
    return float((1 + np.count_nonzero(s >= score)) / (1 + len(s)))


@dataclass(frozen=True, slots=True)
class MmdResult:
    """One window test: the statistic, the threshold it was held to, and the verdict."""

    mmd2: float
    threshold: float
    p_value: float
    flagged: bool
    n: int  # queries in the tested window
    window: int  # window size the threshold was calibrated for

    @property
    def reason(self) -> str:
        verdict = "above" if self.flagged else "within"
        return (
            f"prompt-embedding distribution vs benign: MMD²={self.mmd2:.3g} {verdict} the "
            f"calibrated threshold {self.threshold:.3g} (n={self.n}, benign tail p={self.p_value:.3g})"
        )


class MmdWindowDetector:
    """Window-level MMD² test against a fixed benign reference sample.

    Calibrate on benign embeddings that are NOT in the reference (``from_benign`` splits one
    benign sample into both): reusing reference points in the windows biases MMD² low and the
    threshold with it.
    """

    def __init__(
        self,
        reference: np.ndarray,
        *,
        window: int = 1500,
        bandwidth: float | None = None,
        max_block: int = DEFAULT_MAX_BLOCK,
    ) -> None:
        ref = _as_matrix(reference, "reference")
        if len(ref) < 2:
            raise ValueError("the reference sample needs at least 2 points")
        if window < 2:
            raise ValueError("window must be >= 2")
        self.reference = ref.copy()
        self.reference.setflags(write=False)
        self.window = window
        self.max_block = max_block
        self.bandwidth = float(bandwidth) if bandwidth is not None else median_heuristic_bandwidth(ref)
        self.gamma = gamma_of(self.bandwidth)
        n = len(ref)
        self._kyy = rbf_self_sum(ref, self.gamma, max_block=max_block) / (n * (n - 1))
        self.null_scores: np.ndarray | None = None
        self.threshold: float | None = None
        self.target_fpr: float | None = None

    @classmethod
    def from_benign(
        cls, benign: np.ndarray, *, reference_size: int, rng: np.random.Generator, window: int = 1500
    ) -> tuple[MmdWindowDetector, np.ndarray]:
        """Split benign embeddings at random into a reference of ``reference_size`` rows and the
        held-out rest (returned, for ``calibrate``)."""
        b = _as_matrix(benign, "benign")
        if not 2 <= reference_size < len(b):
            raise ValueError("reference_size must be >= 2 and leave some benign rows for calibration")
        perm = rng.permutation(len(b))
        return cls(b[perm[:reference_size]], window=window), b[perm[reference_size:]]

    @property
    def dim(self) -> int:
        return int(self.reference.shape[1])

    def cross_means(self, x: np.ndarray) -> np.ndarray:
        """For each row of ``x``: mean kernel value against the reference sample."""
        x = self.validate(x)
        sx, ref = np.einsum("ij,ij->i", x, x), self.reference
        sr = np.einsum("ij,ij->i", ref, ref)
        rows = max(1, self.max_block // len(ref))
        out = np.empty(len(x), dtype=np.float64)
        for a in range(0, len(x), rows):
            k = _kernel_block(x[a : a + rows], sx[a : a + rows], ref, sr, self.gamma)
            out[a : a + rows] = k.mean(axis=1, dtype=np.float64)
        return out

    def score(self, window_embeddings: np.ndarray) -> float:
        """Unbiased MMD² between the window and the reference."""
        x = self.validate(window_embeddings)
        if len(x) < 2:
            raise ValueError("a window needs at least 2 queries")
        m = len(x)
        kxx = rbf_self_sum(x, self.gamma, max_block=self.max_block) / (m * (m - 1))
        return kxx + self._kyy - 2.0 * float(self.cross_means(x).mean())

    def null_distribution(
        self, benign: np.ndarray, window: int, n_windows: int, rng: np.random.Generator
    ) -> np.ndarray:
        """MMD² of ``n_windows`` benign windows of ``window`` rows, each drawn without replacement
        from ``benign``. Cross terms are computed once per benign row, then reused."""
        b = self.validate(benign)
        if not 2 <= window <= len(b):
            raise ValueError(f"window {window} needs 2..{len(b)} benign rows")
        if n_windows < 1:
            raise ValueError("n_windows must be >= 1")
        cross = self.cross_means(b)
        out = np.empty(n_windows, dtype=np.float64)
        for w in range(n_windows):
            idx = rng.choice(len(b), size=window, replace=False)
            kxx = rbf_self_sum(b[idx], self.gamma, max_block=self.max_block) / (window * (window - 1))
            out[w] = kxx + self._kyy - 2.0 * float(cross[idx].mean())
        return out

    def calibrate(
        self,
        benign_embeddings: np.ndarray,
        window: int | None = None,
        target_fpr: float = 0.01,
        n_windows: int = 500,
        rng: np.random.Generator | None = None,
    ) -> float:
        """Set (and return) the threshold for ``target_fpr`` from benign-vs-reference windows."""
        size = self.window if window is None else window
        if size < 2:
            raise ValueError("window must be >= 2")
        generator = rng if rng is not None else np.random.default_rng(0)
        null = self.null_distribution(benign_embeddings, size, n_windows, generator)
        threshold = threshold_for_fpr(null, target_fpr)
        null.setflags(write=False)
        self.window, self.threshold, self.null_scores, self.target_fpr = size, threshold, null, target_fpr
        return threshold

    def p_value(self, window_embeddings: np.ndarray) -> float:
        """Benign tail probability of the window's MMD² (windows of exactly ``window`` rows)."""
        return self.test(window_embeddings).p_value

    def test(self, window_embeddings: np.ndarray) -> MmdResult:
        """Score a window of exactly ``window`` rows against the calibrated threshold (the null
        was drawn at that size; use ``AccountMmdTester`` for other sizes)."""
        threshold, null = self._calibrated()
        x = self.validate(window_embeddings)
        if len(x) != self.window:
            raise ValueError(f"the threshold is calibrated for windows of {self.window}, got {len(x)}")
        s = self.score(x)
        return MmdResult(
            mmd2=s,
            threshold=threshold,
            p_value=null_p_value(null, s),
            flagged=s > threshold,
            n=len(x),
            window=self.window,
        )

    def _calibrated(self) -> tuple[float, np.ndarray]:
        if self.null_scores is None or self.threshold is None:
            raise RuntimeError("MmdWindowDetector.calibrate() must run before testing windows")
        return self.threshold, self.null_scores

    def validate(self, x: np.ndarray) -> np.ndarray:
        a = _as_matrix(x, "embeddings")
        if a.shape[1] != self.dim:
            raise ValueError(f"embeddings have dim {a.shape[1]}, the reference has {self.dim}")
        return a


class AccountMmdTester:
    """The MMD² test for one account's queries, whatever their number n.

    Thresholds are calibrated (lazily, then cached) for window sizes in powers of two from
    ``min_n`` to ``max_n``. An account with n queries is held to the threshold of the largest
    bucket b <= n while all n queries are scored: the benign MMD² spread shrinks as n grows, so
    this errs towards fewer false alarms. Accounts with fewer than ``min_n`` queries are not
    tested; beyond the largest bucket only the last rows are scored (pass rows in time order).
    Buckets larger than half the benign pool are not used (windows drawn from too small a pool
    overlap too much to give an honest null).
    """

    def __init__(
        self,
        detector: MmdWindowDetector,
        benign: np.ndarray,
        *,
        target_fpr: float = 0.01,
        n_windows: int = 500,
        seed: int = 0,
        min_n: int = 8,
        max_n: int = 2048,
    ) -> None:
        if min_n < 2 or max_n < min_n:
            raise ValueError("need 2 <= min_n <= max_n")
        self.detector = detector
        self.benign = detector.validate(benign)
        self.target_fpr, self.n_windows, self.seed = target_fpr, n_windows, seed
        sizes = [1 << k for k in range(max(1, (min_n - 1).bit_length()), max_n.bit_length())]
        self.buckets = tuple(b for b in sizes if min_n <= b <= max_n and 2 * b <= len(self.benign))
        if not self.buckets:
            raise ValueError(f"a benign pool of {len(self.benign)} rows is too small for bucket {min_n}")
        self._cache: dict[int, tuple[float, np.ndarray]] = {}

    def bucket_for(self, n: int) -> int | None:
        fitting = [b for b in self.buckets if b <= n]
        return fitting[-1] if fitting else None

    def calibration(self, bucket: int) -> tuple[float, np.ndarray]:
        """(threshold, benign null MMD² values) for windows of ``bucket`` rows; cached. The rng is
        seeded by (seed, bucket), so results do not depend on the order buckets are asked for."""
        if bucket not in self.buckets:
            raise ValueError(f"{bucket} is not one of the buckets {self.buckets}")
        if bucket not in self._cache:
            rng = np.random.default_rng([self.seed, bucket])
            null = self.detector.null_distribution(self.benign, bucket, self.n_windows, rng)
            null.setflags(write=False)
            self._cache[bucket] = (threshold_for_fpr(null, self.target_fpr), null)
        return self._cache[bucket]

    def test(self, account_embeddings: np.ndarray) -> MmdResult | None:
        """The account's verdict, or None when it has fewer than the smallest bucket's queries."""
        x = self.detector.validate(account_embeddings)
        bucket = self.bucket_for(len(x))
        if bucket is None:
            return None
        x = x[-self.buckets[-1] :]
        threshold, null = self.calibration(bucket)
        s = self.detector.score(x)
        p = null_p_value(null, s)
        return MmdResult(
            mmd2=s, threshold=threshold, p_value=p, flagged=s > threshold, n=len(x), window=bucket
        )
