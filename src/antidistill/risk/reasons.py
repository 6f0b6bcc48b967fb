"""Findings explained in words: one sentence per feature that drove a score."""

from __future__ import annotations

import math

from antidistill.risk.features import BUSY_DAY, ActivityState


def _langs(state: ActivityState) -> str:
    langs = [lang for lang, _ in state.elicit_langs.most_common(4)]
    return f" (cues in: {', '.join(langs)})" if langs else ""


def feature_reason(name: str, value: float, neg_log_p: float, state: ActivityState) -> str:
    """A sentence for one feature, ending with how rare the value is among benign accounts of the
    same size (the empirical tail probability)."""
    p = math.exp(-neg_log_p)
    rare = f"; benign accounts of this size reach it with p = {p:.1g}"
    n = state.n
    if name == "peak_hour":
        text = f"{math.expm1(value):.0f} requests in its busiest hour"
    elif name == "peak_day":
        text = f"{math.expm1(value):.0f} requests in its busiest 24 hours"
    elif name == "busy_days":
        text = f"{state.busy_days} days with {BUSY_DAY} or more requests (sustained harvesting)"
    elif name == "regularity":
        text = f"machine-like regular timing between requests (regularity {value:.2f})"
    elif name == "hour_spread":
        text = f"active in {round(value * 24)} of the 24 hours of the day"
    elif name == "template_share":
        k = min(3, len(state.skeletons))
        text = f"{value:.0%} of {n} prompts share its {k} commonest template{'s' if k != 1 else ''}"
    elif name == "shared_templates":
        text = f"{value:.0%} of prompts use templates that other accounts also use"
    elif name == "elicitation":
        hits = sum(state.elicit_langs.values())
        text = f"{hits} of {n} prompts ask for step-by-step reasoning{_langs(state)}"
    elif name == "single_turn":
        text = f"{value:.0%} of requests are single-turn (no conversation)"
    elif name == "harvest_ratio":
        text = f"{value:.1f} answer tokens harvested per prompt token"
    elif name == "topic_focus":
        text = f"prompts concentrated on a narrow topic (centroid similarity {value:.2f})"
    elif name == "topic_shift":
        text = f"prompt topics unlike benign traffic (MMD² {value:.3f})"
    else:
        text = f"{name} = {value:.3g}"
    return text + rare
