"""Labelled traffic for the detection evaluation: benign accounts (``personas``) mixed with attacker
families (``attacks``), and the replay trace format (JSON lines).

``generate_trace(preset("default", seed=1))`` gives ~90k requests over two weeks, every one labelled
``"benign"``/``"attack"`` with its persona or attacker family; the same config always gives the same
trace. ``split`` picks the corpus half the prompts come from (calibrate on ``"calib"``, evaluate on
``"test"``); ``scale`` multiplies the number of accounts (not their behaviour), so the same mix can
be made ~1M requests long for a speed test.

Trace line: ``{"ts", "account", "ip", "user_agent", "payment_fingerprint", "messages": [{"role",
"content"}], "response", "label", "family", "share"}`` plus ``prompt_tokens``, ``completion_tokens``
and ``campaign`` (the multi-account campaign a hydra/adaptive account belongs to).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from antidistill.errors import ConfigError, InvalidRequestError
from antidistill.evaluation.attacks import simulate_attacks
from antidistill.evaluation.corpora import SPLITS, Corpora, Split, load_corpora
from antidistill.evaluation.personas import (
    Identity,
    PromptPools,
    prompt_pools,
    random_prefix,
    simulate_benign,
)
from antidistill.risk.types import Message, RiskEvent

START_2026_01_05 = 1767571200.0  # Monday 2026-01-05 00:00 UTC
SYNTHETIC_RESPONSE = "[synthetic response]"


@dataclass(frozen=True, slots=True)
class TraceEvent(RiskEvent):
    """A RiskEvent with the rest of the ground truth: the attacker share of a ``mixed_share`` account
    (on all its events) and the campaign id of a multi-account campaign."""

    share: float | None = None
    campaign: str | None = None


@dataclass(frozen=True, slots=True)
class TrafficConfig:
    seed: int = 0
    start: float = START_2026_01_05  # epoch seconds
    days: int = 14
    split: Split = "test"
    scale: float = 1.0  # multiplies account counts (not per-account volumes, not days)
    # benign population (n_benign_accounts includes the hard negatives)
    n_benign_accounts: int = 2000
    n_benchmark_accounts: int = 12
    n_batch_accounts: int = 10
    batch_payloads: tuple[int, int] = (150, 450)  # per run (1-4 runs)
    n_enterprise_accounts: int = 300
    n_enterprise_orgs: int = 8
    vpn_fraction: float = 0.05  # ordinary users reaching us through the hydra proxy ranges
    benign_stepwise_rate: float = 0.03
    proxy_ranges: int = 24  # /24 ranges of the residential proxy pool
    # attacker families: accounts and requests per account
    n_bulk: int = 3
    bulk_requests: int = 2000
    n_sweep: int = 3
    sweep_requests: int = 1200
    n_reasoning: int = 3
    reasoning_requests: int = 1200
    n_paraphrase: int = 3
    paraphrase_requests: int = 1000
    n_low_and_slow: int = 5
    low_and_slow_max_per_day: int = 50
    n_hydra: int = 1  # campaigns (not scaled)
    hydra_accounts: int = 300  # per campaign, 10..10,000 after scaling
    hydra_requests: int = 30
    n_mimicry: int = 3
    mimicry_requests: int = 1200
    n_adaptive: int = 2
    adaptive_requests: int = 2500
    adaptive_rotate: tuple[int, int] = (50, 300)
    mixed_shares: tuple[float, ...] = (0.05, 0.10, 0.25)
    mixed_accounts_per_share: int = 2
    mixed_requests: int = 600

    def __post_init__(self) -> None:
        problems = []
        if self.split not in SPLITS:
            problems.append(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.days < 1 or not self.scale > 0:
            problems.append("days must be >= 1 and scale > 0")
        if not 10 <= self.hydra_accounts <= 10_000:
            problems.append(f"hydra_accounts must be in 10..10000, got {self.hydra_accounts}")
        if not 1 <= self.batch_payloads[0] <= self.batch_payloads[1]:
            problems.append(f"batch_payloads must be (lo, hi) with 1 <= lo <= hi, got {self.batch_payloads}")
        if not 1 <= self.adaptive_rotate[0] <= self.adaptive_rotate[1]:
            problems.append(
                f"adaptive_rotate must be (lo, hi) with 1 <= lo <= hi, got {self.adaptive_rotate}"
            )
        if not all(0 < s < 1 for s in self.mixed_shares):
            problems.append(f"mixed_shares must lie in (0, 1), got {self.mixed_shares}")
        if not (0 <= self.vpn_fraction <= 1 and 0 <= self.benign_stepwise_rate <= 1):
            problems.append("vpn_fraction and benign_stepwise_rate must lie in [0, 1]")
        if self.low_and_slow_max_per_day < 2 or self.proxy_ranges < 1:
            problems.append("low_and_slow_max_per_day must be >= 2 and proxy_ranges >= 1")
        if problems:
            raise ConfigError("bad TrafficConfig: " + "; ".join(problems))

    def scaled(self, n: int) -> int:
        return 0 if n <= 0 else max(1, round(n * self.scale))

    @property
    def hydra_size(self) -> int:
        return min(10_000, max(10, self.scaled(self.hydra_accounts)))


def preset(name: str, seed: int = 0) -> TrafficConfig:
    """``small`` (~5k requests, for tests), ``default`` (~90k), ``eval`` (~350k: the detection
    evaluation), ``large`` (~1M, for speed tests)."""
    base = TrafficConfig(seed=seed)
    presets = {
        "small": replace(
            base,
            days=7,
            n_benign_accounts=160,
            n_benchmark_accounts=2,
            n_batch_accounts=2,
            batch_payloads=(100, 200),
            n_enterprise_accounts=24,
            n_enterprise_orgs=2,
            vpn_fraction=0.1,
            proxy_ranges=6,
            n_bulk=1,
            bulk_requests=300,
            n_sweep=1,
            sweep_requests=240,
            n_reasoning=1,
            reasoning_requests=240,
            n_paraphrase=1,
            paraphrase_requests=200,
            n_low_and_slow=2,
            hydra_accounts=20,
            n_mimicry=1,
            mimicry_requests=240,
            n_adaptive=1,
            adaptive_requests=400,
            mixed_accounts_per_share=1,
            mixed_requests=300,
        ),
        "default": base,
        # the detection evaluation: enough benign accounts for a 0.1% FPR point (>= 3,000) and
        # enough attacker accounts per family for useful Wilson intervals
        "eval": replace(
            base,
            n_benign_accounts=4000,
            n_benchmark_accounts=24,
            n_batch_accounts=20,
            n_enterprise_accounts=600,
            n_enterprise_orgs=16,
            n_bulk=12,
            n_sweep=12,
            n_reasoning=12,
            n_paraphrase=12,
            n_low_and_slow=20,
            n_hydra=3,
            n_mimicry=12,
            n_adaptive=4,
            mixed_accounts_per_share=10,
        ),
        "large": replace(base, scale=10.5),
    }
    if name not in presets:
        raise ConfigError(f"unknown traffic preset {name!r}; choose one of {', '.join(presets)}")
    return presets[name]


@dataclass
class World:
    """The state of one generation run. One rng, drawn from in a fixed order: same config, same trace."""

    cfg: TrafficConfig
    rng: np.random.Generator = field(init=False)
    pools: PromptPools = field(init=False)
    full: Corpora = field(init=False)  # both halves: benchmark harnesses run the whole benchmark
    events: list[RiskEvent] = field(init=False, default_factory=list)
    proxy_pool: tuple[str, ...] = field(init=False)
    _ids: set[str] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.cfg.seed)
        self.pools = prompt_pools(self.cfg.split)
        self.full = load_corpora(None)
        self.proxy_pool = tuple(random_prefix(self) for _ in range(self.cfg.scaled(self.cfg.proxy_ranges)))

    @property
    def start(self) -> float:
        return self.cfg.start

    @property
    def end(self) -> float:
        return self.cfg.start + self.cfg.days * 86400.0

    @property
    def weekday0(self) -> int:
        return datetime.fromtimestamp(self.cfg.start, UTC).weekday()

    def _new_id(self, prefix: str) -> str:
        while True:
            ident = f"{prefix}{int(self.rng.integers(1 << 48)):012x}"
            if ident not in self._ids:
                self._ids.add(ident)
                return ident

    def new_account(self) -> str:
        return self._new_id("acct_")

    def new_payment(self) -> str:
        return self._new_id("pm_")

    def emit(
        self,
        ident: Identity,
        ts: float,
        messages: tuple[Message, ...],
        family: str,
        *,
        label: str = "benign",
        ip: str | None = None,
        ua: str | None = None,
        response: str | None = None,
        completion_tokens: int = 0,
        share: float | None = None,
        campaign: str | None = None,
    ) -> None:
        if not self.start <= ts < self.end:
            return
        self.events.append(
            TraceEvent(
                ts=round(ts, 3),
                account=ident.account,
                messages=messages,
                ip=ip or ident.ips[0],
                user_agent=ua or ident.user_agent,
                payment_fingerprint=ident.payment,
                response=response or SYNTHETIC_RESPONSE,
                prompt_tokens=max(1, sum(len(m.content) for m in messages) // 4),
                completion_tokens=completion_tokens,
                label=label,
                family=family,
                share=share,
                campaign=campaign,
            )
        )


def generate_trace(cfg: TrafficConfig) -> list[RiskEvent]:
    """Benign and attack traffic for ``cfg``, sorted by ``ts``; every event is a :class:`TraceEvent`."""
    world = World(cfg)
    simulate_benign(world)
    simulate_attacks(world)
    world.events.sort(key=attrgetter("ts"))
    return world.events


@dataclass(frozen=True, slots=True)
class AccountTruth:
    label: str  # "attack" if any of the account's requests is an attack request
    family: str  # the attacker family, else the benign persona
    share: float | None
    campaign: str | None
    n_requests: int


def account_truth(events: Iterable[RiskEvent]) -> dict[str, AccountTruth]:
    """Per-account ground truth of a labelled trace."""
    out: dict[str, AccountTruth] = {}
    for e in events:
        prev = out.get(e.account)
        attack = e.label == "attack" or (prev is not None and prev.label == "attack")
        family = e.family if prev is None or (e.label == "attack" and prev.label != "attack") else prev.family
        out[e.account] = AccountTruth(
            label="attack" if attack else "benign",
            family=family or "",
            share=getattr(e, "share", None) if prev is None else prev.share,
            campaign=getattr(e, "campaign", None) if prev is None else prev.campaign,
            n_requests=1 if prev is None else prev.n_requests + 1,
        )
    return out


# ---------------------------------------------------------------- trace files


def _to_json(e: RiskEvent) -> dict[str, Any]:
    return {
        "ts": e.ts,
        "account": e.account,
        "ip": e.ip,
        "user_agent": e.user_agent,
        "payment_fingerprint": e.payment_fingerprint,
        "messages": [{"role": m.role, "content": m.content} for m in e.messages],
        "response": e.response,
        "label": e.label,
        "family": e.family,
        "share": getattr(e, "share", None),
        "campaign": getattr(e, "campaign", None),
        "prompt_tokens": e.prompt_tokens,
        "completion_tokens": e.completion_tokens,
    }


def write_trace_jsonl(events: Iterable[RiskEvent], path: str | Path) -> int:
    """Write one JSON object per line; returns the number of lines."""
    n = 0
    with open(path, "wb", buffering=1 << 20) as fh:
        for e in events:
            fh.write(orjson.dumps(_to_json(e), option=orjson.OPT_APPEND_NEWLINE))
            n += 1
    return n


def read_trace_jsonl(path: str | Path) -> Iterator[RiskEvent]:
    """Events of a trace file (blank lines skipped, unknown fields ignored). ``ts`` is epoch seconds or
    an ISO-8601 string (naive means UTC). Missing token counts are estimated as characters / 4.
    A malformed line raises InvalidRequestError naming the file and line number."""
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                event = _from_json(orjson.loads(line))
            except (ValueError, TypeError, KeyError) as exc:
                reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                raise InvalidRequestError(
                    f"trace {path}, line {lineno}: malformed event: {reason}", param=f"line {lineno}"
                ) from None
            yield event


def _parse_ts(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise TypeError(f"ts must be epoch seconds or an ISO-8601 string, got {type(v).__name__}")
    if isinstance(v, str):
        try:
            ts = float(v)
        except ValueError:
            try:
                dt = datetime.fromisoformat(v.strip())
            except ValueError:
                raise ValueError(f"ts {v!r} is neither epoch seconds nor ISO-8601") from None
            ts = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
    else:
        ts = float(v)
    if not math.isfinite(ts):
        raise ValueError(f"ts must be finite, got {v!r}")
    return ts


def _opt(obj: dict[str, Any], key: str, kinds: type | tuple[type, ...], default: Any = None) -> Any:
    v = obj.get(key, default)
    if v is not None and (isinstance(v, bool) or not isinstance(v, kinds)):
        raise TypeError(f"{key} must be {kinds}, got {type(v).__name__}")
    return v


def _from_json(obj: Any) -> TraceEvent:
    if not isinstance(obj, dict):
        raise TypeError(f"a trace line must be a JSON object, got {type(obj).__name__}")
    account = obj["account"]
    if not isinstance(account, str) or not account:
        raise TypeError("account must be a non-empty string")
    raw = obj["messages"]
    if not isinstance(raw, list) or not raw:
        raise TypeError("messages must be a non-empty list")
    msgs = []
    for m in raw:
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise TypeError('each message must be {"role": str, "content": str}')
        msgs.append(Message(m["role"], m["content"]))
    response = _opt(obj, "response", str)
    prompt_tokens = _opt(obj, "prompt_tokens", int)
    completion_tokens = _opt(obj, "completion_tokens", int)
    share = _opt(obj, "share", (int, float))
    return TraceEvent(
        ts=_parse_ts(obj["ts"]),
        account=account,
        messages=tuple(msgs),
        ip=_opt(obj, "ip", str) or "",
        user_agent=_opt(obj, "user_agent", str) or "",
        payment_fingerprint=_opt(obj, "payment_fingerprint", str),
        response=response,
        prompt_tokens=sum(len(m.content) for m in msgs) // 4 if prompt_tokens is None else prompt_tokens,
        completion_tokens=len(response or "") // 4 if completion_tokens is None else completion_tokens,
        label=_opt(obj, "label", str),
        family=_opt(obj, "family", str),
        share=None if share is None else float(share),
        campaign=_opt(obj, "campaign", str),
    )
