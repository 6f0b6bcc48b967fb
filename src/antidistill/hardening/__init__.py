"""Response hardening: what the gateway changes in an answer before the client sees it.

``strip_reasoning`` (policy action, ``[strip_reasoning]`` in the policy file): reasoning traces are
removed or replaced by a fixed-length summary, and copies of them in the visible answer redacted,
in JSON and streamed responses (``guard.ReasoningGuard``; the stream semantics and their bounds are
in its module docstring). ``tags`` splits ``<think>``-style blocks out of text as it streams;
``copies`` finds verbatim, partial and encoded copies of the reasoning.
"""

from __future__ import annotations

from antidistill.hardening.copies import ReasoningCorpus
from antidistill.hardening.guard import REDACTED, ChoiceFilter, GuardStats, ReasoningGuard, summary
from antidistill.hardening.tags import TagSplitter

__all__ = [
    "REDACTED",
    "ChoiceFilter",
    "GuardStats",
    "ReasoningCorpus",
    "ReasoningGuard",
    "TagSplitter",
    "summary",
]
