"""Train a student on harvested (prompt, answer) pairs on CPU, as a distiller would.

Two kinds (``StudentConfig.kind``):

* ``gpt2``: a small GPT-2 built from a config (no pre-trained weights; our tokenizer), trained from
  scratch on the pairs. Cheap; it learns by memorizing the harvested answers.
* ``lora``: LoRA adapters (rank ``lora_rank`` on the attention projections) on a copy of the teacher
  (SmolLM2), merged into the weights before saving. The adapters are the textbook ``W + (alpha/r) B A``
  (B starts at zero), written out here in a few lines instead of adding a dependency.

Pairs are rendered with our tokenizer's chat template exactly as the gateway rendered them, followed
by the answer and the end-of-turn token; the loss covers the answer tokens only. Batches are sorted by
length (padding to a fixed length is several times slower on CPU). The student is saved with its
tokenizer as a plain transformers directory, loadable by ``antidistill audit --suspect-path``.
"""

from __future__ import annotations

import copy
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STUDENT_KINDS = ("gpt2", "lora")


@dataclass(frozen=True)
class StudentConfig:
    kind: str = "gpt2"
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    epochs: int = 8
    lr: float = 3e-3
    batch_tokens: int = 2048
    max_len: int = 384
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in STUDENT_KINDS:
            raise ValueError(f"unknown student kind {self.kind!r}: {' | '.join(STUDENT_KINDS)}")


def render_pair(tokenizer: Any, prompt: str, answer: str, max_len: int) -> tuple[list[int], int]:
    """(ids, n_prompt): the chat-templated prompt as the gateway renders it, the answer, end of turn."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        p = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    else:
        p = list(tokenizer(prompt)["input_ids"])
    a = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    eos = tokenizer.eos_token_id
    ids = p + a + ([int(eos)] if eos is not None else [])
    if len(ids) > max_len:  # keep the answer: cut the prompt's head first
        cut = min(len(p) - 1, len(ids) - max_len)
        p_len = len(p) - max(0, cut)
        ids = ids[max(0, cut) :][:max_len]
        return ids, max(1, p_len)
    return ids, len(p)


class LoraLinear:
    """Factory namespace: wraps an ``nn.Linear`` with a low-rank update (see module docstring)."""

    @staticmethod
    def wrap(base: Any, rank: int, alpha: float) -> Any:
        import torch
        from torch import nn

        class _Lora(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.base = base
                self.scale = alpha / rank
                self.lora_a = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
                self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))

            def forward(self, x: Any) -> Any:
                return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

            def merged(self) -> Any:
                with torch.no_grad():
                    self.base.weight += self.scale * (self.lora_b @ self.lora_a)
                return self.base

        return _Lora()


def _apply_lora(model: Any, cfg: StudentConfig) -> list[tuple[Any, str, Any]]:
    model.requires_grad_(False)
    wrapped = []
    for _name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in cfg.lora_targets and type(child).__name__ == "Linear":
                lora = LoraLinear.wrap(child, cfg.lora_rank, cfg.lora_alpha)
                setattr(module, child_name, lora)
                wrapped.append((module, child_name, lora))
    if not wrapped:
        raise ValueError(f"no Linear layer named {cfg.lora_targets} to adapt")
    return wrapped


def build_student(cfg: StudentConfig, tokenizer: Any, vocab_size: int, teacher: Any = None) -> Any:
    import torch

    torch.manual_seed(cfg.seed)
    if cfg.kind == "lora":
        if teacher is None:
            raise ValueError("a LoRA student needs the teacher model")
        model = copy.deepcopy(teacher)
        _apply_lora(model, cfg)
        model.train()
        return model
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=cfg.max_len,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    model.train()
    return model


def _batches(lengths: Sequence[int], batch_tokens: int, rng: random.Random) -> list[list[int]]:
    """Indices grouped by similar length, about ``batch_tokens`` tokens per batch, shuffled."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > batch_tokens:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


@dataclass(frozen=True)
class TrainStats:
    examples: int
    answer_tokens: int
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    params_trained: int

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def train_student(
    pairs: Sequence[tuple[str, str]],
    tokenizer: Any,
    vocab_size: int,
    cfg: StudentConfig,
    out_dir: Path,
    *,
    teacher: Any = None,
    progress: bool = True,
    desc: str = "training student",
) -> TrainStats:
    """Train on ``pairs`` and save the student (weights + tokenizer) to ``out_dir``."""
    import time

    import torch
    import torch.nn.functional as F

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    data = [render_pair(tokenizer, p, a, cfg.max_len) for p, a in pairs if a]
    if not data:
        raise ValueError("no training pairs")
    model = build_student(cfg, tokenizer, vocab_size, teacher)
    params = [p for p in model.parameters() if p.requires_grad]
    head = model.get_output_embeddings()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    pad = int(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0)
    lengths = [len(ids) for ids, _ in data]
    plan = [_batches(lengths, cfg.batch_tokens, rng) for _ in range(cfg.epochs)]
    total = sum(len(p) for p in plan)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, total // 20)) * max(0.05, 1 - s / max(1, total))
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr)
    t0 = time.perf_counter()
    first = last = float("nan")
    step = 0
    try:
        for epoch_batches in plan:
            for batch in epoch_batches:
                rows = [data[i] for i in batch]
                width = max(len(ids) for ids, _ in rows)
                x = torch.full((len(rows), width), pad, dtype=torch.long)
                labels = torch.full((len(rows), width), -100, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for j, (ids, n_prompt) in enumerate(rows):
                    x[j, : len(ids)] = torch.tensor(ids)
                    mask[j, : len(ids)] = 1
                    labels[j, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
                # the output layer (49k-wide) dominates the cost: apply it to answer positions only
                hidden = model.base_model(input_ids=x, attention_mask=mask).last_hidden_state
                target = labels[:, 1:]
                sel = target != -100
                logits = head(hidden[:, :-1][sel])
                loss = F.cross_entropy(logits, target[sel])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                step += 1
                last = float(loss.detach())
                if step == 1:
                    first = last
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last:.3f}")
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    if cfg.kind == "lora":
        for module, name, lora in _lora_modules(model):
            setattr(module, name, lora.merged())
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return TrainStats(
        examples=len(data),
        answer_tokens=sum(len(ids) - n for ids, n in data),
        steps=step,
        seconds=round(seconds, 1),
        first_loss=round(first, 4),
        last_loss=round(last, 4),
        params_trained=sum(p.numel() for p in params),
    )


def _lora_modules(model: Any) -> list[tuple[Any, str, Any]]:
    out = []
    for module in model.modules():
        for name, child in module.named_children():
            if hasattr(child, "merged") and hasattr(child, "lora_a"):
                out.append((module, name, child))
    return out
