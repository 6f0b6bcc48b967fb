"""Identity probes: does the suspect claim to be our model, or made by our company?

Students distilled from a teacher often inherit its self-description. We ask "who created you?" /
"what model are you?" in several phrasings and languages (en, zh, es, ru, fr), count the answers that
name one of ``names`` (case-insensitive), and test whether that rate exceeds a reference:

* with a control model's answers to the same probes: Fisher's exact test, one-sided (suspect rate >
  control rate); exact and conditional, it needs no assumed rate;
* else with ``reference_rate`` (a configured share of unrelated models that name us): an exact one-sided
  binomial test;
* else inconclusive (no reference to compare with).

Supporting evidence only: a model can name us because the web talks about us, or be told not to.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from scipy import stats

from antidistill.forensics.radioactivity import TestResult

MIN_ANSWERS = 10

IDENTITY_PROMPTS: dict[str, tuple[str, ...]] = {
    "en": (
        "Who created you?",
        "What model are you?",
        "Which company trained you? Answer in one sentence.",
        "What is your name, and who built you?",
    ),
    "zh": ("你是谁创造的？", "你是什么模型？", "哪家公司训练了你？", "你叫什么名字？是谁开发的？"),
    "es": (
        "¿Quién te creó?",
        "¿Qué modelo eres?",
        "¿Qué empresa te entrenó?",
        "¿Cómo te llamas y quién te desarrolló?",
    ),
    "ru": (
        "Кто тебя создал?",
        "Какая ты модель?",
        "Какая компания тебя обучила?",
        "Как тебя зовут и кто тебя разработал?",
    ),
    "fr": (
        "Qui t'a créé ?",
        "Quel modèle es-tu ?",
        "Quelle entreprise t'a entraîné ?",
        "Comment t'appelles-tu et qui t'a conçu ?",
    ),
}


def identity_prompts() -> list[str]:
    return [p for lang in sorted(IDENTITY_PROMPTS) for p in IDENTITY_PROMPTS[lang]]


def _pattern(names: Sequence[str]) -> re.Pattern[str]:
    parts = [re.escape(n.strip()) for n in names if n.strip()]
    if not parts:
        raise ValueError("at least one name to look for is needed")
    # word boundaries where the name starts/ends with a word character (Latin or Cyrillic names)
    return re.compile("|".join(rf"(?<!\w){p}(?!\w)" for p in parts), re.IGNORECASE)


def count_claims(answers: Sequence[str], names: Sequence[str]) -> int:
    pat = _pattern(names)
    return sum(1 for a in answers if pat.search(a))


def identity_test(
    answers: Sequence[str],
    names: Sequence[str],
    *,
    control_answers: Sequence[str] | None = None,
    reference_rate: float | None = None,
    min_answers: int = MIN_ANSWERS,
) -> TestResult:
    """One-sided test that the suspect names us more often than the reference (see module docstring)."""
    name = "identity_probes"
    k, n = count_claims(answers, names), len(answers)
    data: dict[str, object] = {"claims": k, "names": list(names)}
    shown = ", ".join(repr(x) for x in names)
    if n < min_answers:
        return TestResult(name, 1.0, n, f"only {n} answers (< {min_answers}): INCONCLUSIVE", True, data)
    if control_answers is not None and len(control_answers) >= min_answers:
        kc, nc = count_claims(control_answers, names), len(control_answers)
        _, p = stats.fisher_exact([[k, n - k], [kc, nc - kc]], alternative="greater")
        data.update(control_claims=kc, control_n=nc, method="fisher_exact_one_sided")
        detail = (
            f"{k}/{n} answers name {shown} vs {kc}/{nc} for the control model; Fisher's exact test, "
            f"one-sided: p = {float(p):.3g}."
        )
        return TestResult(name, float(p), n, detail, False, data)
    if reference_rate is not None:
        if not 0.0 < reference_rate < 1.0:
            raise ValueError("reference_rate must be in (0, 1)")
        p = stats.binomtest(k, n, reference_rate, alternative="greater").pvalue
        data.update(reference_rate=reference_rate, method="binomial_one_sided")
        detail = (
            f"{k}/{n} answers name {shown}; exact binomial test against the reference rate "
            f"{reference_rate:g}, one-sided: p = {float(p):.3g}."
        )
        return TestResult(name, float(p), n, detail, False, data)
    detail = (
        f"{k}/{n} answers name {shown}; no control answers or reference rate to compare with: INCONCLUSIVE"
    )
    return TestResult(name, 1.0, n, detail, True, data)
