"""End to end with transformers: a tiny randomly initialized GPT-2 generates through our processors,
and the detector finds the watermark (and not in an unmarked control)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from antidistill.watermark import Detector, derive_key  # noqa: E402
from antidistill.watermark.adapters.hf import GumbelLogitsProcessor, KgwLogitsProcessor  # noqa: E402

VOCAB = 512
MASTER = b"hf-integration-master-secret-000"


@pytest.fixture(scope="module")
def model() -> Iterator[Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: extra threads only fight over the shared cores (10x slower)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=256,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=VOCAB + 1,
        pad_token_id=0,
    )
    yield transformers.GPT2LMHeadModel(cfg).eval()
    torch.set_num_threads(threads)


def _generate(model: Any, processor: object | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    torch.manual_seed(seed)
    prompt = torch.randint(1, VOCAB, (2, 6))
    procs = transformers.LogitsProcessorList([processor] if processor is not None else [])
    with torch.no_grad():
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            max_new_tokens=80,
            min_new_tokens=80,
            logits_processor=procs,
        )
    return prompt.numpy(), out[:, prompt.shape[1] :].numpy()


@pytest.mark.parametrize("scheme", ["gumbel", "kgw"])
def test_generate_then_detect(model: Any, scheme: str) -> None:
    key = derive_key(MASTER, "account", "acct-1", 1, scheme=scheme, tokenizer="tiny-gpt2", vocab_size=VOCAB)
    proc = (
        GumbelLogitsProcessor(key, rng=np.random.default_rng(0))
        if scheme == "gumbel"
        else KgwLogitsProcessor(key)
    )
    prompts, marked = _generate(model, proc, seed=1)
    d = Detector().detect(list(marked), [key], list(prompts))
    assert d.log10_p < -6, d.explanation
    control_prompts, plain = _generate(model, None, seed=2)
    assert Detector().detect(list(plain), [key], list(control_prompts)).log10_p > -3
