"""The dashboard's pure rendering helpers: the cluster graph's link rules, layout and SVG, template
highlighting of prompts, SVG charts, and escaping of everything a client controls."""

from __future__ import annotations

import time

from antidistill.dashboard import charts, graph, prompts
from antidistill.dashboard.auth import SessionSigner
from antidistill.store.base import Account, Event

T0 = 1_800_000_000.0


def _acc(i: int, name: str | None = None, fp: str | None = None) -> Account:
    meta = {"payment_fingerprint": fp} if fp else {}
    return Account(
        id=f"a{i}", name=name or f"acct-{i}", tier="standard", created_at=T0 + i * 3600, metadata=meta
    )


def _ev(account: str, ip: str, ua: str, text: str, ts: float = T0) -> Event:
    return Event(
        id=f"{account}-{ts}",
        ts=ts,
        account_id=account,
        key_id="k",
        client_ip=ip,
        user_agent=ua,
        endpoint="chat",
        model="m",
        request={"messages": [{"role": "user", "content": text}]},
        params={},
        response="r",
        prompt_tokens=1,
        completion_tokens=1,
        latency_ms=1.0,
        status=200,
    )


TEMPLATE = "Question: {}\nExplain your reasoning step by step, then give the final answer."


def test_links_follow_the_engines_rules() -> None:
    members = [
        (_acc(0), 0.99, True),
        (_acc(1), 0.99, True),
        (_acc(2, fp="fp1"), 0.5, False),
        (_acc(3, fp="fp1"), 0.5, False),
    ]
    events = {
        # a0 and a1: same /24 and same template -> linked
        "a0": [_ev("a0", "198.51.100.7", "bot/1", TEMPLATE.format("why is the sky blue"))],
        "a1": [_ev("a1", "198.51.100.9", "bot/2", TEMPLATE.format("how do magnets work"))],
        # a2 and a3: nothing in common but a payment fingerprint -> linked
        "a2": [_ev("a2", "203.0.113.1", "x/1", "hello there")],
        "a3": [_ev("a3", "192.0.2.1", "y/1", "good morning")],
    }
    g = graph.build_graph(members, events, {})
    pairs = {(g.nodes[e.a].account_id, g.nodes[e.b].account_id): e for e in g.edges}
    assert set(pairs) == {("a0", "a1"), ("a2", "a3")}
    assert pairs[("a0", "a1")].kinds == ["network", "template"] and pairs[("a0", "a1")].strong
    assert pairs[("a2", "a3")].kinds == ["payment"] and pairs[("a2", "a3")].short == "pay"
    shared = {(e.kind, e.value) for e in g.evidence}
    assert ("network", "198.51.100.0/24") in shared and ("payment", "fp1…") in shared


def test_a_shared_user_agent_alone_links_nothing_and_is_drawn_dashed() -> None:
    members = [(_acc(0), 0.9, True), (_acc(1), 0.9, True)]
    events = {
        "a0": [_ev("a0", "10.0.0.1", "python-requests/2.31", "hi")],
        "a1": [_ev("a1", "10.9.0.1", "python-requests/2.31", "yo")],
    }
    g = graph.build_graph(members, events, {})
    assert g.strong_pairs == 0 and len(g.edges) == 1 and not g.edges[0].strong
    svg = graph.render_svg(g, "c1", "/dashboard/accounts/{}")
    assert 'stroke-dasharray="4 3"' in svg


def test_layout_is_deterministic_and_the_graph_is_thinned() -> None:
    n = 30
    members = [(_acc(i), 0.99, True) for i in range(n)]
    events = {
        f"a{i}": [_ev(f"a{i}", f"198.51.100.{i}", "bot/1", TEMPLATE.format(f"topic {i} of many"))]
        for i in range(n)
    }
    g = graph.build_graph(members, events, {})
    assert g.strong_pairs == n * (n - 1) // 2  # everyone links to everyone...
    assert n - 1 <= len(g.edges) <= n - 1 + n // 2  # ...but a spanning tree plus n/2 edges is drawn
    a = graph.layout(n, g.edges, "c1")
    b = graph.layout(n, g.edges, "c1")
    assert (a == b).all() and a.min() >= 0 and a.max() <= 1


def test_names_and_evidence_are_escaped_in_the_svg() -> None:
    evil = '<script>alert("x")</script>'
    members = [(_acc(0, name=evil), 0.99, True), (_acc(1), 0.99, True)]
    events = {
        "a0": [_ev("a0", "198.51.100.1", evil, TEMPLATE.format("a b c d"))],
        "a1": [_ev("a1", "198.51.100.2", evil, TEMPLATE.format("e f g h"))],
    }
    g = graph.build_graph(members, events, {})
    svg = str(graph.render_svg(g, "c1", "/dashboard/accounts/{}"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_template_parts_are_highlighted_and_payloads_are_not() -> None:
    texts = [TEMPLATE.format(t) for t in ("why is the sky blue", "how magnets work", "what is entropy")]
    texts.append("<b>an unrelated</b> question about cats")
    out = prompts.highlight(texts)
    first = str(out[0].html)
    assert '<mark class="tpl">Question:</mark>' in first
    assert (
        '<mark class="tpl">Explain your reasoning step by step, then give the final answer.</mark>' in first
    )
    assert "<mark" not in first.split("Question:</mark>")[1].split("\n")[0]  # the payload is not marked
    assert out[0].group_size == 3 and out[3].group_size == 1
    assert "&lt;b&gt;an unrelated" in str(out[3].html) and "<b>" not in str(out[3].html)


def test_prompt_text_reads_chat_and_completion_requests() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a"},
        ]
    }
    assert prompts.prompt_text(chat) == "u1"
    parts = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}
        ]
    }
    assert prompts.prompt_text(parts) == "x y"
    assert (
        prompts.prompt_text({"prompt": "p"}) == "p" and prompts.prompt_text({"prompt": ["a", "b"]}) == "a b"
    )
    assert prompts.prompt_text(None) == "" and prompts.prompt_text({"messages": "bad"}) == ""


def test_time_chart_places_every_bucket_and_escapes_labels() -> None:
    start, end = T0, T0 + 24 * 3600 + 1800  # the last bucket is partial and still drawn
    counts = {T0: 5, T0 + 24 * 3600: 7}
    svg = str(
        charts.time_chart(
            start,
            end,
            3600,
            [charts.Bars("<req>", counts, "#123456")],
            [charts.Line("s", [(T0 + 60, 0.5)], "#f00")],
        )
    )
    assert svg.count("<rect x=") == 2 + 2  # two bars, two legend swatches
    assert "&lt;req&gt;" in svg and "<req>" not in svg
    assert ": 7</title>" in svg and "<polyline" in svg


def test_session_cookies_round_trip_and_expire() -> None:
    signer = SessionSigner("tok", ttl_s=60)
    cookie, session = signer.issue("carol", time.time())
    again = signer.verify(cookie, time.time())
    assert again is not None and again.operator == "carol" and again.csrf == session.csrf
    assert signer.verify(cookie, time.time() + 61) is None
    assert (
        signer.csrf_ok(session, session.csrf)
        and not signer.csrf_ok(session, "x")
        and not signer.csrf_ok(session, None)
    )
    assert SessionSigner("other", 60).verify(cookie, time.time()) is None
    assert signer.token_matches("tok") and not signer.token_matches("to")
