"""A suspect (or control) model given as local open weights: a transformers directory or a GGUF file.

Same interface as the HTTP ``SuspectClient`` (``query`` / ``describe`` / ``stats`` / ``label``), with
the same cache and resume semantics: every generated answer is committed to the ``ResponseCache`` as
soon as its batch finishes, keyed by (``local:<path>#<weights fingerprint>``, model name, prompt,
params), so a crashed run regenerates nothing already done; ``budget`` caps the NEW prompts generated.
Plus what only open weights allow: ``predict_top1`` (teacher-forced next-token predictions, for the
reading-mode radioactivity test).

Loading is offline (``local_files_only``) and never runs model code (``trust_remote_code=False``); a
GGUF file is de-quantized by transformers (``gguf_file=``) and its HF copy cached, as for the teacher.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from antidistill.errors import ConfigError
from antidistill.forensics.suspect import Answer, ClientStats, ResponseCache, plan_queries

_FINGERPRINT_BYTES = 1 << 20
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def check_model_path(path: str | Path, option: str = "--suspect-path") -> Path:
    """The path, checked: an existing HF model directory (with config.json) or a ``.gguf`` file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"{option} {p}: no such file or directory")
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ConfigError(f"{option} {p}: a directory without config.json is not a transformers model")
        if not any(f.suffix in _WEIGHT_SUFFIXES for f in p.iterdir()):
            raise ConfigError(f"{option} {p}: no weight files (*.safetensors, *.bin) in the directory")
        return p.resolve()
    if p.suffix != ".gguf":
        raise ConfigError(f"{option} {p}: expected a transformers directory or a .gguf file")
    return p.resolve()


def weights_fingerprint(path: Path) -> str:
    """sha256 over the weight files' names, sizes and first MiB: a changed model gets a new cache key."""
    files = [path] if path.is_file() else sorted(f for f in path.iterdir() if f.suffix in _WEIGHT_SUFFIXES)
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\t{f.stat().st_size}\n".encode())
        with f.open("rb") as fh:
            digest.update(fh.read(_FINGERPRINT_BYTES))
    return digest.hexdigest()[:16]


def load_local_model(path: Path, *, torch_threads: int | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a checked path, offline, no remote code; eval mode, no gradients."""
    from antidistill.backends.model_loading import load_model
    from antidistill.settings import LocalBackendSettings

    loaded = load_model(LocalBackendSettings(model_path=str(path), torch_threads=torch_threads))
    tok = loaded.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return loaded.model, tok


@dataclass
class LocalSuspect:
    """Open weights as a suspect. ``model``/``tokenizer`` may be passed in (tests, experiments)."""

    path: str | Path
    cache: ResponseCache
    budget: int = 1000
    batch_size: int = 8
    torch_threads: int | None = None
    progress: bool = False
    label: str = "suspect"
    model: Any = None
    tokenizer: Any = None
    stats: ClientStats = field(default_factory=ClientStats)

    def __post_init__(self) -> None:
        if self.budget < 0 or self.batch_size < 1:
            raise ConfigError("budget must be >= 0 and batch_size >= 1")
        option = "--suspect-path" if self.label == "suspect" else f"--{self.label}-path"
        self.path = check_model_path(self.path, option)
        self.endpoint = f"local:{self.path}#{weights_fingerprint(self.path)}"
        self.model_name = self.path.stem if self.path.is_file() else self.path.name
        if (self.model is None) != (self.tokenizer is None):
            raise ValueError("pass both model and tokenizer, or neither")
        if self.model is None:
            self.model, self.tokenizer = load_local_model(self.path, torch_threads=self.torch_threads)
        elif self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    # ---- the SuspectClient interface ----------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.model_name

    def describe(self) -> dict[str, Any]:
        return {
            "url": None,
            "path": str(self.path),
            "endpoint": self.endpoint,
            "model": self.model_name,
            "budget": self.budget,
        }

    def query(self, prompts: Sequence[str], params: Mapping[str, Any] | None = None) -> list[Answer]:
        """One answer per prompt, in order: cache first, then generation within the budget."""
        params = dict(params or {})
        out, todo = plan_queries(
            self.cache, self.stats, self.endpoint, self.model_name, prompts, params, self.budget
        )
        bar = None
        if self.progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"generating ({self.label})", unit="prompt", file=sys.stderr)
        try:
            for b in range(0, len(todo), self.batch_size):
                chunk = todo[b : b + self.batch_size]
                self.stats.sent += len(chunk)
                self.stats.requests += 1
                try:
                    texts = self._generate([p for _, p, _ in chunk], params, seed_from=chunk[0][2])
                except Exception as e:  # a failing batch fails its prompts, not the audit
                    self.stats.failed += len(chunk)
                    for i, prompt, _ in chunk:
                        out[i] = Answer(prompt, None, error=f"{type(e).__name__}: {e}")
                    continue
                for (i, prompt, key), text in zip(chunk, texts, strict=True):
                    self.cache.put(key, self.endpoint, self.model_name, prompt, params, text)
                    out[i] = Answer(prompt, text)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return [
            a if a is not None else Answer(p, None, error="not run")
            for a, p in zip(out, prompts, strict=True)
        ]

    def _render(self, prompt: str) -> list[int]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            return list(tok(text, add_special_tokens=False)["input_ids"])
        return list(tok(prompt)["input_ids"])

    def _generate(self, prompts: Sequence[str], params: Mapping[str, Any], *, seed_from: str) -> list[str]:
        import torch

        temperature = float(params.get("temperature", 1.0))
        max_tokens = int(params.get("max_tokens", 256))
        top_p = float(params.get("top_p", 1.0))
        ids = [self._render(p) for p in prompts]
        limit = _max_positions(self.model)
        if limit is not None:
            ids = [x[-max(1, limit - max_tokens) :] for x in ids]
            max_tokens = min(max_tokens, limit - max(len(x) for x in ids))
        width = max(len(x) for x in ids)
        pad = int(self.tokenizer.pad_token_id)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])  # left padding
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        torch.manual_seed(int(seed_from[:12], 16))  # reproducible given the batch
        kw: dict[str, Any] = {"max_new_tokens": max(1, max_tokens), "pad_token_id": pad}
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kw.update(do_sample=False)
        eos = self.tokenizer.eos_token_id
        if eos is not None:
            kw["eos_token_id"] = int(eos)
        with torch.inference_mode():
            gen = self.model.generate(input_ids=input_ids, attention_mask=mask, **kw)
        out = []
        for row in gen[:, width:].tolist():
            if eos is not None and eos in row:
                row = row[: row.index(eos)]
            out.append(self.tokenizer.decode(row, skip_special_tokens=True))
        return out

    # ---- open weights only ---------------------------------------------------------------------------
    def predict_top1(
        self, sequences: Sequence[Sequence[int]], *, batch_tokens: int = 1024
    ) -> list[np.ndarray]:
        """Teacher-forced top-1 predictions: ``out[i][p]`` is the suspect's most likely token at position
        ``p`` of ``sequences[i]`` given the tokens before it (``-1`` at p = 0 and past the model's
        context). Batched by length (little padding); progress bar when ``progress``."""
        import torch

        limit = _max_positions(self.model)
        order = sorted(
            (i for i in range(len(sequences)) if len(sequences[i]) >= 2), key=lambda i: len(sequences[i])
        )
        out: list[np.ndarray] = [np.full(len(s), -1, dtype=np.int64) for s in sequences]
        bar = None
        if self.progress and sequences:
            from tqdm import tqdm

            bar = tqdm(total=len(sequences), desc=f"reading ({self.label})", unit="text", file=sys.stderr)
        pad = int(self.tokenizer.pad_token_id)
        rows_of = [list(sequences[i])[: limit or None] for i in range(len(sequences))]
        batches: list[list[int]] = []
        for i in order:  # shortest first: each batch pads to about the same length
            cur = batches[-1] if batches else None
            if cur is None or (len(cur) + 1) * max(2, len(rows_of[i])) > batch_tokens:
                batches.append([i])
            else:
                cur.append(i)
        try:
            for idx in batches:
                rows = [rows_of[i] for i in idx]
                width = max(len(r) for r in rows)
                x = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
                mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
                with torch.inference_mode():
                    pred = self.model(input_ids=x, attention_mask=mask).logits.argmax(dim=-1).numpy()
                for j, (i, r) in enumerate(zip(idx, rows, strict=True)):
                    out[i][1 : len(r)] = pred[j, : len(r) - 1]
                if bar is not None:
                    bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return out


def _max_positions(model: Any) -> int | None:
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def reading_docs(
    suspect: LocalSuspect, ids: Sequence[Sequence[int]], prompt_ids: Sequence[Sequence[int]] | None
) -> list[Any]:
    """Our texts (``ids``, with the ``prompt_ids`` they were served for) as read by the suspect: one
    ``ReadingDoc`` per text, cut where the suspect has no prediction (past its context length)."""
    from antidistill.forensics.reading import ReadingDoc

    prompts = [list(p) for p in prompt_ids] if prompt_ids is not None else [[] for _ in ids]
    preds = suspect.predict_top1([p + list(t) for p, t in zip(prompts, ids, strict=True)])
    out = []
    for p, t, pr in zip(prompts, ids, preds, strict=True):
        t = list(t)
        if not p and t:  # nothing predicts the first token: it becomes context
            p, t = t[:1], t[1:]
        mine = pr[len(p) : len(p) + len(t)]
        valid = int(np.argmax(mine < 0)) if (mine < 0).any() else len(t)
        if valid:
            out.append(ReadingDoc(tuple(p), tuple(t[:valid]), tuple(int(v) for v in mine[:valid])))
    return out
