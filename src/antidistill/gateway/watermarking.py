"""Chooses the watermark of each request (filled in by the watermark module's keyring)."""

from __future__ import annotations

from antidistill.backends.base import Backend
from antidistill.gateway.runtime import Watermarker
from antidistill.settings import Settings


def build_watermarker(settings: Settings, backend: Backend) -> Watermarker | None:
    """No watermarker yet: returns None (answers are served unmarked)."""
    return None
