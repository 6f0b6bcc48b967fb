"""A seeded campaign for the dashboard tests: a cluster of harvesting accounts behind one /24 with one
prompt template and user agent (half of them sharing a payment fingerprint), plus two ordinary
accounts; their events, the findings the risk engine would store, an engine decision and an audit
report. Used by the in-process tests and the browser test."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from antidistill.risk.types import Finding
from antidistill.store import Event, SqlStore

CLUSTER = "c7"
TEMPLATE = "Question: {q}\nExplain your reasoning step by step, then give the final answer in one line."
TOPICS = [
    "how many primes are below 100",
    "why the sky is blue",
    "what a monad is in Haskell",
    "how TCP slow start works",
    "what causes inflation",
    "how vaccines train the immune system",
    "the proof that sqrt(2) is irrational",
    "how a B-tree splits a node",
    "what the Krebs cycle produces",
    "how RSA key generation works",
    "why ice floats on water",
    "how gradient descent converges",
]
BOT_UA = "harvest-client/2.7 (linux)"


@dataclass
class Campaign:
    cluster: str
    members: list[str]  # account ids
    names: list[str]
    keys: dict[str, str]  # account id -> api key
    benign: list[str]
    finding_ids: list[int] = field(default_factory=list)


def _event(account: str, key_id: str, ts: float, ip: str, ua: str, prompt: str, wm: str | None) -> Event:
    return Event(
        id=f"ev-{uuid.uuid4().hex}",
        ts=ts,
        account_id=account,
        key_id=key_id,
        client_ip=ip,
        user_agent=ua,
        endpoint="chat",
        model="test-model",
        request={"messages": [{"role": "user", "content": prompt}]},
        params={"temperature": 1.0, "max_tokens": 256},
        response="Step 1: ... Final answer: 42",
        prompt_tokens=40,
        completion_tokens=200,
        latency_ms=35.0,
        status=200,
        watermark_key_id=wm,
    )


def seed_campaign(store: SqlStore, now: float, members: int = 6, per_account: int = 12) -> Campaign:
    ids: list[str] = []
    names: list[str] = []
    keys: dict[str, str] = {}
    evts: list[Event] = []
    for i in range(members):
        meta: dict[str, Any] = {"payment_fingerprint": "pm_fp_7f3a9c"} if i % 2 == 0 else {}
        acc = store.create_account(f"harvester-{i:02d}", "standard", meta)
        token, key = store.create_api_key(acc.id, label="bot")
        ids.append(acc.id)
        names.append(acc.name)
        keys[acc.id] = token
        wm = f"wk_acct{i:02d}"
        store.record_watermark_key(
            {"key_id": wm, "scope": "account", "ident": acc.id, "scheme": "gumbel", "version": 1}, "h" * 64
        )
        for j in range(per_account):
            ts = now - 3 * 3600 + i * 40 + j * 600
            prompt = TEMPLATE.format(q=TOPICS[(i + j) % len(TOPICS)])
            evts.append(_event(acc.id, key.id, ts, f"198.51.100.{10 + i}", BOT_UA, prompt, wm))
    benign: list[str] = []
    for name, ip in (("alice", "203.0.113.5"), ("bob", "192.0.2.77")):
        acc = store.create_account(name, "trusted")
        _, key = store.create_api_key(acc.id)
        benign.append(acc.id)
        for j, q in enumerate(
            ["What's a good name for a grey cat?", "Translate 'good morning' to Portuguese."]
        ):
            evts.append(_event(acc.id, key.id, now - 7200 + j * 900, ip, "Mozilla/5.0", q, None))
    store.insert_events(evts)

    reason = f"member of cluster {CLUSTER}: {members} accounts linked by an IP network, prompt templates"
    found: list[Finding] = []
    for i, aid in enumerate(ids):
        for k, n in enumerate((4, 8, 12)):
            score = min(0.99995, 0.6 + 0.13 * k + 0.001 * i)
            found.append(
                Finding(
                    subject_kind="account",
                    subject_id=aid,
                    ts=now - 3 * 3600 + i * 40 + n * 600,
                    score=score,
                    flagged=k == 2,
                    reasons=(
                        reason,
                        f"{n} of {n} prompts ask for step-by-step reasoning (cues in: en); benign accounts "
                        "of this size reach it with p = 5e-05",
                        f"{n} of {n} prompts share one template",
                    ),
                    features={"elicitation": 1.0, "template_repeat": 1.0},
                    cluster=CLUSTER,
                    requests_seen=n,
                )
            )
    found.append(
        Finding(
            subject_kind="cluster",
            subject_id=CLUSTER,
            ts=now - 3600,
            score=0.99998,
            flagged=True,
            reasons=(reason, f"{members * per_account} prompts from one template across {members} accounts"),
            features={"members": float(members)},
            cluster=CLUSTER,
            requests_seen=members * per_account,
        )
    )
    found.append(
        Finding(
            subject_kind="account",
            subject_id=benign[0],
            ts=now - 3000,
            score=0.12,
            flagged=False,
            reasons=("nothing unusual",),
            requests_seen=4,
        )
    )
    store.record_findings(found)
    store.record_engine_decision("account", ids[0], "throttle", "flagged by the risk engine")
    return Campaign(CLUSTER, ids, names, keys, benign)


def write_audit(base: Path, name: str, verdict: str = "distilled", p: float = 3e-9) -> Path:
    folder = base / name
    folder.mkdir(parents=True, exist_ok=True)
    report = {
        "verdict": verdict,
        "p_value": p,
        "log10_p": -8.5,
        "reason": "radioactivity test conclusive",
        "suspect": {"url": "http://127.0.0.1:9/v1", "model": "copycat-7b"},
        "accounts": [{"account": "harvester-00"}],
        "control": {"verdict": "not_distilled"},
    }
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "report.html").write_text(f"<!doctype html><h1>audit {name}: {verdict}</h1>")
    return folder
