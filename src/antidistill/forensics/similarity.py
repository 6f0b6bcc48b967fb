"""Output-distribution similarity: is the suspect closer to our model than a reference model is?
SUPPORTING EVIDENCE ONLY: it never enters the verdict (``report.SUPPORTING_ONLY``).

On the same prompts we have the suspect's answer ``s_j``, our model's (the teacher's) ``t_j`` and a
reference model's ``r_j`` (a model not trained on our outputs: ``--reference-url``, else the control
model). Per prompt ``d_j = sim(s_j, t_j) - sim(s_j, r_j)`` with ``sim`` the cosine of sentence
embeddings (``risk/embedding.py``: MiniLM, or the character n-gram hashing embedder offline); the
statistic is the mean of ``d_j``, and the p-value is a one-sided paired sign-flip test (exact
enumeration up to 16 prompts, else 9,999 random flips, ``p = (1 + #{T_b >= T}) / (B + 1)``).

The null of that test is "teacher and reference are interchangeable as far as the suspect's
closeness goes". Nothing guarantees it: two models of one family, or of one size, or tuned on the
same public data, resemble each other without any distillation, and the reference choice moves the
result. That is why it is only supporting evidence, unlike the radioactivity and canary tests,
whose nulls hold by construction (secret keys). Descriptive figures (word-bigram overlap, length
ratios) are reported alongside, not tested.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from antidistill.forensics.radioactivity import TestResult
from antidistill.risk.embedding import Embedder, HashingEmbedder
from antidistill.store.base import Store

NAME = "output_similarity"
MIN_PROMPTS = 10
EXACT_UP_TO = 16
N_FLIPS = 9999
_WORDS = re.compile(r"\w+")


def sign_flip_p(d: npt.ArrayLike, *, n_flips: int = N_FLIPS, seed: int = 0) -> float:
    """One-sided p that mean(d) is this large if each d_j's sign were a fair coin (paired test)."""
    x = np.asarray(d, dtype=np.float64)
    n = len(x)
    if n == 0:
        return 1.0
    obs = float(x.sum())
    tol = 1e-12 * max(1.0, float(np.abs(x).sum()))
    if n <= EXACT_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        return float(np.mean(signs @ x >= obs - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_flips, 1000):
        b = min(1000, n_flips - start)
        signs = rng.choice((-1.0, 1.0), size=(b, n))
        hits += int(np.sum(signs @ x >= obs - tol))
    return (1 + hits) / (n_flips + 1)


def _bigrams(text: str) -> set[tuple[str, str]]:
    w = _WORDS.findall(text.lower())
    return set(itertools.pairwise(w))


def _jaccard(a: set[Any], b: set[Any]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def similarity_test(
    suspect: Mapping[str, str],
    teacher: Mapping[str, str],
    reference: Mapping[str, str] | None,
    *,
    embedder: Embedder | None = None,
    reference_label: str = "reference",
    teacher_label: str = "our model",
    min_prompts: int = MIN_PROMPTS,
    n_flips: int = N_FLIPS,
    seed: int = 0,
) -> TestResult:
    """The paired sign-flip test over the prompts all three answered (module docstring)."""
    data: dict[str, Any] = {"supporting_only": True, "reference": reference_label, "teacher": teacher_label}
    if not teacher:
        why = f"no answers of ours to compare with (teacher: {teacher_label}): INCONCLUSIVE; supporting only"
        return TestResult(NAME, 1.0, 0, why, True, data)
    if reference is None:
        why = f"no reference answers ({reference_label}): INCONCLUSIVE; supporting evidence only"
        return TestResult(NAME, 1.0, 0, why, True, data)
    prompts = [p for p in suspect if suspect[p] and teacher.get(p) and reference.get(p)]
    n = len(prompts)
    if n < min_prompts:
        why = (
            f"only {n} prompts answered by the suspect, the teacher and the {reference_label} "
            f"(< {min_prompts}): INCONCLUSIVE; supporting evidence only"
        )
        return TestResult(NAME, 1.0, n, why, True, data)
    emb = embedder or HashingEmbedder(dim=1024)
    s = emb.embed([suspect[p] for p in prompts])
    t = emb.embed([teacher[p] for p in prompts])
    r = emb.embed([reference[p] for p in prompts])
    st, sr = np.sum(s * t, axis=1), np.sum(s * r, axis=1)
    d = (st - sr).astype(np.float64)
    p = sign_flip_p(d, n_flips=n_flips, seed=seed)
    big = [
        (
            _jaccard(_bigrams(suspect[q]), _bigrams(teacher[q])),
            _jaccard(_bigrams(suspect[q]), _bigrams(reference[q])),
        )
        for q in prompts
    ]

    def mean_log_len(other: Mapping[str, str]) -> float:
        return float(np.mean([math.log((len(suspect[q]) + 1) / (len(other[q]) + 1)) for q in prompts]))

    data.update(
        embedder=type(emb).__name__,
        method="paired sign-flip test, one-sided"
        + (" (exact)" if n <= EXACT_UP_TO else f" ({n_flips} flips)"),
        mean_cosine_teacher=float(st.mean()),
        mean_cosine_reference=float(sr.mean()),
        mean_difference=float(d.mean()),
        closer_to_teacher=int(np.sum(d > 0)),
        bigram_jaccard_teacher=float(np.mean([a for a, _ in big])),
        bigram_jaccard_reference=float(np.mean([b for _, b in big])),
        mean_log_length_ratio_teacher=mean_log_len(teacher),
        mean_log_length_ratio_reference=mean_log_len(reference),
    )
    detail = (
        f"on {n} prompts the suspect's answers have mean cosine {st.mean():.3f} to ours vs "
        f"{sr.mean():.3f} to the {reference_label}'s ({int(np.sum(d > 0))}/{n} closer to ours); "
        f"paired sign-flip test, one-sided: p = {p:.3g}. SUPPORTING EVIDENCE ONLY (not in the "
        "verdict): its null assumes the teacher and the reference are interchangeable, which model "
        "families and shared training data can break."
    )
    return TestResult(NAME, p, n, detail, False, data)


def event_log_answers(store: Store, prompts: Sequence[str]) -> dict[str, str]:
    """Our recorded answers (first choice, status 200) to ``prompts``, from the gateway's event log:
    the teacher side without querying our model again (the last user turn must match exactly)."""
    from antidistill.forensics.radioactivity import _event_prompt

    wanted = set(prompts)
    out: dict[str, str] = {}
    for ev in store.iter_events():
        if ev.status != 200 or not ev.response:
            continue
        p = _event_prompt(ev)
        if p in wanted and p not in out:
            out[p] = ev.response.split("\x1e", 1)[0]
    return out
