"""Hydra detection: link accounts that behave as one actor and pool their traffic.

Accounts are linked by a payment fingerprint alone, or by the same network (/24 IPv4 or /48 IPv6)
together with one more kind of evidence: the same prompt template, the same uncommon user agent, or a
first appearance in the same 10-minute key-creation burst. (A burst alone is weak evidence at scale:
many honest accounts are created every ten minutes.)
Templates and user agents alone link nothing: honest developers share popular prompt wrappers and
SDKs, and a company NAT alone is not a campaign. A template counts only while it has been seen from
few networks (``TEMPLATE_NETWORKS``): a popular prompt wrapper arrives from everywhere, a campaign's
template from its proxy pool; a user agent counts only while it is uncommon.
Linked accounts form clusters through a union-find; each cluster keeps a pooled ``ActivityState``
so that 1,000 accounts making 30 requests each are scored as the one actor they are.

Memory is bounded: each evidence key remembers only its most recent ``FANOUT`` accounts (a new
account links to them, which is enough to connect a component), and evidence is recorded only on the
first use of a key by an account.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter, deque
from dataclasses import dataclass, field

from antidistill.risk.features import MIN_TEMPLATE_CHARS, ActivityState
from antidistill.risk.types import RequestSignals, RiskEvent

FANOUT = 8
BURST_SECONDS = 600.0
MAX_KEYS_PER_ACCOUNT = 24
TEMPLATE_NETWORKS = 32  # a template seen from more networks than this is popular: it links nothing
UA_RARE_SHARE = 0.01  # a user agent used by more than 1% of accounts (and > 5) links nothing
LINK_KINDS = ("network", "user_agent", "template", "burst", "payment")
_BIT = {k: 1 << i for i, k in enumerate(LINK_KINDS)}
_WORDS = {
    "network": "an IP network",
    "user_agent": "an uncommon user agent",
    "template": "prompt templates",
    "burst": "a key-creation burst",
    "payment": "a payment fingerprint",
}


_INFRA = _BIT["network"]


def links(bits: int) -> bool:
    """Whether this pair's evidence links two accounts (see the module docstring)."""
    return bool(bits & _BIT["payment"]) or (bool(bits & _INFRA) and bits.bit_count() >= 2)


@functools.lru_cache(maxsize=65536)
def network_of(ip: str) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) network of an address; None when it is not an address."""
    head, dot, last = ip.rpartition(".")
    if (
        dot
        and last.isdigit()
        and head.count(".") == 2
        and all(p.isdigit() and int(p) < 256 for p in head.split("."))
    ):
        return f"{head}.0/24" if int(last) < 256 else None
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


@dataclass
class Cluster:
    cid: str
    members: set[str]
    state: ActivityState = field(default_factory=ActivityState)
    link_counts: Counter[str] = field(default_factory=Counter)


class ClusterIndex:
    """Streaming account graph. ``observe`` returns the cluster the account belongs to (if any)."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._clusters: dict[str, Cluster] = {}  # root -> cluster (size >= 2)
        self._recent: dict[tuple[str, str], deque[str]] = {}
        self._account_keys: dict[str, set[tuple[str, str]]] = {}
        self._pairs: dict[tuple[str, str], int] = {}
        self._ua_accounts: Counter[str] = Counter()
        self._template_networks: dict[str, set[str]] = {}
        self._n_accounts = 0
        self._next_id = 0

    # -- union-find ---------------------------------------------------------------------------
    def find(self, a: str) -> str:
        parent = self._parent
        root = a
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(a, a) != root:  # path compression
            parent[a], a = root, parent[a]
        return root

    def cluster_of(self, account: str) -> Cluster | None:
        return self._clusters.get(self.find(account))

    def clusters(self) -> list[Cluster]:
        return list(self._clusters.values())

    def _union(self, a: str, b: str, kinds: int, states: dict[str, ActivityState]) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        ca, cb = self._clusters.get(ra), self._clusters.get(rb)
        if (len(ca.members) if ca else 1) < (len(cb.members) if cb else 1):
            ra, rb, ca, cb = rb, ra, cb, ca
        self._parent[rb] = ra
        if ca is None:
            self._next_id += 1
            ca = Cluster(cid=f"c{self._next_id}", members={ra})
            ca.state.merge(states[ra])
            self._clusters[ra] = ca
        if cb is not None:
            ca.members |= cb.members
            ca.state.merge(cb.state)
            ca.link_counts.update(cb.link_counts)
            del self._clusters[rb]
        else:
            ca.members.add(rb)
            ca.state.merge(states[rb])
        for kind, bit in _BIT.items():
            if kinds & bit:
                ca.link_counts[kind] += 1

    # -- evidence -------------------------------------------------------------------------------
    def _keys(self, event: RiskEvent, signals: RequestSignals, first: bool) -> list[tuple[str, str]]:
        keys: list[tuple[str, str]] = []
        net = network_of(event.ip) if event.ip else None
        if net:
            keys.append(("network", net))
        if event.user_agent:
            keys.append(("user_agent", event.user_agent))
        if event.payment_fingerprint:
            keys.append(("payment", event.payment_fingerprint))
        if signals.payload_chars >= MIN_TEMPLATE_CHARS:
            keys.append(("template", signals.skeleton))
        if first:
            keys.append(("burst", str(int(event.ts // BURST_SECONDS))))
        return keys

    def observe(
        self, event: RiskEvent, signals: RequestSignals, states: dict[str, ActivityState]
    ) -> tuple[Cluster | None, bool]:
        """Record the account's evidence (``states[event.account]`` must already include the event)
        and return ``(its cluster, whether it was a member before this event)``. When it was, the
        caller adds the event to the cluster's pooled state; when it joined now, the merge of its
        state already counted the event."""
        a = event.account
        net = network_of(event.ip) if event.ip else None
        before = self._clusters.get(self.find(a))
        seen = self._account_keys.get(a)
        first = seen is None
        if seen is None:
            seen = self._account_keys[a] = set()
            self._n_accounts += 1
        for key in self._keys(event, signals, first):
            if key in seen or len(seen) >= MAX_KEYS_PER_ACCOUNT:
                continue
            seen.add(key)
            kind = key[0]
            if kind == "template":
                nets = self._template_networks.setdefault(key[1], set())
                if len(nets) <= TEMPLATE_NETWORKS and net is not None:
                    nets.add(net)
                if len(nets) > TEMPLATE_NETWORKS:
                    continue
            if kind == "user_agent":
                self._ua_accounts[key[1]] += 1
                common = max(5, UA_RARE_SHARE * self._n_accounts)
                if self._n_accounts < 100 or self._ua_accounts[key[1]] > common:
                    continue
            recent = self._recent.setdefault(key, deque(maxlen=FANOUT))
            for b in recent:
                pair = (a, b) if a < b else (b, a)
                bits = self._pairs.get(pair, 0) | _BIT[kind]
                self._pairs[pair] = bits
                if links(bits):
                    self._union(a, b, bits, states)
            recent.append(a)
        cluster = self.cluster_of(a)
        # a member before (possibly of a cluster merged away just now): its pooled state lacks this
        # event; an account that joined now brought its own state, which already counts it
        was_member = before is not None and cluster is not None
        return cluster, was_member

    def describe_links(self, cluster: Cluster) -> str:
        kinds = [(_WORDS[k], c) for k, c in cluster.link_counts.most_common() if c]
        if not kinds:
            return f"{len(cluster.members)} linked accounts"
        what = ", ".join(w for w, _ in kinds[:3])
        return f"{len(cluster.members)} accounts linked by {what}"
