"""Watermark schemes: framework-free math (numpy + scipy), a registry of name -> class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from antidistill.errors import ConfigError
from antidistill.watermark.schemes.base import KeyedScheme, SamplingKnobs, SecretKey, WatermarkScheme
from antidistill.watermark.schemes.gumbel import GumbelScheme
from antidistill.watermark.schemes.kgw import KgwScheme

SCHEMES: dict[str, type[KeyedScheme]] = {
    GumbelScheme.name: GumbelScheme,
    KgwScheme.name: KgwScheme,
}


def build_scheme(name: str, params: Mapping[str, Any] | None = None) -> KeyedScheme:
    """Resolve a scheme from the registry; a bad name or parameter raises ConfigError."""
    cls = SCHEMES.get(name)
    if cls is None:
        raise ConfigError(f"unknown watermark scheme {name!r}; known: {', '.join(sorted(SCHEMES))}")
    try:
        return cls.from_params(params or {})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad {name} watermark parameters: {exc}") from exc


__all__ = [
    "SCHEMES",
    "GumbelScheme",
    "KeyedScheme",
    "KgwScheme",
    "SamplingKnobs",
    "SecretKey",
    "WatermarkScheme",
    "build_scheme",
]
