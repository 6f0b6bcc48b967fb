"""A cluster's accounts as a graph whose edges say what links them.

The risk engine keeps its account graph in memory (``risk/clusters.py``) and stores, per account,
only the cluster it ended up in. The dashboard rebuilds the evidence behind the links from what the
store holds, with the engine's own rules: for each shown member, its latest events give its
networks (/24 or /48), user agents and prompt templates (skeleton hashes of payloads long enough
to count), its first event gives its key-creation burst (10-minute window) and its metadata its
payment fingerprint. Two accounts are linked as the engine links them (``links``: a payment
fingerprint, or a network plus one more kind). Pairs that share only weaker evidence are drawn dashed
when nothing stronger was found.

To stay readable, the drawing keeps a maximum spanning forest of the strongest links (most kinds
first) plus ``nodes / 2`` of the next strongest edges; the evidence table lists every shared value.
The layout is a deterministic force-directed one (Fruchterman-Reingold, numpy, seeded by the cluster
id), computed on the server and sent as inline SVG.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from markupsafe import Markup, escape

from antidistill.risk.clusters import BURST_SECONDS, LINK_KINDS, links, network_of
from antidistill.risk.features import MIN_TEMPLATE_CHARS
from antidistill.risk.skeleton import template_skeleton
from antidistill.risk.worker import to_risk_event
from antidistill.store.base import Account, Event

BIT = {k: 1 << i for i, k in enumerate(LINK_KINDS)}
KIND_LABEL = {
    "network": "IP range",
    "user_agent": "user agent",
    "template": "template",
    "burst": "timing",
    "payment": "payment",
}
KIND_SHORT = {"network": "IP", "user_agent": "UA", "template": "tpl", "burst": "time", "payment": "pay"}
KIND_COLOUR = {
    "payment": "#b00020",
    "network": "#3b6fb6",
    "template": "#edae49",
    "user_agent": "#66a182",
    "burst": "#8d6a9f",
}
COLOUR_PRIORITY = (
    "payment",
    "template",
    "user_agent",
    "burst",
    "network",
)  # an edge's colour: its rarest kind
EXTRA_EDGES_SHARE = 0.5  # edges drawn beyond the spanning forest, per node
GRAVITY = 0.08


@dataclass(frozen=True)
class Node:
    account_id: str
    name: str
    score: float
    flagged: bool
    blocked: bool


@dataclass(frozen=True)
class Edge:
    a: int
    b: int
    bits: int
    strong: bool  # links() holds: the engine would link these two

    @property
    def kinds(self) -> list[str]:
        return [k for k in LINK_KINDS if self.bits & BIT[k]]

    @property
    def label(self) -> str:
        return " + ".join(KIND_LABEL[k] for k in self.kinds)

    @property
    def short(self) -> str:
        return "+".join(KIND_SHORT[k] for k in self.kinds)


@dataclass
class Evidence:
    kind: str
    value: str  # shown to the operator
    accounts: set[str] = field(default_factory=set)


@dataclass
class ClusterGraph:
    nodes: list[Node]
    edges: list[Edge]
    evidence: list[Evidence]  # shared values, most shared first
    pairs_by_kind: dict[str, int]  # linked pairs (among the shown nodes) that share each kind
    strong_pairs: int
    weak_pairs: int


def _keys(account: Account, evts: Sequence[Event], first_ts: float | None) -> dict[tuple[str, str], str]:
    """The account's evidence keys -> a readable value for each."""
    keys: dict[tuple[str, str], str] = {}
    for e in evts:
        if e.client_ip:
            net = network_of(e.client_ip)
            if net:
                keys[("network", net)] = net
        if e.user_agent:
            keys[("user_agent", e.user_agent)] = e.user_agent[:120]
        rev = to_risk_event(e)
        if rev is not None and rev.messages:
            last = rev.last_user  # the engine's template key: the skeleton of the last user message
            if len(last) >= MIN_TEMPLATE_CHARS:
                sk = template_skeleton(last)
                keys.setdefault(("template", sk.hash), sk.text[:160])
    fp = account.metadata.get("payment_fingerprint") if isinstance(account.metadata, dict) else None
    if fp:
        keys[("payment", str(fp))] = f"{str(fp)[:8]}…"
    start = first_ts if first_ts is not None else account.created_at
    window = int(start // BURST_SECONDS)
    when = window * BURST_SECONDS
    keys[("burst", str(window))] = f"first seen in the 10-minute window starting {_utc(when)}"
    return keys


def _utc(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def build_graph(
    members: Sequence[tuple[Account, float, bool]],
    events: Mapping[str, Sequence[Event]],
    first_seen: Mapping[str, float | None],
) -> ClusterGraph:
    """The graph of ``members`` ((account, score, flagged), at most a few hundred) from their events."""
    nodes = [Node(a.id, a.name, score, flagged, a.status == "blocked") for a, score, flagged in members]
    index = {n.account_id: i for i, n in enumerate(nodes)}
    shared: dict[tuple[str, str], Evidence] = {}
    for account, _, _ in members:
        for key, shown in _keys(account, events.get(account.id, ()), first_seen.get(account.id)).items():
            shared.setdefault(key, Evidence(key[0], shown)).accounts.add(account.id)
    bits: dict[tuple[int, int], int] = defaultdict(int)
    for (kind, _), ev in shared.items():
        ids = sorted(index[a] for a in ev.accounts)
        for x in range(len(ids)):
            for y in range(x + 1, len(ids)):
                bits[(ids[x], ids[y])] |= BIT[kind]
    strong = {p: b for p, b in bits.items() if links(b)}
    # weak pairs are drawn only when nothing links (the evidence lies outside the events read)
    candidates = strong or {p: b for p, b in bits.items() if b & ~BIT["burst"]}
    edges = _thin(candidates, len(nodes))
    by_kind = {k: sum(1 for b in strong.values() if b & BIT[k]) for k in LINK_KINDS}
    evidence = sorted(
        (e for e in shared.values() if len(e.accounts) >= 2),
        key=lambda e: (-len(e.accounts), e.kind, e.value),
    )
    return ClusterGraph(
        nodes=nodes,
        edges=[Edge(a, b, bb, links(bb)) for (a, b), bb in edges],
        evidence=evidence,
        pairs_by_kind=by_kind,
        strong_pairs=len(strong),
        weak_pairs=len(bits) - len(strong),
    )


def _thin(pairs: Mapping[tuple[int, int], int], n: int) -> list[tuple[tuple[int, int], int]]:
    """A maximum spanning forest (most kinds first) plus n/2 of the next strongest pairs."""
    order = sorted(pairs.items(), key=lambda kv: (-kv[1].bit_count(), kv[0]))
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    keep: list[tuple[tuple[int, int], int]] = []
    rest: list[tuple[tuple[int, int], int]] = []
    for (a, b), bb in order:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
            keep.append(((a, b), bb))
        else:
            rest.append(((a, b), bb))
    budget = int(EXTRA_EDGES_SHARE * n)
    return keep + rest[:budget]


def layout(n: int, edges: Sequence[Edge], seed: str, iterations: int = 120) -> np.ndarray:
    """Fruchterman-Reingold positions in the unit square (deterministic for a seed)."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))
    if n == 0:
        return np.zeros((0, 2))
    pos = rng.random((n, 2))
    if n == 1:
        return np.array([[0.5, 0.5]])
    k = math.sqrt(1.0 / n)
    src = np.array([e.a for e in edges], dtype=int)
    dst = np.array([e.b for e in edges], dtype=int)
    temp = 0.1
    for _ in range(iterations):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.maximum(np.linalg.norm(delta, axis=2), 1e-3)
        disp = (delta / dist[:, :, None] * (k * k / dist)[:, :, None]).sum(axis=1)
        if len(src):
            d = pos[src] - pos[dst]
            dl = np.maximum(np.linalg.norm(d, axis=1), 1e-3)
            f = d / dl[:, None] * (dl * dl / k)[:, None]
            np.add.at(disp, src, -f)
            np.add.at(disp, dst, f)
        disp -= (pos - 0.5) * GRAVITY * n * k  # keeps components (and lone nodes) close together
        length = np.maximum(np.linalg.norm(disp, axis=1), 1e-9)
        pos += disp / length[:, None] * np.minimum(length, temp)[:, None]
        temp *= 0.96
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    return np.asarray((pos - lo) / np.maximum(hi - lo, 1e-9))


def render_svg(graph: ClusterGraph, seed: str, href: str, width: int = 860, height: int = 520) -> Markup:
    """The graph as inline SVG; each node links to ``href.format(account_id)``."""
    pad = 50
    linked = sorted({e.a for e in graph.edges} | {e.b for e in graph.edges})
    alone = [i for i in range(len(graph.nodes)) if i not in set(linked)]
    at = {old: new for new, old in enumerate(linked)}
    sub = [Edge(at[e.a], at[e.b], e.bits, e.strong) for e in graph.edges]
    bottom = height - pad - (40 if alone else 0)  # accounts without evidence: a row at the bottom
    xy: list[tuple[float, float]] = [(0.0, 0.0)] * len(graph.nodes)
    for i, (x, y) in zip(linked, layout(len(linked), sub, seed), strict=True):
        xy[i] = (pad + x * (width - 2 * pad), pad + y * (bottom - pad))
    for k, i in enumerate(alone):
        xy[i] = (pad + (k + 0.5) * (width - 2 * pad) / len(alone), height - pad + 10)
    out = [
        f'<svg class="graph" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" aria-label="linked accounts" xmlns="http://www.w3.org/2000/svg">'
    ]
    for e in graph.edges:
        (x1, y1), (x2, y2) = xy[e.a], xy[e.b]
        colour = KIND_COLOUR[next((k for k in COLOUR_PRIORITY if e.bits & BIT[k]), "network")]
        dash = "" if e.strong else ' stroke-dasharray="4 3"'
        out.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
            f'stroke-width="{1 + e.bits.bit_count() * 0.6:.1f}"{dash} class="edge">'
            f"<title>{escape(graph.nodes[e.a].name)} — {escape(graph.nodes[e.b].name)}: "
            f"{escape(e.label)}</title></line>"
        )
    for e in graph.edges:
        (x1, y1), (x2, y2) = xy[e.a], xy[e.b]
        out.append(
            f'<text x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2 - 3:.1f}" text-anchor="middle" '
            f'class="edge-label">{escape(e.short)}</text>'
        )
    for node, (x, y) in zip(graph.nodes, xy, strict=True):
        fill = "#b00020" if node.flagged else "#edae49" if node.score >= 0.9 else "#3b6fb6"
        ring = ' stroke="#111" stroke-width="3"' if node.blocked else ' stroke="#fff" stroke-width="1.5"'
        link = escape(href.format(node.account_id))
        status = "blocked" if node.blocked else "active"
        out.append(
            f'<a href="{link}" class="node"><circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="{fill}"{ring}>'
            f"<title>{escape(node.name)} ({escape(node.account_id)}): score {node.score:.4f}, {status}"
            f"</title></circle>"
            f'<text x="{x:.1f}" y="{y + 21:.1f}" text-anchor="middle" class="node-label">'
            f"{escape(node.name[:18])}</text></a>"
        )
    out.append("</svg>")
    return Markup("".join(out))
