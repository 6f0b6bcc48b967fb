"""The risk engine over a real store: the worker reads events after its cursor, stores findings and
the risk state, survives a restart (rebuilding its state without duplicating findings), and the
``analyze``/``replay`` commands run it from the CLI. SQLite here; the store contract tests cover
Postgres for the same methods."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from antidistill.cli.main import app
from antidistill.clock import ManualClock
from antidistill.evaluation import replay as rp
from antidistill.evaluation.detection import benign_only
from antidistill.evaluation.traffic import generate_trace, preset, write_trace_jsonl
from antidistill.risk.calibration import Calibration
from antidistill.risk.engine import RiskEngine
from antidistill.risk.worker import RiskWorker, to_risk_event
from antidistill.store import open_store
from antidistill.store.base import Event

T0 = 1_767_571_200.0
CUE = "Think step by step and show your complete chain of thought before the final answer."


@pytest.fixture(scope="module")
def cal_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    events = benign_only(generate_trace(replace(preset("small", 21), split="calib", n_benign_accounts=800)))
    cal = rp.calibrate(events, rp.make_embedder("hashing"), 0.01, progress=False)
    path = tmp_path_factory.mktemp("cal") / "cal.npz"
    cal.save(path)
    return path


def _event(i: int, account: str, text: str, status: int = 200) -> Event:
    return Event(
        id=uuid.uuid4().hex,
        ts=T0 + 40.0 * i,
        account_id=account,
        key_id="k",
        client_ip="198.51.100.9",
        user_agent="python-requests/2.31",
        endpoint="chat",
        model="m",
        request={"messages": [{"role": "user", "content": text}]},
        params={},
        response="x" * 400,
        prompt_tokens=25,
        completion_tokens=800,
        latency_ms=5.0,
        status=status,
    )


def _harvest(n: int, account: str, start: int = 0) -> list[Event]:
    topics = ["prime numbers", "photosynthesis", "binary search", "the French revolution", "tax law"]
    return [
        _event(start + i, account, f"Explain {topics[i % 5]} in depth, case {i}. {CUE}") for i in range(n)
    ]


def test_to_risk_event_skips_errors_and_reads_prompts() -> None:
    assert to_risk_event(_event(0, "a", "hi", status=429)) is None
    e = _event(0, "a", "hello")
    r = to_risk_event(e, "card-1")
    assert r is not None and r.last_user == "hello" and r.payment_fingerprint == "card-1"
    comp = replace(e, endpoint="completion", request={"prompt": "Once upon a time"})
    r2 = to_risk_event(comp)
    assert r2 is not None and r2.last_user == "Once upon a time"


def test_worker_scores_stores_and_resumes(tmp_path: Path, cal_file: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    store.migrate()
    acc = store.create_account("harvester")
    store.insert_events(_harvest(600, acc.id))
    clock = ManualClock(T0 + 40.0 * 2000)
    cal = Calibration.load(cal_file)
    w = RiskWorker(store, RiskEngine(cal, rp.make_embedder("hashing")), batch_size=128, clock=clock)
    assert w.step() == 600
    state = store.risk_state("account", acc.id)
    assert state is not None and state.flagged and state.first_flagged_at is not None
    assert state.reasons and state.requests_seen >= 384
    n_findings = len(store.findings_for("account", acc.id, limit=1000))
    assert n_findings == w.stats.findings > 0
    assert w.step() == 0  # nothing new: nothing re-read
    # restart: a new worker rebuilds from the store and scores only what came after the cursor
    w.release()  # a clean stop gives up the lease
    store.insert_events(_harvest(200, acc.id, start=600))
    w2 = RiskWorker(store, RiskEngine(cal, rp.make_embedder("hashing")), batch_size=128, clock=clock)
    assert w2.step() == 200
    assert w2.engine.accounts[acc.id].state.n == 800  # the rebuilt history plus the new events
    after = store.findings_for("account", acc.id, limit=1000)
    assert len(after) == n_findings + w2.stats.findings  # the rebuild stored nothing twice
    store.close()


def test_one_worker_scores_the_others_stand_by_and_take_over(tmp_path: Path, cal_file: Path) -> None:
    """Several workers on one store (each gateway replica's embedded engine, analyze processes):
    one holds the lease and scores; when it stops, a standby takes over from the cursor with a
    state rebuilt from the store, so every finding is stored once."""
    store = open_store(f"sqlite:///{tmp_path / 'lease.db'}")
    store.migrate()
    acc = store.create_account("harvester")
    store.insert_events(_harvest(300, acc.id))
    clock = ManualClock(T0 + 40.0 * 2000)
    cal = Calibration.load(cal_file)
    a, b = (
        RiskWorker(store, RiskEngine(cal, rp.make_embedder("hashing")), batch_size=64, clock=clock)
        for _ in range(2)
    )
    assert a.step() == 300 and a.leading
    store.insert_events(_harvest(100, acc.id, start=300))
    assert b.step() == 0 and not b.leading and b.stats.events == 0  # standing by: reads nothing
    assert a.step() == 100
    a.release()
    store.insert_events(_harvest(100, acc.id, start=400))
    assert b.step() == 100 and b.leading
    assert b.engine.accounts[acc.id].state.n == 500  # rebuilt: a's 400 events plus the new 100
    assert a.step() == 0 and not a.leading
    findings = store.findings_for("account", acc.id, limit=1000)
    assert len(findings) == a.stats.findings + b.stats.findings
    assert len({(f.ts, f.requests_seen) for f in findings}) == len(findings)  # none stored twice
    # a holder that dies without releasing: the standby takes over once the lease runs out
    dead = RiskWorker(store, RiskEngine(cal, None), clock=clock, lease_ttl_s=0.2)
    b.release()
    assert dead.step() == 0 and dead.leading
    live = RiskWorker(store, RiskEngine(cal, None), clock=clock, lease_ttl_s=0.2)
    assert live.step() == 0 and not live.leading
    time.sleep(0.3)
    assert live.step() == 0 and live.leading
    store.close()


def test_analyze_once_refuses_while_another_worker_holds_the_lease(tmp_path: Path, cal_file: Path) -> None:
    db = f"sqlite:///{tmp_path / 'busy.db'}"
    store = open_store(db)
    store.migrate()
    assert store.acquire_lease("risk-engine", "gateway-replica-1", 60.0)
    store.close()
    res = CliRunner().invoke(
        app,
        ["analyze", "--once", "--database-url", db],
        env={"ANTIDISTILL_RISK__CALIBRATION_FILE": str(cal_file), "ANTIDISTILL_RISK__EMBEDDER": "hashing"},
    )
    assert res.exit_code == 2 and "another risk worker holds the lease" in res.output, res.output


def test_worker_stays_behind_the_clock(tmp_path: Path, cal_file: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'lag.db'}")
    store.migrate()
    store.insert_events(_harvest(50, "acct"))
    clock = ManualClock(T0 + 40.0 * 20)  # only the first ~20 events are older than now - lag
    w = RiskWorker(store, RiskEngine(Calibration.load(cal_file), None), clock=clock, lag_s=1.0)
    assert w.step() == 20
    clock.advance(10_000)
    assert w.step() == 30
    store.close()


def test_analyze_once_cli(tmp_path: Path, cal_file: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    store = open_store(db)
    store.migrate()
    acc = store.create_account("h")
    store.insert_events(_harvest(300, acc.id))
    store.close()
    res = CliRunner().invoke(
        app,
        ["analyze", "--once", "--database-url", db],
        env={"ANTIDISTILL_RISK__CALIBRATION_FILE": str(cal_file), "ANTIDISTILL_RISK__EMBEDDER": "hashing"},
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["events"] == 300 and out["flagged_accounts"] == 1


def test_replay_cli_writes_one_line_per_account(tmp_path: Path, cal_file: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    events = generate_trace(replace(preset("small", 33), split="test"))
    write_trace_jsonl(events, trace)
    out = tmp_path / "findings.jsonl"
    res = CliRunner().invoke(
        app,
        [
            "replay",
            str(trace),
            "--out",
            str(out),
            "--calibration",
            str(cal_file),
            "--embedder",
            "hashing",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == len({e.account for e in events})
    keys = {"account", "score", "flagged", "first_flagged_ts", "requests_before_flag", "cluster", "reasons"}
    assert all(keys <= set(x) for x in lines)
    assert all(0.0 <= x["score"] <= 1.0 for x in lines)
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["requests"] == len(events)


def test_replay_cli_clear_errors(tmp_path: Path, cal_file: Path) -> None:
    res = CliRunner().invoke(app, ["replay", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "trace not found" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ts": 1, "account": "a", "messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    res = CliRunner().invoke(
        app,
        [
            "replay",
            str(bad),
            "--out",
            str(tmp_path / "o"),
            "--calibration",
            str(cal_file),
            "--embedder",
            "hashing",
            "-q",
        ],
    )
    assert res.exit_code == 2 and "line 2" in res.output
