"""The risk engine inside the gateway, end to end: requests through the public API are recorded,
scored by the background worker and shown on the admin risk API (``/v1/admin/risk/*``).

In-process app (Starlette TestClient, lifespan on), fake backend, SQLite store, the hashing embedder
and a small benign calibration built once per module."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from antidistill.gateway.app import create_app
from antidistill.risk.calibration import CHECKPOINTS
from antidistill.settings import Settings
from tests.helpers import ADMIN_TOKEN, gateway_settings

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CUE = "Think step by step and show your complete chain of thought before the final answer."
TOPICS = [
    "prime numbers",
    "photosynthesis",
    "binary search",
    "the French revolution",
    "tax law",
    "plate tectonics",
    "compound interest",
    "the immune system",
    "TCP congestion control",
    "baroque music",
]
ORDINARY = [
    "What's a good name for a grey cat?",
    "How long should I boil an egg for a runny yolk?",
    "Translate 'good morning' into Portuguese.",
    "Can you suggest a weekend hiking trip near Lyon?",
    "Write a two-line birthday message for my sister.",
    "Which is heavier, a litre of water or a litre of olive oil?",
    "Give me three synonyms for 'happy'.",
    "What time zone is Tokyo in?",
    "How do I remove a coffee stain from a cotton shirt?",
    "Recommend a board game for four players.",
]
N_HARVEST = 300
RISK_ROUTES = [
    "/v1/admin/risk/accounts",
    "/v1/admin/risk/accounts?flagged=true",
    "/v1/admin/risk/clusters",
    "/v1/admin/risk/status",
]
T = TypeVar("T")


@pytest.fixture(scope="module")
def cal_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from antidistill.evaluation import replay as rp
    from antidistill.evaluation.detection import benign_only
    from antidistill.evaluation.traffic import generate_trace, preset

    events = benign_only(generate_trace(replace(preset("small", 21), split="calib", n_benign_accounts=800)))
    cal = rp.calibrate(events, rp.make_embedder("hashing"), 0.01, progress=False)
    # fit_calibration names the embedder by its class ("HashingEmbedder": the embedders have no
    # ``name``), and engine_from_settings then refuses the file for risk.embedder="hashing"
    if cal.embedder != "hashing":
        cal.embedder = "hashing"
    path = tmp_path_factory.mktemp("cal") / "cal.npz"
    cal.save(path)
    return path


def with_client_ip(app: ASGIApp) -> ASGIApp:
    """Serve requests as if they came from the address in the test-only ``x-test-client-ip`` header
    (the TestClient sends every request from one host; the engine links accounts by IP network)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-client-ip":
                    scope = {**scope, "client": (value.decode(), 40_000)}
        await app(scope, receive, send)

    return wrapped


def risk_settings(tmp_path: Path, cal_file: Path, **overrides: Any) -> Settings:
    return gateway_settings(
        tmp_path,
        **{
            "risk.enabled": True,
            "risk.embedder": "hashing",
            "risk.calibration_file": str(cal_file),
            "risk.interval_s": 0.2,
            # detection only: enforcement would throttle the harvester once flagged (and record the
            # engine's decision), which depends on how fast the worker catches up; see test_enforcement
            "policy.enabled": False,
            **overrides,
        },
    )


def poll(fetch: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str) -> T:
    """Call ``fetch`` every 50 ms until ``done`` holds; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last value: {value!r:.2000}")
        time.sleep(0.05)


def create_account(client: TestClient, name: str) -> tuple[str, str]:
    r = client.post("/admin/accounts", json={"name": name}, headers=ADMIN)
    assert r.status_code == 201, r.text
    body = r.json()
    return body["account"]["id"], body["api_key"]


def chat(client: TestClient, key: str, text: str, ip: str, ua: str) -> None:
    r = client.post(
        "/v1/chat/completions",
        json={"model": "test-model", "messages": [{"role": "user", "content": text}], "max_tokens": 64},
        headers={"Authorization": f"Bearer {key}", "x-test-client-ip": ip, "user-agent": ua},
    )
    assert r.status_code == 200, r.text


def get_json(client: TestClient, path: str) -> Any:
    r = client.get(path, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()


def assert_refused(client: TestClient, user_key: str) -> None:
    """Every admin risk route refuses a missing, wrong or user credential, and leaks nothing."""
    for path in RISK_ROUTES:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {user_key}"}):
            r = client.get(path, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert set(r.json()) == {"error"} and r.json()["error"]["code"] == "invalid_admin_token"


@pytest.fixture
def risky_gateway(tmp_path: Path, cal_file: Path) -> Iterator[tuple[TestClient, Any]]:
    app = create_app(risk_settings(tmp_path, cal_file))
    with TestClient(with_client_ip(app), raise_server_exceptions=False) as client:
        yield client, app


def test_harvester_is_flagged_end_to_end(risky_gateway: tuple[TestClient, Any]) -> None:
    client, app = risky_gateway
    t0 = time.monotonic()
    status = poll(
        lambda: get_json(client, "/v1/admin/risk/status"), lambda s: s["running"], 20, "the risk engine"
    )
    assert status["enabled"] and status["embedder"] == "hashing"
    assert status["calibration"]["target_fpr"] == 0.01 and status["calibration"]["threshold"] > 0

    a_id, a_key = create_account(client, "harvester")
    b_id, b_key = create_account(client, "ordinary-user")
    assert_refused(client, a_key)
    r = client.get(f"/v1/admin/risk/accounts/{a_id}", headers={"Authorization": f"Bearer {a_key}"})
    assert r.status_code == 401 and "state" not in r.json()

    # A harvests reasoning traces quickly; B asks a few ordinary questions in between
    b_every = N_HARVEST // len(ORDINARY)
    for i in range(N_HARVEST):
        prompt = f"Explain {TOPICS[i % len(TOPICS)]} in depth, case {i}. {CUE}"
        chat(client, a_key, prompt, "203.0.113.10", "python-requests/2.31")
        if i % b_every == 0:
            chat(client, b_key, ORDINARY[i // b_every], "198.51.100.20", "Mozilla/5.0 (X11; Linux x86_64)")
    sent = time.monotonic()

    detail = poll(
        lambda: get_json(client, f"/v1/admin/risk/accounts/{a_id}"),
        lambda d: d["state"] is not None and d["state"]["flagged"],
        30,
        "account A to be flagged",
    )
    flagged_after = time.monotonic() - sent
    state = detail["state"]
    assert state["subject_kind"] == "account" and state["subject_id"] == a_id
    assert state["first_flagged_at"] is not None and state["score"] > 0.9
    assert state["reasons"] and all(isinstance(r, str) and r for r in state["reasons"]), state
    # the reasons of a state are its latest look's three rarest kinds of evidence: with the hashing
    # embedder the topic features and the volume outrank the reasoning cue once the account is big,
    # so the cue is looked for in the account's findings (its early looks name it) and its features
    reasons = [r for f in detail["findings"] for r in f["reasons"]]
    assert any("ask for step-by-step reasoning" in r for r in reasons), reasons
    assert state["features"]["elicitation"] > 0.9 and state["features"]["single_turn"] == 1.0, state
    assert detail["account"] == {
        "id": a_id,
        "name": "harvester",
        "tier": "standard",
        "status": "active",
        "created_at": detail["account"]["created_at"],
    }
    assert detail["findings"] and all(isinstance(f["id"], int) for f in detail["findings"])
    assert all(f["subject_id"] == a_id and f["subject_kind"] == "account" for f in detail["findings"])
    assert detail["decisions"] == [] and detail["active_decision"] is None
    # the detail also answers by account name
    assert get_json(client, "/v1/admin/risk/accounts/harvester")["state"]["subject_id"] == a_id

    # every request has been read once the worker has caught up
    status = poll(
        lambda: get_json(client, "/v1/admin/risk/status"),
        lambda s: s["stats"]["events"] >= N_HARVEST + len(ORDINARY),
        20,
        "the worker to read every request",
    )
    stats = status["stats"]
    assert status["running"] and stats["events"] >= N_HARVEST and stats["errors"] == 0
    assert stats["scored"] == stats["events"] and stats["findings"] >= len(detail["findings"])
    assert stats["flagged_accounts"] >= 1 and stats["last_ts"] is not None
    assert status["store"]["flagged_accounts"] >= 1 and status["store"]["cursor_ts"] == stats["last_ts"]

    detail = get_json(client, f"/v1/admin/risk/accounts/{a_id}")  # final: the worker is idle now
    last_look = max(c for c in CHECKPOINTS if c <= N_HARVEST)
    assert detail["state"]["flagged"] and detail["state"]["requests_seen"] == last_look
    assert detail["findings"][0]["id"] == detail["state"]["last_finding_id"]
    seen = [f["requests_seen"] for f in detail["findings"]]
    assert seen == sorted(seen, reverse=True) and seen[-1] == CHECKPOINTS[0]  # newest first, every look kept

    b = get_json(client, f"/v1/admin/risk/accounts/{b_id}")
    assert b["state"] is not None and b["state"]["requests_seen"] >= 4, b  # B was scored, too
    assert not b["state"]["flagged"] and b["state"]["first_flagged_at"] is None, b["state"]

    listing = get_json(client, "/v1/admin/risk/accounts?flagged=true")
    ids = [s["subject_id"] for s in listing["data"]]
    assert a_id in ids and b_id not in ids and all(s["flagged"] for s in listing["data"])
    assert listing["flagged_total"] == len(ids) == 1
    everyone = get_json(client, "/v1/admin/risk/accounts?limit=500")
    scores = [s["score"] for s in everyone["data"]]
    assert scores == sorted(scores, reverse=True)
    assert {a_id, b_id} <= {s["subject_id"] for s in everyone["data"]}
    assert everyone["data"][0]["subject_id"] == a_id
    page = get_json(client, "/v1/admin/risk/accounts?limit=1&offset=1")
    assert [s["subject_id"] for s in page["data"]] == [s["subject_id"] for s in everyone["data"][1:2]]
    clusters = get_json(client, "/v1/admin/risk/clusters")
    assert isinstance(clusters["data"], list) and isinstance(clusters["flagged_total"], int)
    assert all(s["subject_kind"] == "cluster" for s in clusters["data"])

    # no secret anywhere in the admin replies: no API key, no key hash, no admin token
    for body in (detail, b, listing, everyone, status):
        text = repr(body)
        assert a_key not in text and b_key not in text and ADMIN_TOKEN not in text
        assert "key_hash" not in text and "secret" not in text and "metadata" not in text

    assert_refused(client, a_key)  # still refused once there is something to see
    assert app.state.risk_worker.stats.events >= N_HARVEST
    print(  # timings, shown with pytest -s
        f"\nflagged {flagged_after:.2f} s after the last request; whole test {time.monotonic() - t0:.2f} s"
    )


def test_admin_risk_api_with_the_engine_off(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path)  # risk.enabled=False
    assert not settings.risk.enabled
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        status = get_json(client, "/v1/admin/risk/status")
        assert status["enabled"] is False and status["running"] is False
        assert status["stats"] is None and status["calibration"] is None
        assert not hasattr(app.state, "risk_worker")

        acc_id, key = create_account(client, "someone")
        for i in range(5):
            chat(client, key, f"hello number {i}", "203.0.113.10", "curl/8.0")
        r = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        client.app.state.rt.events.flush()  # type: ignore[attr-defined]
        assert client.app.state.rt.store.count_events(acc_id) == 5  # type: ignore[attr-defined]

        detail = get_json(client, f"/v1/admin/risk/accounts/{acc_id}")
        assert detail["state"] is None and detail["findings"] == [] and detail["decisions"] == []
        assert detail["active_decision"] is None
        listing = get_json(client, "/v1/admin/risk/accounts")
        assert listing["data"] == [] and listing["flagged_total"] == 0
        assert_refused(client, key)

        r = client.get("/v1/admin/risk/accounts/no-such-account", headers=ADMIN)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        for query, param in [
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("limit=ten", "limit"),
            ("offset=-1", "offset"),
            ("offset=x", "offset"),
            ("flagged=maybe", "flagged"),
        ]:
            for path in ("/v1/admin/risk/accounts", "/v1/admin/risk/clusters"):
                r = client.get(f"{path}?{query}", headers=ADMIN)
                assert r.status_code == 400, (path, query, r.text)
                err = r.json()["error"]
                assert err["type"] == "invalid_request_error" and err["param"] == param
        assert get_json(client, "/v1/admin/risk/accounts?limit=500&offset=0&flagged=false")["data"] == []
        r = client.post("/v1/admin/risk/status", headers=ADMIN)
        assert r.status_code == 405


def test_admin_risk_api_is_disabled_without_an_admin_token(tmp_path: Path) -> None:
    app = create_app(gateway_settings(tmp_path, **{"server.admin_token": None}))
    with TestClient(app, raise_server_exceptions=False) as client:
        for path in RISK_ROUTES:
            r = client.get(path, headers=ADMIN)
            assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled", r.text
