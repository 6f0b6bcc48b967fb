"""Suspect client: cache keying, resume after a crash, budget, retries with backoff."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from antidistill.errors import ConfigError
from antidistill.forensics.identity import count_claims, identity_prompts, identity_test
from antidistill.forensics.radioactivity import TestResult
from antidistill.forensics.report import Arm, build_report, decide
from antidistill.forensics.suspect import ResponseCache, SuspectClient, cache_key, chat_endpoint


class Upstream:
    """A scripted OpenAI-compatible endpoint: ``fail[prompt]`` = statuses to answer before the 200."""

    def __init__(self, fail: dict[str, list[int]] | None = None, crash_after: int | None = None) -> None:
        self.fail = {k: list(v) for k, v in (fail or {}).items()}
        self.crash_after = crash_after
        self.calls: list[str] = []
        self.ok = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        prompt = body["messages"][0]["content"]
        assert "sample" not in body  # cache-only field never sent
        self.calls.append(prompt)
        pending = self.fail.get(prompt)
        if pending:
            status = pending.pop(0)
            return httpx.Response(status, json={"error": "busy"}, headers={"retry-after": "0"})
        if self.crash_after is not None and self.ok >= self.crash_after:
            raise httpx.ConnectError("upstream went away")
        self.ok += 1
        text = f"answer to {prompt} (t={body.get('temperature')})"
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": text}}]})


def client(tmp_path: Path, up: Upstream, **kw: object) -> SuspectClient:
    opts: dict[str, object] = {"backoff_s": 0.001, "max_backoff_s": 0.01, "max_retries": 3}
    opts.update(kw)
    return SuspectClient(
        "http://suspect.test/v1",
        "m1",
        ResponseCache(tmp_path / "c.sqlite"),
        transport=httpx.MockTransport(up),
        **opts,  # type: ignore[arg-type]
    )


def test_endpoint_and_cache_key() -> None:
    assert chat_endpoint("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_endpoint("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_endpoint("https://h/x/v1/chat/completions") == "https://h/x/v1/chat/completions"
    with pytest.raises(ConfigError):
        chat_endpoint("h:1")
    base = cache_key("e", "m", "p", {"temperature": 1.0, "max_tokens": 5})
    assert base == cache_key("e", "m", "p", {"max_tokens": 5, "temperature": 1.0})  # order-free
    others = [
        cache_key("e2", "m", "p", {"temperature": 1.0, "max_tokens": 5}),
        cache_key("e", "m2", "p", {"temperature": 1.0, "max_tokens": 5}),
        cache_key("e", "m", "p2", {"temperature": 1.0, "max_tokens": 5}),
        cache_key("e", "m", "p", {"temperature": 0.5, "max_tokens": 5}),
        cache_key("e", "m", "p", {"temperature": 1.0, "max_tokens": 5, "sample": 1}),
    ]
    assert len({base, *others}) == 6


def test_cache_hits_are_free_and_params_separate_entries(tmp_path: Path) -> None:
    up = Upstream()
    c = client(tmp_path, up)
    first = c.query(["a", "b"], {"temperature": 1.0})
    assert [a.text for a in first] == ["answer to a (t=1.0)", "answer to b (t=1.0)"]
    assert not any(a.cached for a in first) and c.stats.sent == 2
    again = c.query(["a", "b"], {"temperature": 1.0})
    assert [a.text for a in again] == [a.text for a in first] and all(a.cached for a in again)
    assert len(up.calls) == 2 and c.stats.sent == 2 and c.stats.cache_hits == 2
    other = c.query(["a"], {"temperature": 0.5})
    assert other[0].text == "answer to a (t=0.5)" and len(up.calls) == 3


def test_resume_after_a_crash_loses_nothing_paid_for(tmp_path: Path) -> None:
    prompts = [f"p{i}" for i in range(10)]
    up = Upstream(crash_after=4)
    c = client(tmp_path, up, concurrency=1, max_retries=0)
    answers = c.query(prompts)
    assert sum(a.text is not None for a in answers) == 4 and c.stats.failed == 6
    c.cache.close()
    # a new process with the same cache file: only the 6 missing prompts are sent
    up2 = Upstream()
    c2 = client(tmp_path, up2)
    answers = c2.query(prompts)
    assert all(a.text is not None for a in answers)
    assert sorted(up2.calls) == sorted(prompts[4:]) and c2.stats.cache_hits == 4
    assert len(c2.cache) == 10


def test_budget_limits_new_queries_only(tmp_path: Path) -> None:
    up = Upstream()
    c = client(tmp_path, up, budget=3)
    answers = c.query([f"p{i}" for i in range(5)])
    assert [a.text is not None for a in answers] == [True, True, True, False, False]
    assert all(a.skipped and a.error == "query budget exhausted" for a in answers[3:])
    assert len(up.calls) == 3 and c.stats.skipped == 2
    # cached prompts are still answered once the budget is spent
    again = c.query(["p0", "p4"])
    assert again[0].cached and again[1].skipped and len(up.calls) == 3


def test_retries_on_429_and_5xx_but_not_on_4xx(tmp_path: Path) -> None:
    up = Upstream({"busy": [429, 503, 500], "bad": [400], "down": [502] * 10})
    c = client(tmp_path, up, max_retries=3)
    busy, bad, down = c.query(["busy", "bad", "down"])
    assert busy.text is not None and up.calls.count("busy") == 4
    assert bad.text is None and "HTTP 400" in (bad.error or "") and up.calls.count("bad") == 1
    assert down.text is None and "HTTP 502" in (down.error or "") and up.calls.count("down") == 4
    assert c.stats.retries == 6 and c.stats.failed == 2 and c.stats.sent == 3
    # failures are never cached: a later run asks again
    assert len(c.cache) == 1


def test_api_key_is_sent_and_never_described(tmp_path: Path) -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"choices": [{"message": {"content": "hi"}}]})

    c = SuspectClient(
        "http://s.test",
        "m",
        ResponseCache(tmp_path / "k.sqlite"),
        api_key="sk-x",
        transport=httpx.MockTransport(handler),
    )
    c.query(["q"])
    assert seen == ["Bearer sk-x"] and "sk-x" not in json.dumps(c.describe())


def test_identity_probe_counts_and_tests() -> None:
    assert len(identity_prompts()) == 20
    ours = ["I am Acme Nova, trained by Acme."] * 30 + ["I'm an assistant."] * 10
    control = ["I am an AI assistant."] * 38 + ["Acme made me"] * 2
    assert count_claims(ours, ["Acme"]) == 30 and count_claims(["acmeish"], ["Acme"]) == 0
    r = identity_test(ours, ["Acme"], control_answers=control)
    assert not r.inconclusive and r.p_value < 1e-8 and r.data["method"] == "fisher_exact_one_sided"
    same = identity_test(control, ["Acme"], control_answers=control)
    assert same.p_value > 0.5
    assert identity_test(ours, ["Acme"]).inconclusive  # no reference
    b = identity_test(ours, ["Acme"], reference_rate=0.05)
    assert b.data["method"] == "binomial_one_sided" and b.p_value < 1e-20
    assert identity_test(ours[:5], ["Acme"], reference_rate=0.05).inconclusive


def _arm(radio_lp: float, inconclusive: bool = False, ident_p: float = 1.0) -> Arm:
    radio = TestResult("radioactivity_api", 10.0**radio_lp, 5000, "", inconclusive, {"log10_p": radio_lp})
    return Arm(
        "suspect", {"model": "m", "url": "u"}, [radio, TestResult("identity_probes", ident_p, 40, "")], [], []
    )


def test_verdict_rule() -> None:
    for lp, inc, ident, control, expected in [
        (-400.0, False, 1.0, None, "distilled"),  # underflowing p stays exact in log10
        (-6.0, False, 1.0, None, "inconclusive"),  # x2 tests: 2e-6 > 1e-6
        (-7.0, False, 1.0, None, "distilled"),
        (-7.0, False, 1.0, -5.0, "inconclusive"),  # the control is flagged: setup suspect
        (-0.1, False, 1.0, None, "not_distilled"),
        (-0.1, False, 1e-12, None, "inconclusive"),  # identity alone never says distilled
        (-50.0, True, 1.0, None, "inconclusive"),  # too few tokens
    ]:
        arm = _arm(lp, inc, ident)
        ctrl = None
        if control is not None:
            ctrl = _arm(control)
            decide(ctrl, None)
        decide(arm, ctrl)
        assert arm.verdict == expected, (lp, inc, ident, control, arm.reason)
    rep = build_report(_arm(-400.0), None, command="antidistill audit", keys=[], settings={})
    assert rep["verdict"] == "distilled" and rep["p_value"] == 0.0 and rep["log10_p"] < -399


def test_event_log_prompts_are_the_last_user_turns(tmp_path: Path) -> None:
    from antidistill.forensics.radioactivity import event_log_prompts
    from antidistill.store import open_store
    from antidistill.store.base import Event

    store = open_store(f"sqlite:///{tmp_path / 'ev.db'}")
    store.migrate()

    def ev(i: int, request: dict[str, Any]) -> Event:
        return Event(f"r{i}", float(i), None, None, None, None, "chat", "m", request, {}, "x", 1, 1, 1.0, 200)

    chat = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "first"}]}
    store.insert_events(
        [
            ev(1, chat),
            ev(2, chat),  # duplicate prompt
            ev(3, {"prompt": "a completion prompt"}),
            ev(
                4,
                {
                    "messages": [
                        {"role": "user", "content": "u1"},
                        {"role": "assistant", "content": "a"},
                        {"role": "user", "content": "u2"},
                    ]
                },
            ),
            ev(5, {"messages": []}),
        ]
    )
    try:
        assert event_log_prompts(store) == ["first", "a completion prompt", "u2"]
        assert len(event_log_prompts(store, 2)) == 2
    finally:
        store.close()
