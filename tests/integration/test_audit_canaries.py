"""Canary recall and output similarity end to end: the gateway serves canaries to flagged accounts;
a "student" that memorized one harvester's answers is audited next to a control model.

* The gateway (fake backend: it echoes the prompt) runs live on loopback. 12 accounts of the trusted
  tier are elevated (their tier's only action is ``watermark_canary``); one of them, the harvester,
  sends 60 prompts, the others 12 each; 8 ordinary accounts send prompts too and never get one.
* The student answers a question about a cue with the harvested paragraph that mentions it (it
  "memorized" the harvester's answers) and echoes any other prompt (it learned to answer like the
  teacher). The control answers every prompt with the same generic text.
* The audit reads the served canaries from the gateway's event log, asks both models about them,
  and compares their answers with the teacher's (the gateway itself, ``--teacher-url``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from antidistill.cli.main import app as cli
from antidistill.gateway.app import create_app
from antidistill.gateway.runtime import Runtime
from antidistill.risk.types import Finding
from antidistill.watermark import texts as wm_texts
from antidistill.watermark.canaries import CanaryBook
from antidistill.watermark.keys import Keyring
from antidistill.watermark.keystore import KeyDirectory
from tests.helpers import gateway_settings, live_server
from tests.integration.test_watermark_cli import text_tokenizer

SECRET_HEX = "5e" * 32
N_FLAGGED, N_ORDINARY = 12, 8
runner = CliRunner()


def _reply(text: str, model: str) -> JSONResponse:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    return JSONResponse({"object": "chat.completion", "model": model, "choices": [choice]})


_COMMON = {"What", "Where", "Complete", "The", "Who", "Which"}


def student_app(harvested: list[str]) -> Starlette:
    """Memorized the harvested answers: a prompt naming a rare capitalized word gets the paragraph
    that has it; anything else is echoed (as the teacher, the fake backend, does)."""
    paragraphs = [p for text in harvested for p in text.split("\n\n")]

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        rare = {w for w in re.findall(r"[A-Z][a-z]{4,}", prompt) if w not in _COMMON}
        for p in paragraphs:
            if rare & set(re.findall(r"\w+", p)):
                return _reply(p, body["model"])
        return _reply(prompt, body["model"])

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def control_app() -> Starlette:
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        return _reply("I am a helpful assistant. I cannot say much about that, sorry.", body["model"])

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@dataclass
class World:
    config: Path
    gateway_url: str
    teacher_key: str
    student_url: str
    control_url: str
    harvester: str  # account id
    flagged: list[str]
    book: CanaryBook
    served_to_harvester: set[int]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("audit-canaries")
    secret_file = root / "wm.secret"
    secret_file.write_text(SECRET_HEX + "\n")
    secret_file.chmod(0o600)
    settings = gateway_settings(root, **{"watermark.canary_rate": 0.5, "limits.max_tokens_cap": 1024})
    config = root / "antidistill.toml"
    config.write_text(
        f'database_url = "{settings.database_url}"\n[watermark]\nmaster_secret_file = "{secret_file}"\n'
    )
    app = create_app(settings)
    with live_server(app) as gw:
        rt: Runtime = app.state.rt
        store = rt.store
        tok = text_tokenizer()  # a deployment key, so the radioactivity test has a key to test with
        KeyDirectory(Keyring(bytes.fromhex(SECRET_HEX), tok.fingerprint, tok.vocab_size), store).current(
            "deployment", "default"
        )
        keys: dict[str, str] = {}
        flagged: list[str] = []
        for i in range(N_FLAGGED + N_ORDINARY):
            acc = store.create_account(f"acct-{i:02d}", "trusted")
            keys[acc.id] = store.create_api_key(acc.id)[0]
            if i < N_FLAGGED:
                flagged.append(acc.id)
                f = Finding("account", acc.id, time.time(), 0.95, False, ("harvesting-like traffic",))
                store.record_findings([f])
        harvester = flagged[3]
        harvested: list[str] = []
        with httpx.Client(base_url=gw, timeout=30) as http:
            for acc_id, key in keys.items():
                n = 60 if acc_id == harvester else 12
                for j in range(n):
                    prompt = f"Please explain idea number {j} of account {acc_id[-4:]} in plain words."
                    r = http.post(
                        "/v1/chat/completions",
                        headers={"Authorization": f"Bearer {key}"},
                        json={"model": "test-model", "messages": [{"role": "user", "content": prompt}]},
                    )
                    assert r.status_code == 200, r.text
                    if acc_id == harvester:
                        harvested.append(r.json()["choices"][0]["message"]["content"])
        rt.events.flush()  # type: ignore[attr-defined]
        book = CanaryBook(bytes.fromhex(SECRET_HEX))
        served = {
            int(e.params["canary"]["id"])
            for e in store.iter_events(account_id=harvester)
            if "canary" in e.params
        }
        assert served and served <= set(book.subset(harvester))
        for acc_id in keys:
            if acc_id not in flagged:
                assert not any("canary" in e.params for e in store.iter_events(account_id=acc_id))
        teacher_key = keys[next(a for a in keys if a not in flagged)]
        with live_server(student_app(harvested)) as s_url, live_server(control_app()) as c_url:
            yield World(config, gw, teacher_key, s_url, c_url, harvester, flagged, book, served)


@pytest.fixture(autouse=True)
def _cached_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wm_texts, "load_text_tokenizer", lambda settings: text_tokenizer())


def _audit(world: World, out: Path, suspect: str, control: str | None, *extra: str) -> Any:
    args = ["audit", "--suspect-url", suspect, "--suspect-model", "student", "--out", str(out)]
    if control is not None:
        args += ["--control-url", control, "--control-model", "generic"]
    args += ["--n-prompts", "30", "--no-progress", "--config", str(world.config)]
    args += ["--teacher-url", world.gateway_url, "--teacher-model", "test-model"]
    env = {"ANTIDISTILL_TEACHER_API_KEY": world.teacher_key}
    return runner.invoke(cli, [*args, *extra], env=env)


def _test(tests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(t for t in tests if t["name"] == name)


def test_student_recalls_served_canaries_and_the_harvester_is_named(world: World, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = _audit(world, out, world.student_url, world.control_url)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    canary = _test(report["tests"], "canary_recall")
    assert not canary["inconclusive"] and canary["log10_p"] < -8
    assert canary["recalled"] == len(world.served_to_harvester)
    assert set(canary["recalled_ids"]) == world.served_to_harvester
    assert canary["served_accounts"] == N_FLAGGED and canary["asked"] == canary["served_canaries"]
    assert canary["unserved_control"]["recalled"] == 0
    # the verdict comes from canary recall (the student's echoes carry no scorable watermark)
    assert _test(report["tests"], "radioactivity_api")["inconclusive"]
    assert report["verdict"] == "distilled" and "canary recall" in report["reason"]
    named = [a for a in report["accounts"] if a.get("evidence") == "canary_recall"]
    assert named[0]["account_id"] == world.harvester and named[0]["log10_p_adj"] < -8
    assert named[0]["recalled_only_here"] >= 1
    assert all(a["account_id"] in world.flagged for a in named)
    # similarity to the teacher (the gateway) vs the control model: supporting, not in p_value
    sim = _test(report["tests"], "output_similarity")
    assert sim["supporting_only"] and not sim["inconclusive"] and sim["p_value"] < 1e-3
    assert sim["mean_cosine_teacher"] > sim["mean_cosine_reference"]
    assert report["settings"]["canaries"]["pool_id"] == world.book.pool_id
    # the control arm, same tests: nothing recalled, nothing flagged
    control = report["control"]
    c_canary = _test(control["tests"], "canary_recall")
    assert c_canary["inconclusive"] and c_canary["recalled"] == 0 and c_canary["p_value"] == 1.0
    assert _test(control["tests"], "output_similarity")["inconclusive"]  # no independent reference
    assert control["verdict"] != "distilled" and control["accounts"] == []
    html = (out / "report.html").read_text()
    assert "canary_recall" in html and "output_similarity" in html and "Supporting" in html
    # no canary text (the secret completions) leaks into the report or the command line output
    everything = result.output + (out / "report.json").read_text() + html
    for i in world.served_to_harvester:
        assert world.book.canary(i).completion not in everything


def test_control_alone_recalls_nothing_and_similarity_never_decides(world: World, tmp_path: Path) -> None:
    out = tmp_path / "clean"
    result = _audit(world, out, world.control_url, None, "--reference-url", world.student_url,
                    "--reference-model", "student")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    canary = _test(report["tests"], "canary_recall")
    assert canary["inconclusive"] and canary["p_value"] == 1.0 and report["accounts"] == []
    sim = _test(report["tests"], "output_similarity")
    assert not sim["inconclusive"] and sim["p_value"] > 0.5  # closer to the reference than to us
    assert report["verdict"] != "distilled" and report["p_value"] > 1e-3
