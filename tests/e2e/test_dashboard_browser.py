"""The operators' dashboard in a real browser: Debian's headless Chromium driven by Selenium through
Debian's chromedriver (no browser download at test time).

A real gateway (uvicorn on a loopback port, SQLite, fake backend, policy on) serves a seeded hydra
campaign whose member accounts also send real chat completions first. The operator logs in, sees the
campaign on the overview (and a new finding arrive live), opens the cluster and one account, blocks
the cluster, reads the audits list and opens a report; then the next chat completion of a member
account is refused by the gateway (403, OpenAI envelope, ``x-should-retry: false``).

Screenshots of every page are written to ``artifacts/screenshots/`` (git-ignored: the run's artifacts),
or to ``$ANTIDISTILL_SCREENSHOTS`` when set; the copies linked from the README were made with
``ANTIDISTILL_SCREENSHOTS=docs/screenshots``.
The test skips only when chromium or chromedriver is absent; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from antidistill.gateway.app import create_app
from antidistill.risk.types import Finding
from antidistill.store import SqlStore
from tests.dashboard_seed import CLUSTER, Campaign, seed_campaign, write_audit
from tests.helpers import ADMIN_TOKEN, gateway_settings, live_server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = Path(
    os.environ.get("ANTIDISTILL_SCREENSHOTS")
    or Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
)
WAIT_S = 20.0

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}); "
    "scripts/bootstrap installs them (apt-get install chromium chromium-driver)",
)


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1360,1400",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, name: str) -> None:
    """A screenshot of the viewport, saved as a small palette PNG."""
    from io import BytesIO

    from PIL import Image

    SHOTS.mkdir(parents=True, exist_ok=True)
    img = Image.open(BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(SHOTS / f"{name}.png", optimize=True)


def wait_for(driver: Any, css: str, text: str | None = None) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(d: Any) -> Any:
        for el in d.find_elements(By.CSS_SELECTOR, css):
            if text is None or text in el.text:
                return el
        return False

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(found)
    except TimeoutException:
        pytest.fail(
            f"timed out after {WAIT_S:.0f} s waiting for {css!r}"
            + (f" containing {text!r}" if text else "")
            + f" on {driver.current_url}; page text: {driver.find_element(By.TAG_NAME, 'body').text[:1500]!r}"
        )


def chat(base: str, key: str) -> httpx.Response:
    body = {
        "model": "test-model",
        "messages": [{"role": "user", "content": "Question: why is the sky blue?"}],
    }
    return httpx.post(
        f"{base}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[str, Campaign, SqlStore, Path]]:
    audits = tmp_path / "audits"
    settings = gateway_settings(
        tmp_path, **{"dashboard.audits_dir": str(audits), "dashboard.poll_interval_s": 1.0}
    )
    store = SqlStore(settings.database_url)
    store.migrate()
    campaign = seed_campaign(store, time.time())
    write_audit(audits, "copycat-7b-2026-11", "distilled", 3e-9)
    write_audit(audits, "open-model-x", "not_distilled", 0.4)
    try:
        with live_server(create_app(settings)) as base:
            yield base, campaign, store, audits
    finally:
        store.close()


def test_operator_blocks_a_campaign_in_a_real_browser(
    deployment: tuple[str, Campaign, SqlStore, Path],
) -> None:
    from selenium.webdriver.common.by import By

    base, campaign, store, _ = deployment
    member_key = campaign.keys[campaign.members[1]]
    assert chat(base, member_key).status_code == 200  # the campaign is being served before the block

    with browser() as d:
        # login (the dashboard redirects there first)
        d.get(f"{base}/dashboard/")
        wait_for(d, "#login-form")
        assert "/dashboard/login" in d.current_url
        shot(d, "01-login")
        d.find_element(By.ID, "operator").send_keys("carol")
        d.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
        d.find_element(By.ID, "login").click()

        # overview: the campaign, and a finding that arrives while the page is open
        wait_for(d, "#top-by-score", CLUSTER)
        assert "flagged" in d.find_element(By.ID, "top-by-score").text
        assert d.find_element(By.ID, "kpi-flagged-clusters").text == "1"
        newcomer = store.create_account("harvester-late")
        store.record_findings(
            [
                Finding(
                    "account",
                    newcomer.id,
                    time.time(),
                    0.9999,
                    True,
                    (f"member of cluster {CLUSTER}: joined late",),
                    cluster=CLUSTER,
                    requests_seen=6,
                )
            ]
        )
        wait_for(d, "#live-findings tr.fresh", newcomer.id)
        shot(d, "02-overview")

        # cluster page: the linked accounts as a graph with labelled edges
        d.find_element(By.LINK_TEXT, CLUSTER).click()
        wait_for(d, "#cluster-graph svg")
        labels = {el.text for el in d.find_elements(By.CSS_SELECTOR, "#cluster-graph .edge-label")}
        assert any("IP" in x for x in labels) and any("pay" in x for x in labels), labels
        assert "7 in the store" in d.find_element(By.ID, "cluster-members").text
        shot(d, "03-cluster")

        # one member's account page, then back
        d.find_element(By.LINK_TEXT, "harvester-00").click()
        wait_for(d, "#samples mark.tpl")
        assert "wk_acct" in d.find_element(By.ID, "watermark-keys").text
        shot(d, "04-account")
        d.back()
        wait_for(d, "#block-cluster-form")

        # block the cluster
        d.find_element(By.ID, "cluster-reason").send_keys("hydra campaign c7, incident 2026-11-29")
        d.find_element(By.ID, "btn-block-cluster").click()
        wait_for(d, "#notice", "7 member accounts blocked")
        wait_for(d, "#cluster-decisions", "operator:carol")
        shot(d, "05-cluster-blocked")

        # audits: the list, then one report
        d.find_element(By.LINK_TEXT, "Audits").click()
        wait_for(d, "#audits", "copycat-7b")
        assert "distilled" in d.find_element(By.ID, "audits").text
        shot(d, "06-audits")
        d.find_element(By.CSS_SELECTOR, "#audits a.open-report").click()
        wait_for(d, "h1", "audit")
        shot(d, "07-audit-report")

    # the gateway refuses the next request of every member account
    for aid in campaign.members:
        r = chat(base, campaign.keys[aid])
        assert r.status_code == 403, r.text
        assert r.headers["x-should-retry"] == "false"
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
    for aid in campaign.members:
        d_ = store.active_decision("account", aid)
        assert d_ is not None and d_.action == "block" and d_.actor == "operator:carol"
        assert "hydra campaign c7" in d_.reason
    cluster_decision = store.active_decision("cluster", CLUSTER)
    assert cluster_decision is not None and cluster_decision.actor == "operator:carol"
