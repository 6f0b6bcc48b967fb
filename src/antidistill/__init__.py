"""antidistill: detect, deter and prove unauthorized distillation of an LLM served over an API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("antidistill")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
