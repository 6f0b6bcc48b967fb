"""The operators' dashboard in process (Starlette TestClient, lifespan on, SQLite, fake backend): the
login gate, CSRF, every page on a seeded campaign, operator actions recorded in the audit trail, the
live feed, audits served safely, and clear errors on bad input."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from antidistill.dashboard.auth import SESSION_COOKIE, SessionSigner, safe_next
from antidistill.gateway.app import create_app
from antidistill.risk.types import Finding
from antidistill.store import SqlStore
from tests.dashboard_seed import CLUSTER, Campaign, seed_campaign, write_audit
from tests.helpers import ADMIN_TOKEN, gateway_settings


@dataclass
class Dash:
    client: TestClient
    store: SqlStore
    campaign: Campaign
    audits: Path
    csrf: str = ""

    def login(self, operator: str = "carol", token: str = ADMIN_TOKEN) -> Any:
        page = self.client.get("/dashboard/login")
        nonce = re.search(r'name="nonce" value="([^"]+)"', page.text)
        assert nonce is not None
        form = {"nonce": nonce.group(1), "next": "/dashboard/", "operator": operator, "token": token}
        r = self.client.post("/dashboard/login", data=form, follow_redirects=False)
        if r.status_code == 303:
            overview = self.client.get("/dashboard/")
            found = re.search(r'name="csrf" value="([^"]+)"', overview.text)
            assert found is not None
            self.csrf = found.group(1)
        return r


def _app(tmp_path: Path, **overrides: Any) -> Any:
    settings = gateway_settings(tmp_path, **{"dashboard.audits_dir": str(tmp_path / "audits"), **overrides})
    return create_app(settings)


@pytest.fixture
def dash(tmp_path: Path) -> Iterator[Dash]:
    app = _app(tmp_path)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        store = app.state.rt.store
        campaign = seed_campaign(store, time.time())
        write_audit(tmp_path / "audits", "copycat-2026-11", "distilled", 3e-9)
        yield Dash(client, store, campaign, tmp_path / "audits")


@pytest.fixture
def logged_in(dash: Dash) -> Dash:
    assert dash.login().status_code == 303
    return dash


# the gate ----------------------------------------------------------------------------------------
PAGES = [
    "/dashboard/",
    "/dashboard/accounts",
    "/dashboard/clusters",
    f"/dashboard/clusters/{CLUSTER}",
    "/dashboard/audits",
    "/dashboard/audits/copycat-2026-11/report.html",
]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_needs_a_session(dash: Dash, path: str) -> None:
    r = dash.client.get(path)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/dashboard/login?next=")
    assert "harvester" not in r.text and "copycat" not in r.text


def test_the_live_feed_answers_401_without_a_session(dash: Dash) -> None:
    r = dash.client.get("/dashboard/api/live?after=0")
    assert r.status_code == 401 and r.json()["error"]["code"] == "login"


def test_the_admin_bearer_token_alone_opens_nothing(dash: Dash) -> None:
    r = dash.client.get("/dashboard/", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 303


def test_a_wrong_token_is_refused_without_a_session(dash: Dash) -> None:
    r = dash.login(token="not-the-token")
    assert r.status_code == 401 and "Wrong admin credential" in r.text
    assert SESSION_COOKIE not in r.headers.get("set-cookie", "")
    assert dash.client.get("/dashboard/").status_code == 303


def test_a_bad_operator_name_is_a_clear_error(dash: Dash) -> None:
    r = dash.login(operator="two words")
    assert r.status_code == 401 and "operator name" in r.text


def test_login_without_the_form_nonce_is_refused(dash: Dash) -> None:
    form = {"nonce": "forged", "operator": "carol", "token": ADMIN_TOKEN}
    r = dash.client.post("/dashboard/login", data=form)
    assert r.status_code == 403 and SESSION_COOKIE not in r.headers.get("set-cookie", "")


def test_login_sets_a_signed_httponly_samesite_strict_cookie(dash: Dash) -> None:
    r = dash.login()
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain http here; https requests get Secure
    assert dash.client.get("/dashboard/").status_code == 200


def test_forged_tampered_and_expired_cookies_are_refused(dash: Dash) -> None:
    signer = SessionSigner(ADMIN_TOKEN, 60)
    good, _ = signer.issue("carol", time.time())
    old, _ = signer.issue("carol", time.time() - 3600)
    other, _ = SessionSigner("another-token", 60).issue("carol", time.time())
    body, mac = good.split(".")
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    for value, ok in ((good, True), (old, False), (other, False), (tampered, False), ("garbage", False)):
        dash.client.cookies.set(SESSION_COOKIE, value, path="/dashboard")
        assert (dash.client.get("/dashboard/").status_code == 200) is ok, value
        dash.client.cookies.clear()


def test_logout_needs_csrf_and_ends_the_session(logged_in: Dash) -> None:
    c = logged_in.client
    assert c.post("/dashboard/logout", data={"csrf": "wrong"}).status_code == 403
    r = c.post("/dashboard/logout", data={"csrf": logged_in.csrf})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    assert c.get("/dashboard/").status_code == 303


def test_the_dashboard_is_disabled_without_an_admin_token(tmp_path: Path) -> None:
    app = _app(tmp_path, **{"server.admin_token": None})
    with TestClient(app) as client:
        r = client.get("/dashboard/login")
        assert r.status_code == 403 and "server.admin_token" in r.text
        assert client.get("/dashboard/").status_code == 403


def test_the_dashboard_can_be_switched_off(tmp_path: Path) -> None:
    with TestClient(_app(tmp_path, **{"dashboard.enabled": False})) as client:
        assert client.get("/dashboard/login").status_code == 404


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/dashboard/clusters/c7", "/dashboard/clusters/c7"),
        ("//evil.example/x", "/dashboard/"),
        ("https://evil.example/dashboard/", "/dashboard/"),
        ("/dashboardx", "/dashboard/"),
        ("/dashboard/\\evil", "/dashboard/"),
        (None, "/dashboard/"),
    ],
)
def test_login_redirects_only_inside_the_dashboard(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


# pages -------------------------------------------------------------------------------------------
def test_overview_shows_the_campaign_and_counts(logged_in: Dash) -> None:
    r = logged_in.client.get("/dashboard/")
    assert r.status_code == 200
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    html = r.text
    for part in ('id="top-by-score"', 'id="top-by-volume"', f">{CLUSTER}</a>", "<svg", "Requests"):
        assert part in html
    assert re.search(r'id="kpi-flagged-accounts">6<', html)
    assert re.search(r'id="kpi-flagged-clusters">1<', html)
    assert "operator: <b>carol</b>" in html
    for rng in ("7d", "30d"):
        assert logged_in.client.get(f"/dashboard/?range={rng}").status_code == 200


def test_lists_paginate_and_filter(logged_in: Dash) -> None:
    c = logged_in.client
    flagged = c.get("/dashboard/accounts").text
    assert flagged.count("harvester-") == 6 and "alice" not in flagged
    everyone = c.get("/dashboard/accounts?flagged=0&order=volume").text
    assert "alice" in everyone
    assert 'id="next"' not in everyone  # 7 scored accounts: one page
    assert f">{CLUSTER}</a>" in c.get("/dashboard/clusters").text
    assert c.get("/dashboard/accounts?page=3").status_code == 200


def test_account_page_shows_timeline_reasons_templates_keys_and_decisions(logged_in: Dash) -> None:
    aid = logged_in.campaign.members[0]
    r = logged_in.client.get(f"/dashboard/accounts/{aid}")
    assert r.status_code == 200
    html = r.text
    assert "harvester-00" in html and "Requests and risk score" in html and "<polyline" in html
    assert "step-by-step reasoning" in html  # reasons of its findings
    assert '<mark class="tpl">' in html and "Explain your reasoning step by step" in html
    assert "wk_acct00" in html  # its watermark key
    assert "throttle" in html and ">engine<" in html  # the engine's decision and who made it
    assert f'href="/dashboard/clusters/{CLUSTER}"' in html
    by_name = logged_in.client.get("/dashboard/accounts/harvester-00")
    assert by_name.status_code == 200 and aid in by_name.text
    search = logged_in.client.get("/dashboard/accounts?q=harvester-00")
    assert search.status_code == 303 and search.headers["location"].endswith("/accounts/harvester-00")


def test_account_page_pages_through_older_prompts(logged_in: Dash) -> None:
    aid = logged_in.campaign.members[0]
    for i in range(25):
        f = {"ts": time.time() + i, "id": f"extra-{i:03d}"}
        logged_in.store.insert_events([_event_like(logged_in.store, aid, **f)])
    first = logged_in.client.get(f"/dashboard/accounts/{aid}").text
    older = re.search(r'href="([^"]+before=[^"]+)" id="older"', first)
    assert older is not None
    page2 = logged_in.client.get(older.group(1).replace("&amp;", "&"))
    assert page2.status_code == 200 and "extra-024" not in page2.text


def _event_like(store: SqlStore, account: str, ts: float, id: str) -> Any:
    e = next(iter(store.account_events(account, 1)))
    from dataclasses import replace

    return replace(e, ts=ts, id=id, response=id)


def test_cluster_page_shows_the_graph_volume_and_span(logged_in: Dash) -> None:
    r = logged_in.client.get(f"/dashboard/clusters/{CLUSTER}")
    assert r.status_code == 200
    html = r.text
    assert html.count('class="node"') == 6
    labels = re.findall(r'class="edge-label">([^<]+)<', html)
    assert labels and all("IP" in x for x in labels)  # linked by network + something
    assert any("pay" in x for x in labels)  # half of them share a payment fingerprint
    assert "198.51.100.0/24" in html and "harvest-client/2.7" in html  # the evidence table
    assert "72 requests pooled by the engine" in html
    assert "6 in the store" in html and "UTC /" in html


def test_unknown_subjects_and_bad_input_are_clear_errors(logged_in: Dash) -> None:
    c = logged_in.client
    cases = [
        ("/dashboard/accounts/nobody", 404, "no account"),
        ("/dashboard/clusters/c999", 404, "no cluster"),
        ("/dashboard/?range=1y", 400, "range must be one of"),
        ("/dashboard/accounts?page=-1", 400, "page must be"),
        ("/dashboard/accounts?page=abc", 400, "page must be a whole number"),
        ("/dashboard/accounts?order=name", 400, "order must be"),
        (f"/dashboard/accounts/{logged_in.campaign.members[0]}?before=zzz", 400, "before must be"),
        ("/dashboard/api/live?after=-5", 400, "after must be"),
        ("/dashboard/no/such/page", 404, "No dashboard page"),
        ("/dashboard/accounts/a%00b", 400, "not a valid id"),
        ("/dashboard/clusters/" + "c" * 300, 400, "not a valid id"),
    ]
    for url, status, words in cases:
        r = c.get(url)
        assert r.status_code == status, (url, r.text[-500:])
        assert words in r.text, url


# actions -----------------------------------------------------------------------------------------
def test_decisions_need_the_csrf_token(logged_in: Dash) -> None:
    aid = logged_in.campaign.members[2]
    c = logged_in.client
    for form in ({"action": "block"}, {"action": "block", "csrf": "x" * 32}):
        r = c.post(f"/dashboard/accounts/{aid}/decision", data=form)
        assert r.status_code == 403 and "form token" in r.text
    cross = c.post(
        f"/dashboard/accounts/{aid}/decision",
        data={"action": "block", "csrf": logged_in.csrf},
        headers={"origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    assert logged_in.store.active_decision("account", aid) is None


def test_decisions_without_a_session_change_nothing(dash: Dash) -> None:
    aid = dash.campaign.members[2]
    r = dash.client.post(f"/dashboard/accounts/{aid}/decision", data={"action": "block"})
    assert r.status_code == 303 and "/dashboard/login" in r.headers["location"]
    assert dash.store.active_decision("account", aid) is None


@pytest.mark.parametrize("action", ["allow", "throttle", "block", "reset"])
def test_each_button_records_a_decision_with_the_operator(logged_in: Dash, action: str) -> None:
    aid = logged_in.campaign.members[3]
    form = {"action": action, "reason": f"dashboard {action}", "csrf": logged_in.csrf}
    if action == "throttle":
        form["rpm"] = "7"
    r = logged_in.client.post(f"/dashboard/accounts/{aid}/decision", data=form)
    assert r.status_code == 303 and r.headers["location"].endswith(f"?done={action}")
    d = logged_in.store.active_decision("account", aid)
    assert d is not None and (d.action, d.actor, d.reason) == (
        action,
        "operator:carol",
        f"dashboard {action}",
    )
    assert d.finding_id is not None  # the evidence the operator saw
    if action == "throttle":
        assert d.params["rpm"] == 7
    account = logged_in.store.get_account(aid)
    assert account is not None and account.status == ("blocked" if action == "block" else "active")
    page = logged_in.client.get(r.headers["location"]).text
    assert "Recorded: " + action in page and "operator:carol" in page


def test_a_block_from_the_dashboard_refuses_the_next_request(logged_in: Dash) -> None:
    aid = logged_in.campaign.members[4]
    key = logged_in.campaign.keys[aid]
    body = {"model": "test-model", "messages": [{"role": "user", "content": "hello"}]}
    auth = {"Authorization": f"Bearer {key}"}
    assert logged_in.client.post("/v1/chat/completions", json=body, headers=auth).status_code == 200
    form = {"action": "block", "reason": "harvesting", "csrf": logged_in.csrf}
    assert logged_in.client.post(f"/dashboard/accounts/{aid}/decision", data=form).status_code == 303
    r = logged_in.client.post("/v1/chat/completions", json=body, headers=auth)
    assert r.status_code == 403 and r.headers["x-should-retry"] == "false"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    reverse = {"action": "reverse", "csrf": logged_in.csrf}
    assert logged_in.client.post(f"/dashboard/accounts/{aid}/decision", data=reverse).status_code == 303
    assert logged_in.client.post("/v1/chat/completions", json=body, headers=auth).status_code == 200


def test_bad_action_values_are_clear_errors(logged_in: Dash) -> None:
    aid = logged_in.campaign.members[5]
    c = logged_in.client
    r = c.post(f"/dashboard/accounts/{aid}/decision", data={"action": "nuke", "csrf": logged_in.csrf})
    assert r.status_code == 400 and "action must be one of" in r.text
    r = c.post(
        f"/dashboard/accounts/{aid}/decision",
        data={"action": "throttle", "rpm": "ten", "csrf": logged_in.csrf},
    )
    assert r.status_code == 400 and "rpm" in r.text
    r = c.post(f"/dashboard/accounts/{aid}/decision", data={"action": "reverse", "csrf": logged_in.csrf})
    assert r.status_code == 404 and "no active decision" in r.text
    r = c.post("/dashboard/accounts/nobody/decision", data={"action": "block", "csrf": logged_in.csrf})
    assert r.status_code == 404
    big = c.post(
        f"/dashboard/accounts/{aid}/decision", data={"action": "block", "reason": "x" * 40_000, "csrf": "y"}
    )
    assert big.status_code == 400 and "too large" in big.text
    assert logged_in.store.active_decision("account", aid) is None


def test_block_cluster_blocks_every_member_and_records_the_cluster_decision(logged_in: Dash) -> None:
    camp = logged_in.campaign
    form = {"reason": "hydra c7", "csrf": logged_in.csrf}
    r = logged_in.client.post(f"/dashboard/clusters/{CLUSTER}/block", data=form)
    assert r.status_code == 303 and r.headers["location"].endswith("?done=blocked-6")
    for aid in camp.members:
        d = logged_in.store.active_decision("account", aid)
        assert d is not None and d.action == "block" and d.actor == "operator:carol"
        assert "hydra c7" in d.reason and CLUSTER in d.reason
        acc = logged_in.store.get_account(aid)
        assert acc is not None and acc.status == "blocked"
    for aid in camp.benign:
        assert logged_in.store.active_decision("account", aid) is None
    cd = logged_in.store.active_decision("cluster", CLUSTER)
    assert cd is not None and cd.params == {"accounts": 6} and cd.actor == "operator:carol"
    page = logged_in.client.get(r.headers["location"]).text
    assert "Cluster blocked: 6 member accounts blocked" in page and page.count("badge black") >= 6
    assert logged_in.client.post("/dashboard/clusters/c404/block", data=form).status_code == 404


# live and audits ---------------------------------------------------------------------------------
def test_live_feed_returns_findings_after_the_cursor(logged_in: Dash) -> None:
    c = logged_in.client
    start = c.get("/dashboard/api/live?after=0").json()
    assert start["flagged_accounts"] == 6 and start["findings"]
    last = logged_in.store.last_finding_id()
    assert c.get(f"/dashboard/api/live?after={last}").json()["findings"] == []
    new = Finding("account", logged_in.campaign.benign[1], time.time(), 0.999, True, ("burst of harvesting",))
    logged_in.store.record_findings([new])
    body = c.get(f"/dashboard/api/live?after={last}").json()
    assert [f["subject_id"] for f in body["findings"]] == [logged_in.campaign.benign[1]]
    assert body["last_id"] > last and body["flagged_accounts"] == 7
    assert body["findings"][0]["reason"] == "burst of harvesting"
    html = c.get("/dashboard/").text
    assert f'data-last-finding="{body["last_id"]}"' in html


def test_audits_are_listed_with_their_verdicts_and_served_safely(logged_in: Dash) -> None:
    write_audit(logged_in.audits, "open-model", "not_distilled", 0.4)
    (logged_in.audits / "broken").mkdir()
    (logged_in.audits / "broken" / "report.json").write_text("{not json")
    (logged_in.audits / ".hidden").mkdir()
    (logged_in.audits / "outside.txt").write_text("secret")
    c = logged_in.client
    html = c.get("/dashboard/audits").text
    assert "copycat-2026-11" in html and "v-distilled" in html and "3e-09" in html
    assert "not_distilled" in html and "unreadable" in html and ".hidden" not in html
    r = c.get("/dashboard/audits/copycat-2026-11/report.html")
    assert r.status_code == 200 and "audit copycat-2026-11" in r.text
    assert "sandbox" in r.headers["content-security-policy"]
    assert c.get("/dashboard/audits/copycat-2026-11/report.json").json()["verdict"] == "distilled"
    for bad in (
        "/dashboard/audits/../outside.txt",
        "/dashboard/audits/%2e%2e/report.json",
        "/dashboard/audits/copycat-2026-11/answers.sqlite",
        "/dashboard/audits/copycat-2026-11/..%2f..%2foutside.txt",
        "/dashboard/audits/.hidden/report.json",
    ):
        assert c.get(bad).status_code == 404, bad
    link = logged_in.audits / "escape"
    link.symlink_to(logged_in.audits.parent)
    assert c.get("/dashboard/audits/escape/gw.db").status_code == 404


def test_audits_page_with_no_folder(tmp_path: Path) -> None:
    app = _app(tmp_path, **{"dashboard.audits_dir": str(tmp_path / "none")})
    with TestClient(app, follow_redirects=False) as client:
        d = Dash(client, app.state.rt.store, Campaign("", [], [], {}, []), tmp_path / "none")
        assert d.login().status_code == 303
        r = client.get("/dashboard/audits")
        assert r.status_code == 200 and "no audit reports yet" in r.text


def test_pages_render_on_an_empty_store(tmp_path: Path) -> None:
    app = _app(tmp_path)
    with TestClient(app, follow_redirects=False) as client:
        d = Dash(client, app.state.rt.store, Campaign("", [], [], {}, []), tmp_path)
        assert d.login().status_code == 303
        for url in ("/dashboard/", "/dashboard/accounts", "/dashboard/clusters", "/dashboard/audits"):
            assert client.get(url).status_code == 200, url
        acc = app.state.rt.store.create_account("quiet")
        r = client.get(f"/dashboard/accounts/{acc.id}")
        assert r.status_code == 200 and "not scored yet" in r.text


def test_a_store_outage_is_a_503_page_not_a_crash(logged_in: Dash, monkeypatch: pytest.MonkeyPatch) -> None:
    from antidistill.errors import StoreError

    def down(*_: Any, **__: Any) -> Any:
        raise StoreError("database unavailable at sqlite:///x: disk I/O error")

    monkeypatch.setattr(SqlStore, "top_risk", down)
    r = logged_in.client.get("/dashboard/")
    assert r.status_code == 503 and "not reachable" in r.text
    monkeypatch.setattr(SqlStore, "cluster_members", lambda *a, **k: 1 / 0)
    r = logged_in.client.get(f"/dashboard/clusters/{CLUSTER}")
    assert r.status_code == 500 and "Internal error" in r.text


# the same pages on PostgreSQL --------------------------------------------------------------------
@pytest.mark.postgres
def test_pages_and_block_cluster_on_postgres(tmp_path: Path) -> None:
    import uuid

    from tests.conftest_store import PG_URL, _drop_schema, postgres_problem

    problem = postgres_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    app = _app(tmp_path, database_url=f"{PG_URL}?schema={schema}")
    try:
        with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
            store = app.state.rt.store
            camp = seed_campaign(store, time.time())
            d = Dash(client, store, camp, tmp_path / "audits")
            assert d.login().status_code == 303
            for url in (
                "/dashboard/",
                "/dashboard/?range=30d",
                "/dashboard/accounts?flagged=0&order=volume",
                "/dashboard/clusters",
                f"/dashboard/accounts/{camp.members[0]}",
                f"/dashboard/clusters/{CLUSTER}",
                "/dashboard/api/live?after=0",
            ):
                r = client.get(url)
                assert r.status_code == 200, (url, r.text[-400:])
            html = client.get(f"/dashboard/clusters/{CLUSTER}").text
            assert html.count('class="node"') == 6 and "198.51.100.0/24" in html
            assert client.get("/dashboard/accounts/a%00b").status_code == 400
            r = client.post(f"/dashboard/clusters/{CLUSTER}/block", data={"reason": "pg", "csrf": d.csrf})
            assert r.status_code == 303 and r.headers["location"].endswith("blocked-6")
            assert all(store.get_account(a).status == "blocked" for a in camp.members)
    finally:
        _drop_schema(schema)


def test_client_controlled_text_is_escaped_everywhere(logged_in: Dash) -> None:
    evil = '<img src=x onerror="alert(1)">'
    acc = logged_in.store.create_account(evil)
    logged_in.store.record_findings(
        [Finding("account", acc.id, time.time(), 0.999, True, (evil,), cluster=evil, requests_seen=4)]
    )
    from dataclasses import replace

    e = logged_in.store.account_events(logged_in.campaign.members[0], 1)[0]
    logged_in.store.insert_events(
        [replace(e, id="evil-1", account_id=acc.id, user_agent=evil, request={"prompt": evil})]
    )
    c = logged_in.client
    for url in (
        "/dashboard/",
        "/dashboard/accounts",
        f"/dashboard/accounts/{acc.id}",
    ):
        r = c.get(url)
        assert r.status_code == 200 and "<img src=x" not in r.text, url
    live = c.get("/dashboard/api/live?after=0")  # JSON (shown with textContent), never sniffed as HTML
    assert live.headers["content-type"] == "application/json"
    assert live.headers["x-content-type-options"] == "nosniff"
    assert "&lt;img src=x" in c.get(f"/dashboard/accounts/{acc.id}").text
