"""Topic shift of one subject's prompts from benign traffic: the unbiased MMD² of its prompt
embeddings against a fixed benign reference sample (the MMD window statistic of
``detectors/mmd.py``, reused as one feature among many rather than as a detector of its own)."""

from __future__ import annotations

import numpy as np

from antidistill.risk.detectors.mmd import MmdWindowDetector


class TopicShift:
    def __init__(self, reference: np.ndarray) -> None:
        self._mmd = MmdWindowDetector(reference, window=2)
        self.reference = self._mmd.reference

    def mmd2(self, x: np.ndarray) -> float:
        """Unbiased MMD² between ``x`` and the reference; 0 for fewer than 2 rows."""
        return float(self._mmd.score(x)) if len(x) >= 2 else 0.0
