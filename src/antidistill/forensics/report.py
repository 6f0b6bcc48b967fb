"""The audit verdict (a fixed, conservative rule) and its two renderings: report.json and report.html.

Verdict rule (per arm; the suspect's is the report's verdict):

* ``p_value`` = Bonferroni over the arm's m tests: min(1, m * min p_i); an inconclusive test counts in
  m with p = 1 (so adding tests never makes a verdict easier).
* ``distilled`` only if the radioactivity test is conclusive (>= ``min_tokens`` scored tuples) AND
  min(1, m * p_radioactivity) <= ``DISTILLED_P`` (1e-6) AND the control arm (when run) is not itself
  significant at ``CONTROL_ALARM_P`` (1e-3; a flagged control means the setup is broken: inconclusive).
  Identity probes alone never give "distilled": they are supporting evidence.
  Canary recall (``DECIDING``) can give "distilled" the same way: conclusive (a canary recalled) and
  min(1, m * p_canary) <= ``DISTILLED_P``. Tests in ``SUPPORTING_ONLY`` (output similarity) are shown
  but are not among the m tests and never decide. The open-weights reading test
  (``radioactivity_reading``, ``--suspect-path``) decides like the API radioactivity test.
* ``not_distilled`` if the radioactivity test is conclusive and ``p_value`` > ``NOT_DISTILLED_P`` (0.01):
  enough scored text and no test shows anything. It means "no detectable trace at this power", not
  proof of innocence (see the limits below).
* ``inconclusive`` otherwise (too little text, or evidence between the two thresholds).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from antidistill.forensics.radioactivity import TestResult

DISTILLED_P = 1e-6
NOT_DISTILLED_P = 1e-2
CONTROL_ALARM_P = 1e-3
RADIOACTIVITY = "radioactivity_api"
# --- canary recall + output similarity (issue 6) ---
CANARY = "canary_recall"
DECIDING = (RADIOACTIVITY, CANARY)  # exact tests whose nulls hold by construction (secret keys/canaries)
# --- open-weights reading mode (issue 6) ---
READING = "radioactivity_reading"
DECIDING_ALL: tuple[str, ...] = (*DECIDING, READING)
# --- end ---
SUPPORTING_ONLY = frozenset({"output_similarity"})  # shown, never part of p_value or the verdict
# --- end ---

VERDICT_RULE = (
    f"p_value = Bonferroni over the arm's tests (min(1, m * min p), inconclusive tests count with p = 1; "
    f"output_similarity is supporting evidence and not counted). "
    f"distilled: radioactivity (API or reading mode) or canary recall conclusive with min(1, m * p) <= "
    f"{DISTILLED_P:g}, and the "
    f"control arm not significant at {CONTROL_ALARM_P:g}; identity probes alone never suffice. "
    f"not_distilled: radioactivity conclusive and p_value > {NOT_DISTILLED_P:g}. inconclusive: otherwise."
)

LIMITS = [
    "Radioactivity needs the suspect to reproduce token-level statistics of our marked answers: a student "
    "trained on paraphrased, translated or heavily filtered outputs, or on a small share of our data, may "
    "carry no detectable trace (not_distilled then means 'no trace at this power', not innocence).",
    "The p-values are exact under the null that the suspect never trained on text marked with these keys: "
    "the keys are secret and independent of any other model. They say nothing about other forms of "
    "copying (e.g. weights, or data harvested before watermarking was on).",
    "Accounts are named only by their key's own test, Bonferroni over every account key; an account "
    "whose data was mixed with many others' may not be named even when the suspect is flagged.",
    "Identity probes are supporting evidence: a model can name us because public text talks about us, "
    "or be instructed to hide its origin. They never decide the verdict alone.",
    "Answers depend on the suspect's sampling parameters and prompts; the cache file keeps every answer "
    "so the run can be re-scored and checked.",
    # --- canary recall + output similarity (issue 6) ---
    "Canary recall only speaks if canaries were served (to accounts under watermark_canary, before the "
    "harvest) and the student memorized them; a distiller who drops appended side notes or trains on "
    "paraphrases removes them, so no recall is never evidence of innocence. A recalled canary names the "
    "accounts it was served to; canaries shared by several accounts name all of them.",
    "Output similarity is supporting evidence only and never enters p_value or the verdict: its null "
    "(teacher and reference interchangeable) does not hold by construction; related models or shared "
    "training data make a suspect resemble us without distillation.",
    # --- end ---
    # --- open-weights reading mode (issue 6) ---
    "Reading mode needs the suspect's weights and our tokenizer (its predictions are read as our token "
    "ids): a student with another tokenizer is tested by the API-mode test only. Its power comes mostly "
    "from texts the student trained on (memorized marked tokens); texts it never saw carry little signal "
    "for the Gumbel default keys.",
    # --- end ---
]

MEANING = {
    RADIOACTIVITY: "Probability that a model never trained on our watermarked answers produces text this "
    "aligned with one of our keys (exact, deduplicated, Bonferroni over every key).",
    "identity_probes": "Probability of the suspect naming our model/company at least this often if it did "
    "so no more than the reference (control model or configured rate). Supporting evidence only.",
    # --- canary recall + output similarity (issue 6) ---
    CANARY: "Probability that a model never trained on our canary-carrying answers names the secret "
    "completion of this many served canaries (exact: each completion is a secret uniform draw among "
    "public candidates). Accounts that received the recalled canaries are named.",
    "output_similarity": "Probability that the suspect's answers are at least this much closer to ours "
    "than to a reference model's if both were interchangeable (paired sign-flip test). Supporting "
    "evidence only: not in p_value or the verdict.",
    # --- end ---
    # --- open-weights reading mode (issue 6) ---
    READING: "Probability that a model never trained on text marked with our keys predicts, while reading "
    "our watermarked answers, next tokens this aligned with one of our keys (exact: only windows the "
    "model had not seen earlier in the text, each scored once; Bonferroni over every key).",
    # --- end ---
}


@dataclass
class Arm:
    label: str  # "suspect" | "control"
    target: dict[str, Any]
    tests: list[TestResult]
    accounts: list[dict[str, Any]]
    curve: list[tuple[int, float]]
    stats: dict[str, int] = field(default_factory=dict)
    verdict: str = "inconclusive"
    p_value: float = 1.0
    log10_p: float = 0.0
    reason: str = ""


def combined_log10_p(tests: Sequence[TestResult]) -> float:
    """log10 of min(1, m * min p) over the tests (inconclusive ones count in m with p = 1)."""
    if not tests:
        return 0.0
    best = min((t.log10_p for t in tests if not t.inconclusive), default=0.0)
    return min(0.0, math.log10(len(tests)) + best)


def decide(arm: Arm, control: Arm | None) -> None:
    """Apply the verdict rule to ``arm`` (in place)."""
    tests = [t for t in arm.tests if t.name not in SUPPORTING_ONLY]  # similarity: shown, not counted
    m = len(tests)
    arm.log10_p = combined_log10_p(tests)
    arm.p_value = 10.0**arm.log10_p
    radio = next((t for t in tests if t.name == RADIOACTIVITY), None)
    # the strongest conclusive deciding test (radioactivity or canary recall), Bonferroni over m
    lp_best, best = min(
        (
            (min(0.0, math.log10(m) + t.log10_p), t.name)
            for t in tests
            if t.name in DECIDING_ALL and not t.inconclusive
        ),
        default=(0.0, ""),
    )
    control_alarm = control is not None and control.log10_p <= math.log10(CONTROL_ALARM_P)
    if lp_best <= math.log10(DISTILLED_P) and control_alarm:
        arm.verdict = "inconclusive"
        arm.reason = (
            f"the control arm is itself significant (p = {control.p_value:.3g}): the setup is suspect"  # type: ignore[union-attr]
        )
    elif lp_best <= math.log10(DISTILLED_P):
        arm.verdict = "distilled"
        label = "radioactivity" if best == RADIOACTIVITY else best.replace("_", " ")
        arm.reason = f"{label} log10 p (x{m} tests) = {lp_best:.2f} <= log10 {DISTILLED_P:g}"
    elif radio is None or radio.inconclusive:
        arm.verdict = "inconclusive"
        arm.reason = (
            "the radioactivity test is inconclusive (too little scored text)"
            if radio
            else "no radioactivity test"
        )
    elif arm.p_value > NOT_DISTILLED_P:
        arm.verdict = "not_distilled"
        arm.reason = f"enough scored text and no test below {NOT_DISTILLED_P:g} (p = {arm.p_value:.3g})"
    else:
        arm.verdict = "inconclusive"
        arm.reason = f"evidence between the thresholds (p = {arm.p_value:.3g})"


def _arm_json(arm: Arm) -> dict[str, Any]:
    return {
        "target": arm.target,
        "verdict": arm.verdict,
        "p_value": arm.p_value,
        "log10_p": arm.log10_p,
        "reason": arm.reason,
        "tests": [t.as_json() for t in arm.tests],
        "accounts": arm.accounts,
        "curve": [{"n_scored": n, "log10_p": lp} for n, lp in arm.curve],
        "queries": arm.stats,
    }


def build_report(
    suspect: Arm,
    control: Arm | None,
    *,
    command: str,
    keys: Sequence[dict[str, Any]],
    settings: dict[str, Any],
) -> dict[str, Any]:
    if control is not None:
        decide(control, None)
    decide(suspect, control)
    out = _arm_json(suspect)
    out.pop("target")
    return {
        "verdict": suspect.verdict,
        "p_value": suspect.p_value,
        "log10_p": suspect.log10_p,
        "reason": suspect.reason,
        "suspect": suspect.target,
        "tests": out["tests"],
        "accounts": suspect.accounts,
        "curve": out["curve"],
        "queries": out["queries"],
        "control": _arm_json(control) if control is not None else None,
        "verdict_rule": VERDICT_RULE,
        "thresholds": {
            "distilled": DISTILLED_P,
            "not_distilled": NOT_DISTILLED_P,
            "control_alarm": CONTROL_ALARM_P,
        },
        "command": command,
        "keys": list(keys),
        "settings": settings,
        "limits": LIMITS,
        "not_run": [
            *(
                []
                if any(t["name"] == READING for t in out["tests"])
                else ["radioactivity_reading (open weights only: audit with --suspect-path)"]
            ),
        ],
    }


def _plot(arms: Sequence[Arm]) -> str:
    """A PNG (base64) of log10 p accumulating with scored tokens, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    for arm in arms:
        if arm.curve:
            xs, ys = zip(*arm.curve, strict=True)
            ax.plot(
                xs,
                [y if math.isfinite(y) else -1e300 for y in ys],
                marker="o",
                ms=3,
                label=f"{arm.label}: {arm.target.get('model')}",
            )
    ax.axhline(
        math.log10(DISTILLED_P), color="red", ls="--", lw=1, label=f"distilled threshold ({DISTILLED_P:g})"
    )
    ax.axhline(
        math.log10(NOT_DISTILLED_P),
        color="grey",
        ls=":",
        lw=1,
        label=f"not_distilled above ({NOT_DISTILLED_P:g})",
    )
    ax.set_xlabel("scored tokens (deduplicated)")
    ax.set_yscale("symlog", linthresh=10.0)  # thresholds stay readable next to very strong evidence
    ax.set_ylabel("log10 p (Bonferroni over keys)")
    ax.set_title("Radioactivity evidence accumulating with the suspect's answers")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt_p(p: float) -> str:
    return "0" if p <= 0 else f"{p:.3g}"


def _test_row(t: TestResult) -> str:
    flag = " (inconclusive)" if t.inconclusive else ""
    return (
        f"<tr><td>{html.escape(t.name)}</td><td>{_fmt_p(t.p_value)} (log10 {t.log10_p:.2f}){flag}</td>"
        f"<td>{t.n}</td><td>{html.escape(MEANING.get(t.name, ''))}</td><td>{html.escape(t.detail)}</td></tr>"
    )


def _tests_table(arm: Arm) -> str:
    rows = "".join(_test_row(t) for t in arm.tests)
    return (
        f"<h3>{html.escape(arm.label)}: {html.escape(str(arm.target.get('model')))} at "
        f"{html.escape(str(arm.target.get('url')))} &mdash; <b>{html.escape(arm.verdict)}</b> "
        f"(p = {_fmt_p(arm.p_value)}, log10 p = {arm.log10_p:.2f})</h3><p>{html.escape(arm.reason)}</p>"
        "<table><tr><th>test</th><th>p-value</th><th>n</th><th>what it means</th><th>detail</th></tr>"
        f"{rows}</table>"
    )


def _account_item(a: dict[str, Any]) -> str:
    who = html.escape(str(a.get("account") or a.get("ident")))
    key = html.escape(f"{a.get('key_id')} v{a.get('key_version')}")
    return (
        f"<li>{who} (id {html.escape(str(a.get('ident')))}, key {key}): adjusted p = "
        f"{_fmt_p(float(a['p_value_adj']))}, log10 = {float(a['log10_p_adj']):.2f}</li>"
    )


def render_html(report: dict[str, Any], suspect: Arm, control: Arm | None) -> str:
    arms = [suspect] + ([control] if control is not None else [])
    acc = "".join(_account_item(a) for a in suspect.accounts) or "<li>none named</li>"
    keys = ", ".join(html.escape(f"{k['key_id']} ({k['scope']} v{k['version']})") for k in report["keys"])
    limits = "".join(f"<li>{html.escape(x)}</li>" for x in report["limits"])
    not_run = "".join(f"<li>{html.escape(x)}</li>" for x in report["not_run"])
    colour = {"distilled": "#b00020", "not_distilled": "#1b5e20"}.get(report["verdict"], "#8a6d00")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>antidistill audit: {html.escape(report["verdict"])}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse;font-size:90%}}td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}
code{{word-break:break-all}}</style></head><body>
<h1>Distillation audit</h1>
<p style="font-size:140%">Verdict: <b style="color:{colour}">{html.escape(report["verdict"])}</b>,
p = {_fmt_p(report["p_value"])} (log10 p = {report["log10_p"]:.2f}). {html.escape(report["reason"])}</p>
<p><small>Rule: {html.escape(report["verdict_rule"])}</small></p>
<h2>Tests (suspect and control side by side)</h2>
{"".join(_tests_table(a) for a in arms)}
<h2>Evidence accumulating with tokens</h2>
<img alt="log10 p versus scored tokens" src="data:image/png;base64,{_plot(arms)}">
<h2>Accounts implicated</h2><ul>{acc}</ul>
<h2>Reproduce</h2><p>Command:</p><pre><code>{html.escape(report["command"])}</code></pre>
<p>Keys tested ({len(report["keys"])}, public ids only): <code>{keys}</code></p>
<h2>Limits of this evidence</h2><ul>{limits}</ul>
<h2>Tests not run in this version</h2><ul>{not_run}</ul>
</body></html>
"""


def write_report(
    out_dir: Path, report: dict[str, Any], suspect: Arm, control: Arm | None
) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, hpath = out_dir / "report.json", out_dir / "report.html"
    jpath.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    hpath.write_text(render_html(report, suspect, control), encoding="utf-8")
    return jpath, hpath
