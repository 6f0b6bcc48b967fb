"""Output-distribution similarity (forensics/similarity.py): the sign-flip test and its use."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from antidistill.forensics.radioactivity import TestResult
from antidistill.forensics.report import SUPPORTING_ONLY, Arm, decide
from antidistill.forensics.similarity import sign_flip_p, similarity_test

WORDS = [
    "river",
    "mountain",
    "data",
    "model",
    "answer",
    "garden",
    "python",
    "market",
    "music",
    "train",
    "window",
    "coffee",
    "paper",
    "light",
    "number",
    "system",
    "energy",
    "story",
    "table",
    "cloud",
    "engine",
    "voice",
    "street",
    "colour",
]


def test_sign_flip_p_is_exact_for_small_samples() -> None:
    rng = random.Random(5)
    for n in (1, 3, 6, 10):
        d = [rng.uniform(-1, 1) for _ in range(n)]
        obs = sum(d)
        brute = np.mean(
            [sum(s * x for s, x in zip(signs, d, strict=True)) >= obs - 1e-12
             for signs in itertools.product((1, -1), repeat=n)]
        )  # fmt: skip
        assert sign_flip_p(d) == pytest.approx(float(brute))
    assert sign_flip_p([0.1] * 8) == pytest.approx(1 / 256)
    assert sign_flip_p([]) == 1.0


def test_sign_flip_p_is_valid_under_a_symmetric_null() -> None:
    """300 runs of 40 symmetric differences, 999 flips each: P(p <= a) <= a within 3 sd."""
    rng = np.random.default_rng(2)
    runs = 300
    ps = np.array([sign_flip_p(rng.normal(size=40), n_flips=999, seed=r) for r in range(runs)])
    for alpha in (0.05, 0.2):
        assert np.sum(ps <= alpha) <= alpha * runs + 3 * np.sqrt(alpha * (1 - alpha) * runs) + 1


def _text(rng: random.Random, n: int = 25) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def test_similarity_finds_a_copy_and_not_an_unrelated_model() -> None:
    rng = random.Random(1)
    prompts = [f"prompt {i}" for i in range(30)]
    teacher = {p: _text(rng) for p in prompts}
    reference = {p: _text(rng) for p in prompts}
    # a student that reproduces the teacher's answers with small edits
    student = {p: t.replace("river", "stream") + " indeed" for p, t in teacher.items()}
    r = similarity_test(student, teacher, reference)
    assert not r.inconclusive and r.p_value < 1e-3 and r.data["supporting_only"]
    assert r.data["closer_to_teacher"] == 30 and "SUPPORTING EVIDENCE ONLY" in r.detail
    # an unrelated model: as far from both
    other = {p: _text(rng) for p in prompts}
    assert similarity_test(other, teacher, reference).p_value > 0.01
    # too few prompts / no reference / no answers of ours: inconclusive
    few = {p: student[p] for p in prompts[:5]}
    assert similarity_test(few, teacher, reference).inconclusive
    assert similarity_test(student, teacher, None).inconclusive
    assert similarity_test(student, {}, reference).inconclusive


def _arm(tests: list[TestResult]) -> Arm:
    return Arm("suspect", {"model": "m", "url": "u"}, tests, [], [])


def test_similarity_never_enters_the_verdict_and_canary_recall_can_decide_it() -> None:
    radio = TestResult("radioactivity_api", 0.5, 5000, "", False, {"log10_p": np.log10(0.5)})
    sim = TestResult("output_similarity", 1e-30, 50, "", False, {"log10_p": -30.0})
    assert "output_similarity" in SUPPORTING_ONLY
    arm = _arm([radio, sim])
    decide(arm, None)
    assert arm.verdict == "not_distilled" and arm.p_value == pytest.approx(0.5)  # m = 1, sim ignored
    canary = TestResult("canary_recall", 1e-12, 40, "", False, {"log10_p": -12.0})
    arm = _arm([radio, canary, sim])
    decide(arm, None)
    assert arm.verdict == "distilled" and "canary recall" in arm.reason
    assert arm.log10_p == pytest.approx(-12.0 + np.log10(2))
    # an inconclusive canary test (nothing recalled) never decides
    quiet = TestResult("canary_recall", 1.0, 40, "", True)
    arm = _arm([TestResult("radioactivity_api", 1.0, 10, "", True), quiet])
    decide(arm, None)
    assert arm.verdict == "inconclusive"
    # a significant control arm blocks a canary verdict too
    control = _arm([canary])
    decide(control, None)
    arm = _arm([radio, canary])
    decide(arm, control)
    assert arm.verdict == "inconclusive" and "control" in arm.reason
