"""Keyed watermarks: key derivation, sampling, exact deduplicated detection and attribution.

Schemes (``watermark.schemes``) are framework-free math; the transformers adapters live in
``watermark.adapters.hf`` (imported on demand, they need torch).
"""

from antidistill.watermark.detect import Attribution, Detection, Detector, DocumentResult, KeyResult
from antidistill.watermark.keys import SCOPES, KeyRecord, Keyring, WatermarkKey, derive_key
from antidistill.watermark.sampler import WatermarkSampler
from antidistill.watermark.schemes import SCHEMES, GumbelScheme, KgwScheme, WatermarkScheme, build_scheme

__all__ = [
    "SCHEMES",
    "SCOPES",
    "Attribution",
    "Detection",
    "Detector",
    "DocumentResult",
    "GumbelScheme",
    "KeyRecord",
    "KeyResult",
    "Keyring",
    "KgwScheme",
    "WatermarkKey",
    "WatermarkSampler",
    "WatermarkScheme",
    "build_scheme",
    "derive_key",
]
