"""Open-weights suspect client (``--suspect-path``): path checks, cache / resume / budget like the HTTP
client, teacher-forced predictions, and the audit CLI on a local model. A tiny GPT-2 built from a
config with the real SmolLM2 tokenizer stands in for a suspect (no model hub, no teacher weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from antidistill.cli.main import app
from antidistill.errors import ConfigError
from antidistill.forensics.local_suspect import LocalSuspect, check_model_path, reading_docs
from antidistill.forensics.suspect import ResponseCache
from tests.integration.test_watermark_cli import text_tokenizer

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = text_tokenizer().tokenizer
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=text_tokenizer().vocab_size,
        n_positions=128,
        n_embd=32,
        n_layer=1,
        n_head=2,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    out = tmp_path_factory.mktemp("tiny-suspect")
    GPT2LMHeadModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_bad_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        check_model_path(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"without config\.json"):
        check_model_path(tmp_path)
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"transformers directory or a \.gguf"):
        check_model_path(tmp_path / "weights.txt")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="no weight files"):
        check_model_path(tmp_path, "--control-path")
    result = runner.invoke(app, ["audit", "--suspect-path", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no such file" in result.output
    result = runner.invoke(
        app, ["audit", "--suspect-path", str(tmp_path), "--suspect-url", "http://x", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "not both" in result.output


def test_cache_budget_and_resume(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = [f"Tell me about topic number {i}." for i in range(5)]
    params = {"temperature": 0.0, "max_tokens": 6}
    cache = ResponseCache(tmp_path / "cache.sqlite")
    first = LocalSuspect(tiny_model_dir, cache, budget=3, batch_size=2)
    got = first.query(prompts, params)
    assert [a.text is not None for a in got] == [True, True, True, False, False]
    assert got[3].skipped and first.stats.sent == 3 and first.stats.skipped == 2
    cache.close()
    # a new run on the same cache: the three done are read back, only the rest are generated
    cache = ResponseCache(tmp_path / "cache.sqlite")
    again = LocalSuspect(tiny_model_dir, cache, budget=2, batch_size=2)
    got2 = again.query(prompts, params)
    assert all(a.text is not None for a in got2)
    assert [a.cached for a in got2] == [True, True, True, False, False]
    assert again.stats.cache_hits == 3 and again.stats.sent == 2
    assert [a.text for a in got2[:3]] == [a.text for a in got[:3]]
    # greedy generation is deterministic: the same prompts with other params are new entries, same text
    third = LocalSuspect(tiny_model_dir, cache, budget=5, batch_size=5)
    got3 = third.query(prompts, {"temperature": 0.0, "max_tokens": 6, "sample": 1})
    assert third.stats.sent == 5 and [a.text for a in got3] == [a.text for a in got2]
    assert third.describe()["path"] == str(tiny_model_dir.resolve())
    assert third.endpoint.startswith("local:") and "#" in third.endpoint
    cache.close()


def test_predictions_are_the_teacher_forced_argmax(tiny_model_dir: Path, tmp_path: Path) -> None:
    suspect = LocalSuspect(tiny_model_dir, ResponseCache(tmp_path / "c.sqlite"), batch_size=2)
    seqs = [[5, 9, 200, 7, 7, 31], [1, 2], list(range(40, 70))]
    preds = suspect.predict_top1(seqs, batch_tokens=40)
    for seq, pred in zip(seqs, preds, strict=True):
        with torch.inference_mode():
            logits = suspect.model(input_ids=torch.tensor([seq])).logits[0]
        assert pred[0] == -1
        assert np.array_equal(pred[1:], logits.argmax(-1).numpy()[:-1])
    # past the model's context (128 positions) there is no prediction: the reading doc is cut there
    long = list(range(100, 300))
    docs = reading_docs(suspect, [long[10:]], [long[:10]])
    assert len(docs) == 1 and len(docs[0].prompt) == 10 and len(docs[0].text) == 118


def test_audit_cli_on_local_weights_runs_reading_mode(tiny_model_dir: Path, tmp_path: Path) -> None:
    """An untouched (random) model audited through the CLI: the reading test runs on the event log's
    watermarked answers and finds nothing; no account is named."""
    from antidistill.settings import WatermarkSettings
    from antidistill.store import open_store
    from antidistill.store.base import Event
    from antidistill.watermark.keystore import load_master_secret
    from tests.integration.test_watermark_cli import HARVESTER, marked_texts, record_accounts

    url = f"sqlite:///{tmp_path / 'wm.db'}"
    secret_file = tmp_path / "wm.secret"
    secret = load_master_secret(WatermarkSettings(master_secret_file=str(secret_file)))
    config = tmp_path / "antidistill.toml"
    config.write_text(f'database_url = "{url}"\n[watermark]\nmaster_secret_file = "{secret_file}"\n')
    store = open_store(url)
    store.migrate()
    harvester, _ = record_accounts(store, secret, n=20)
    texts = marked_texts(harvester, 30, seed=3)
    account = store.get_account(HARVESTER)
    assert account is not None
    store.insert_events(
        [
            Event(
                id=f"ev-{i}",
                ts=1000.0 + i,
                account_id=account.id,
                key_id=None,
                client_ip=None,
                user_agent=None,
                endpoint="chat",
                model="m",
                request={"messages": [{"role": "user", "content": f"question {i}"}]},
                params={},
                response=text,
                prompt_tokens=5,
                completion_tokens=60,
                latency_ms=1.0,
                status=200,
                watermark_key_id=harvester.key_id,
            )
            for i, text in enumerate(texts)
        ]
    )
    store.close()
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "audit",
            "--suspect-path",
            str(tiny_model_dir),
            "--out",
            str(out),
            "--n-prompts",
            "4",
            "--max-tokens",
            "8",
            "--identity-samples",
            "1",
            "--min-tokens",
            "200",
            "--no-progress",
            "--no-canaries",
            "--no-similarity",
            "--config",
            str(config),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    reading = next(t for t in report["tests"] if t["name"] == "radioactivity_reading")
    assert reading["n"] >= 200 and not reading["inconclusive"], reading["detail"]
    assert reading["p_value"] > 1e-3 and report["accounts"] == []
    assert report["suspect"]["path"] == str(tiny_model_dir.resolve())
    assert "--suspect-path" in report["command"]
    assert "radioactivity_reading" in (out / "report.html").read_text()


@pytest.mark.model
def test_a_gguf_file_loads_as_a_suspect(tmp_path: Path) -> None:
    """``--suspect-path model.gguf``: the embedded teacher's GGUF file itself (de-quantized through
    transformers' ``gguf_file=``, HF copy cached), with our tokenizer: greedy answers and predictions."""
    from antidistill.backends.model_loading import resolve_source
    from antidistill.settings import LocalBackendSettings

    source = resolve_source(LocalBackendSettings())
    assert source.gguf_file is not None
    gguf = source.directory / source.gguf_file
    suspect = LocalSuspect(gguf, ResponseCache(tmp_path / "c.sqlite"), batch_size=2, torch_threads=1)
    assert suspect.model_name == gguf.stem and suspect.describe()["path"] == str(gguf.resolve())
    [answer] = suspect.query(["What is the capital of France?"], {"temperature": 0.0, "max_tokens": 12})
    assert answer.text and "Paris" in answer.text
    ids = text_tokenizer().tokenizer("The capital of France is Paris.")["input_ids"]
    [pred] = suspect.predict_top1([ids])
    assert pred[0] == -1 and (pred[1:] >= 0).all()
