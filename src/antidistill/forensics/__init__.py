"""Forensics: audit a suspect model and prove, with calibrated p-values, that it was distilled from ours.

``suspect`` queries a model behind an OpenAI-compatible API (budget, retries, resumable cache);
``radioactivity`` tests its answers for our watermark keys (and names accounts); ``identity`` asks it
who made it; ``report`` decides the verdict and writes report.json / report.html; ``audit`` runs it all.
"""

from antidistill.forensics.radioactivity import ProbeResult, TestResult

__all__ = ["ProbeResult", "TestResult"]
