"""What each dashboard page shows, read from the store (synchronous: the routes run these in a worker
thread). Every read is bounded: pages of at most ``PAGE`` rows, the latest findings and decisions,
time series over a bounded range, a cluster graph of at most ``GRAPH_NODES`` accounts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from antidistill.dashboard import charts, graph, prompts
from antidistill.dashboard.series import RANGES, SettledCounts
from antidistill.errors import InvalidRequestError, NotFoundError
from antidistill.policy import Policy
from antidistill.store import SqlStore
from antidistill.store.base import Account, RiskState

PAGE = 50
TOP = 10
ACCOUNT_FINDINGS = 100
ACCOUNT_DECISIONS = 50
SAMPLE_EVENTS = 20
GRAPH_NODES = 60
GRAPH_EVENTS = 10  # latest events read per graph node for the link evidence
SPAN_MEMBERS = 2000  # members whose first/last event make the cluster's first/last seen
BLOCK_PAGE = 500
LIVE_BATCH = 50


def cluster_row(s: RiskState) -> dict[str, Any]:
    return {
        "id": s.subject_id,
        "score": s.score,
        "flagged": s.flagged,
        "members": int(s.features.get("members", 0)),
        "requests": s.requests_seen,
        "first_flagged_at": s.first_flagged_at,
        "updated": s.ts,
        "reason": s.reasons[0] if s.reasons else "",
    }


def account_row(s: RiskState, account: Account | None = None) -> dict[str, Any]:
    return {
        "id": s.subject_id,
        "name": account.name if account else s.subject_id,
        "status": account.status if account else "",
        "tier": account.tier if account else "",
        "score": s.score,
        "flagged": s.flagged,
        "requests": s.requests_seen,
        "cluster": s.cluster,
        "first_flagged_at": s.first_flagged_at,
        "updated": s.ts,
        "reason": s.reasons[0] if s.reasons else "",
    }


def range_of(key: str | None) -> tuple[str, float, float]:
    key = key or "24h"
    if key not in RANGES:
        raise InvalidRequestError(
            f"range must be one of {', '.join(RANGES)} (got {key[:20]!r})", param="range"
        )
    span, bucket = RANGES[key]
    return key, span, bucket


def overview(store: SqlStore, counts: SettledCounts, now: float, range_key: str | None) -> dict[str, Any]:
    key, span, bucket = range_of(range_key)
    since = now - span
    requests = counts.event_counts(store, since, now, bucket, now)
    flagged_a = dict(store.flagged_counts("account", since, now, bucket))
    flagged_c = dict(store.flagged_counts("cluster", since, now, bucket))
    by_action: dict[str, dict[float, int]] = {}
    for t, action, n in store.decision_counts(since, now, bucket):
        by_action.setdefault(action, {})[t] = n
    decision_bars = [
        charts.Bars(a, c, charts.ACTION_COLOURS.get(a, charts.PALETTE[i % len(charts.PALETTE)]))
        for i, (a, c) in enumerate(sorted(by_action.items()))
    ]
    top_accounts = store.top_risk("account", limit=TOP, flagged_only=True)
    names = store.accounts_by_ids([s.subject_id for s in top_accounts])
    return {
        "range": key,
        "ranges": list(RANGES),
        "kpi": {
            "requests": sum(requests.values()),
            "flagged_accounts": store.count_flagged("account"),
            "flagged_clusters": store.count_flagged("cluster"),
            "clusters": store.count_subjects("cluster"),
            "decisions": sum(sum(c.values()) for c in by_action.values()),
        },
        "chart_requests": charts.time_chart(
            since,
            now,
            bucket,
            [charts.Bars("requests", requests, charts.PALETTE[0])],
            title="Requests",
            width=1300,
        ),
        "chart_flagged": charts.time_chart(
            since,
            now,
            bucket,
            [
                charts.Bars("accounts", flagged_a, charts.PALETTE[1]),
                charts.Bars("clusters", flagged_c, charts.PALETTE[2]),
            ],
            title="Newly flagged accounts and clusters",
            width=640,
            height=200,
        ),
        "chart_actions": charts.time_chart(
            since,
            now,
            bucket,
            decision_bars,
            title="Actions taken (engine and operators)",
            width=640,
            height=200,
        ),
        "top_by_score": [cluster_row(s) for s in store.top_risk("cluster", limit=TOP)],
        "top_by_volume": [cluster_row(s) for s in store.top_volume("cluster", limit=TOP)],
        "top_accounts": [account_row(s, names.get(s.subject_id)) for s in top_accounts],
        "recent_decisions": store.recent_decisions(15),
        "last_finding_id": store.last_finding_id(),
    }


def subject_list(store: SqlStore, kind: str, flagged: bool, order: str, page: int) -> dict[str, Any]:
    if order not in ("score", "volume"):
        raise InvalidRequestError("order must be score or volume", param="order")
    if order == "volume":
        states = store.top_volume(kind, limit=PAGE + 1, offset=page * PAGE)
        if flagged:
            states = [s for s in states if s.flagged]
    else:
        states = store.top_risk(kind, limit=PAGE + 1, offset=page * PAGE, flagged_only=flagged)
    more = len(states) > PAGE
    states = states[:PAGE]
    if kind == "account":
        names = store.accounts_by_ids([s.subject_id for s in states])
        rows = [account_row(s, names.get(s.subject_id)) for s in states]
    else:
        rows = [cluster_row(s) for s in states]
    return {
        "rows": rows,
        "page": page,
        "more": more,
        "flagged": flagged,
        "order": order,
        "flagged_total": store.count_flagged(kind),
        "total": store.count_subjects(kind),
    }


@dataclass(frozen=True)
class Cursor:
    ts: float
    id: str


def parse_cursor(raw: str | None) -> tuple[float, str] | None:
    """``"<ts>:<event id>"`` (the "older" link of the sample prompts)."""
    if not raw:
        return None
    ts, sep, eid = raw.partition(":")
    try:
        value = float(ts)
    except ValueError:
        value = float("nan")
    if not sep or not eid or value != value or len(eid) > 200:
        raise InvalidRequestError("before must be <ts>:<event id>", param="before")
    return value, eid


def account_page(
    store: SqlStore, policy: Policy | None, ref: str, now: float, range_key: str | None, before: str | None
) -> dict[str, Any]:
    key, span, bucket = range_of(range_key)
    cursor = parse_cursor(before)
    account = store.get_account(ref)
    if account is None:
        raise NotFoundError(f"no account with id or name {ref[:80]!r}", param="account")
    aid = account.id
    state = store.risk_state("account", aid)
    found = store.findings_with_ids("account", aid, ACCOUNT_FINDINGS)
    decisions = store.decisions_for("account", aid, ACCOUNT_DECISIONS)
    active = next((d for d in decisions if d.active), None) or store.active_decision("account", aid)
    first, last = store.activity_span([aid]).get(aid, (None, None))
    end = now if last is None or last >= now - span else last + bucket
    requests = dict(store.event_counts(end - span, end, bucket, account_id=aid))
    score_points = sorted((f.ts, f.score) for _, f in found)
    events = store.account_events(aid, SAMPLE_EVENTS, cursor)
    shown = prompts.highlight([prompts.prompt_text(e.request) for e in events])
    keys = store.watermark_key_records(scope="account", ident=aid)
    evaluated = policy.evaluate(account.tier, state, active).to_json() if policy is not None else None
    return {
        "account": account,
        "state": state,
        "findings": found,
        "decisions": decisions,
        "active": active,
        "first_seen": first,
        "last_seen": last,
        "range": key,
        "ranges": list(RANGES),
        "chart": charts.time_chart(
            end - span,
            end,
            bucket,
            [charts.Bars("requests", requests, charts.PALETTE[0])],
            [charts.Line("risk score", score_points, charts.PALETTE[1])],
            title="Requests and risk score",
            width=1300,
        ),
        "samples": list(zip(events, shown, strict=True)),
        "older": f"{events[-1].ts!r}:{events[-1].id}" if len(events) == SAMPLE_EVENTS else None,
        "watermark_keys": keys,
        "event_key_ids": sorted({e.watermark_key_id for e in events if e.watermark_key_id}),
        "api_keys": store.list_api_keys(aid),
        "policy": evaluated,
    }


def cluster_page(store: SqlStore, cid: str, page: int) -> dict[str, Any]:
    state = store.risk_state("cluster", cid)
    total = store.count_cluster_members(cid)
    if state is None and total == 0:
        raise NotFoundError(f"no cluster {cid[:80]!r}", param="cluster")
    members = store.cluster_members(cid, limit=PAGE, offset=page * PAGE)
    everyone = store.cluster_members(cid, limit=SPAN_MEMBERS)
    shown = everyone[:GRAPH_NODES]
    accounts = store.accounts_by_ids([s.subject_id for s in [*members, *shown]])
    spans = store.activity_span([s.subject_id for s in everyone])
    firsts = [lo for lo, _ in spans.values() if lo is not None]
    lasts = [hi for _, hi in spans.values() if hi is not None]
    evts = store.latest_events([s.subject_id for s in shown], GRAPH_EVENTS)
    graph_members = [(accounts[s.subject_id], s.score, s.flagged) for s in shown if s.subject_id in accounts]
    g = graph.build_graph(graph_members, evts, {a: lo for a, (lo, _) in spans.items()})
    rows = []
    for s in members:
        row = account_row(s, accounts.get(s.subject_id))
        row["first_seen"], row["last_seen"] = spans.get(s.subject_id, (None, None))
        rows.append(row)
    return {
        "cid": cid,
        "state": state,
        "engine_members": int(state.features.get("members", 0)) if state else None,
        "total_members": total,
        "member_volume": sum(s.requests_seen for s in everyone),
        "first_seen": min(firsts) if firsts else None,
        "last_seen": max(lasts) if lasts else None,
        "span_partial": total > len(everyone),
        "members": rows,
        "page": page,
        "more": total > (page + 1) * PAGE,
        "graph": g,
        "graph_svg": graph.render_svg(g, cid, "/dashboard/accounts/{}"),
        "graph_partial": total > len(shown),
        "kind_labels": graph.KIND_LABEL,
        "kind_short": graph.KIND_SHORT,
        "kind_colours": graph.KIND_COLOUR,
        "decisions": store.decisions_for("cluster", cid, 20),
    }


def cluster_member_ids(store: SqlStore, cid: str) -> list[str]:
    """Every account whose latest finding names the cluster (paged through the index)."""
    out: list[str] = []
    while True:
        page = store.cluster_members(cid, limit=BLOCK_PAGE, offset=len(out))
        out.extend(s.subject_id for s in page)
        if len(page) < BLOCK_PAGE:
            return out


def live(store: SqlStore, after: int) -> dict[str, Any]:
    found = store.findings_after(after, LIVE_BATCH)
    last = found[-1][0] if found else after
    return {
        "last_id": last,
        "findings": [
            {
                "id": i,
                "ts": f.ts,
                "subject_kind": f.subject_kind,
                "subject_id": f.subject_id,
                "score": f.score,
                "flagged": f.flagged,
                "cluster": f.cluster,
                "reason": f.reasons[0] if f.reasons else "",
            }
            for i, f in found
        ],
        "flagged_accounts": store.count_flagged("account"),
        "flagged_clusters": store.count_flagged("cluster"),
    }
