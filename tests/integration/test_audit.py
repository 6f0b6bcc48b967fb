"""``antidistill audit`` end to end against two fake suspects on loopback.

The "distilled" suspect answers every prompt with text generated under one account's key (the
watermark sampler's math over whole-word SmolLM2 tokens, decoded with the real tokenizer: see
``test_watermark_cli``) and says it is "Acme Nova". The control answers with unmarked text of the same
kind and calls itself a generic assistant. 120 accounts have recorded keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from antidistill.cli.main import app
from antidistill.forensics.identity import identity_prompts
from antidistill.settings import WatermarkSettings
from antidistill.store import open_store
from antidistill.watermark import texts as wm_texts
from antidistill.watermark.keys import WatermarkKey
from antidistill.watermark.keystore import load_master_secret
from tests.helpers import live_server
from tests.integration.test_watermark_cli import HARVESTER, marked_texts, record_accounts, text_tokenizer

N_ACCOUNTS = 120
N_PROMPTS = 60
runner = CliRunner()


def suspect_app(pool: list[str], identity: str) -> Starlette:
    """An OpenAI-compatible chat endpoint: identity probes get ``identity``; every other new prompt
    gets the next text of ``pool`` (the same prompt always gets the same answer). Every 7th request is
    refused once with a 429 to exercise the retries."""
    assigned: dict[str, str] = {}
    probes = set(identity_prompts())
    count = {"n": 0}

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        count["n"] += 1
        if count["n"] % 7 == 0:
            return JSONResponse(
                {"error": {"message": "slow down"}}, status_code=429, headers={"retry-after": "0"}
            )
        prompt = body["messages"][-1]["content"]
        text = identity if prompt in probes else assigned.setdefault(prompt, pool[len(assigned) % len(pool)])
        return JSONResponse(
            {
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
            }
        )

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@dataclass
class World:
    config: Path
    secret_hex: str
    harvester: WatermarkKey
    suspect_url: str
    control_url: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("audit")
    url = f"sqlite:///{root / 'wm.db'}"
    secret_file = root / "wm.secret"
    secret = load_master_secret(WatermarkSettings(master_secret_file=str(secret_file)))
    config = root / "antidistill.toml"
    config.write_text(f'database_url = "{url}"\n[watermark]\nmaster_secret_file = "{secret_file}"\n')
    store = open_store(url)
    store.migrate()
    try:
        harvester, keys = record_accounts(store, secret, n=N_ACCOUNTS)
    finally:
        store.close()
    assert len([k for k in keys if k.scope == "account"]) > N_ACCOUNTS >= 100
    marked = marked_texts(harvester, N_PROMPTS, seed=1)
    clean = marked_texts(None, N_PROMPTS, seed=2)
    distilled = suspect_app(marked, "I am Acme Nova, a language model trained by Acme.")
    control = suspect_app(clean, "I am a helpful AI assistant.")
    with live_server(distilled) as s_url, live_server(control) as c_url:
        yield World(config, secret_file.read_text().strip(), harvester, s_url, c_url)


@pytest.fixture(autouse=True)
def _cached_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wm_texts, "load_text_tokenizer", lambda settings: text_tokenizer())


def audit(world: World, out: Path, suspect: str, control: str | None, *extra: str) -> Any:
    args = ["audit", "--suspect-url", suspect, "--suspect-model", "nova", "--out", str(out)]
    if control is not None:
        args += ["--control-url", control, "--control-model", "generic"]
    args += ["--n-prompts", str(N_PROMPTS), "--name", "Acme", "--no-progress", "--config", str(world.config)]
    return runner.invoke(app, [*args, *extra], env={"ANTIDISTILL_SUSPECT_API_KEY": "sk-test-suspect"})


def test_distilled_suspect_is_flagged_and_the_harvester_named(world: World, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = audit(world, out, world.suspect_url, world.control_url)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["verdict"] == "distilled" and summary["accounts"] == [HARVESTER]
    assert summary["control_verdict"] == "not_distilled"
    report = json.loads((out / "report.json").read_text())
    assert {"verdict", "p_value", "tests", "accounts"} <= set(report)
    assert report["verdict"] == "distilled" and report["log10_p"] < -20
    for t in report["tests"]:
        assert {"name", "p_value", "n", "detail"} <= set(t)
    radio = next(t for t in report["tests"] if t["name"] == "radioactivity_api")
    assert not radio["inconclusive"] and radio["n"] >= 2000 and radio["n_keys"] == N_ACCOUNTS + 2
    assert radio["best_key"]["key_id"] == world.harvester.key_id
    ident = next(t for t in report["tests"] if t["name"] == "identity_probes")
    assert ident["p_value"] < 1e-6 and ident["method"] == "fisher_exact_one_sided"
    [acc] = report["accounts"]
    assert acc["account"] == HARVESTER and acc["key_id"] == world.harvester.key_id and acc["log10_p_adj"] < -6
    # the control arm, side by side: nothing found
    control = report["control"]
    c_radio = next(t for t in control["tests"] if t["name"] == "radioactivity_api")
    assert control["accounts"] == [] and c_radio["p_value"] > 1e-3 and not c_radio["inconclusive"]
    assert len(report["curve"]) >= 5 and report["curve"][-1]["log10_p"] == pytest.approx(radio["log10_p"])
    assert report["queries"]["retries"] > 0  # the 429s were retried
    assert "--suspect-url" in report["command"] and len(report["keys"]) == N_ACCOUNTS + 2
    html = (out / "report.html").read_text()
    assert "distilled" in html and "data:image/png;base64," in html and HARVESTER in html
    assert world.harvester.key_id in html and "Limits of this evidence" in html
    everything = result.output + (out / "report.json").read_text() + html
    assert world.secret_hex not in everything and "sk-test-suspect" not in everything
    assert world.harvester.secret.hex() not in everything

    # resumable: a second run on the same directory is answered from the cache, no new query
    again = audit(world, out, world.suspect_url, world.control_url)
    assert again.exit_code == 0, again.output
    rerun = json.loads((out / "report.json").read_text())
    assert rerun["queries"]["sent"] == 0 and rerun["queries"]["cache_hits"] > N_PROMPTS
    assert rerun["verdict"] == "distilled" and rerun["tests"][0]["p_value"] == radio["p_value"]


def test_unmarked_suspect_is_not_flagged(world: World, tmp_path: Path) -> None:
    out = tmp_path / "clean"
    result = audit(world, out, world.control_url, None, "--reference-rate", "0.05")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] in ("not_distilled", "inconclusive") and report["p_value"] > 1e-3
    assert report["accounts"] == [] and report["control"] is None
    assert (out / "report.html").is_file()


def test_too_little_text_is_inconclusive_and_bad_flags_fail_clearly(world: World, tmp_path: Path) -> None:
    out = tmp_path / "small"
    result = audit(world, out, world.suspect_url, None, "--budget", "45")  # 40 identity + 5 prompts
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    radio = report["tests"][0]
    assert radio["inconclusive"] and report["verdict"] == "inconclusive" and radio["n"] < 2000
    assert report["queries"]["skipped"] == N_PROMPTS - 5
    bad = runner.invoke(
        app, ["audit", "--suspect-url", "x", "--suspect-model", "m", "--out", str(out), "--suspect-path", "w"]
    )
    assert bad.exit_code == 2 and "not both" in bad.stderr  # URL or local weights, one suspect
