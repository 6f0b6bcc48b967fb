"""The labelled traffic generator: determinism, corpus halves, family properties, trace files."""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from scipy.stats import binom

from antidistill.errors import ConfigError, InvalidRequestError
from antidistill.evaluation import corpora
from antidistill.evaluation.attacks import ATTACK_FAMILIES, REASONING_CUES
from antidistill.evaluation.corpora import load_corpora, split_of
from antidistill.evaluation.personas import BENCH_COT, BENIGN_PERSONAS
from antidistill.evaluation.traffic import (
    TraceEvent,
    TrafficConfig,
    account_truth,
    generate_trace,
    preset,
    read_trace_jsonl,
    write_trace_jsonl,
)
from antidistill.risk.types import RiskEvent

SEEDS = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def traces() -> dict[int, list[RiskEvent]]:
    return {seed: generate_trace(preset("small", seed)) for seed in SEEDS}


@pytest.fixture(scope="module")
def trace(traces: dict[int, list[RiskEvent]]) -> list[RiskEvent]:
    return traces[0]


def by_family(events: list[RiskEvent], family: str) -> list[RiskEvent]:
    return [e for e in events if e.family == family]


def prefix24(ip: str) -> str:
    return ip.rsplit(".", 1)[0]


def test_same_seed_same_trace_other_seed_other_trace(trace: list[RiskEvent]) -> None:
    again = generate_trace(preset("small", 0))
    assert again == trace
    assert generate_trace(preset("small", 1))[:50] != trace[:50]


def test_small_preset_size_sorted_and_labelled(trace: list[RiskEvent]) -> None:
    cfg = preset("small", 0)
    assert 4_000 <= len(trace) <= 9_000
    ts = [e.ts for e in trace]
    assert ts == sorted(ts)
    assert cfg.start <= ts[0] and ts[-1] < cfg.start + cfg.days * 86400
    assert all(isinstance(e, TraceEvent) for e in trace)
    assert {e.label for e in trace} == {"benign", "attack"}
    assert {e.family for e in trace if e.label == "attack"} == set(ATTACK_FAMILIES)
    assert {e.family for e in trace if e.label == "benign"} == {*BENIGN_PERSONAS, "mixed_share"}
    assert all(e.messages and e.prompt_tokens >= 1 and e.completion_tokens >= 1 for e in trace)


def test_corpus_halves_are_disjoint_and_cover_everything() -> None:
    calib, test, full = load_corpora("calib"), load_corpora("test"), load_corpora(None)
    a, b = calib.prompt_texts(), test.prompt_texts()
    assert a and b and not a & b
    for part in ("conversations", "qa", "mtbench", "humaneval"):
        assert len(getattr(calib, part)) + len(getattr(test, part)) == len(getattr(full, part))
    assert len(full.mtbench) == 80 and len(full.humaneval) == 164
    assert {"english", "chinese", "russian", "spanish"} <= set(test.languages)
    assert all(split_of(q.turns[0]) == "calib" for q in calib.mtbench)


def test_attack_payloads_come_from_the_chosen_half(trace: list[RiskEvent]) -> None:
    test_texts = set(load_corpora("test").utterances()) | load_corpora("test").prompt_texts()
    calib_texts = load_corpora("calib").prompt_texts()
    bulk = {e.last_user for e in by_family(trace, "bulk")}
    assert bulk <= test_texts
    assert not bulk & calib_texts


def test_missing_corpus_package_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not installed"):
        corpora._package_dir("no_such_corpus_package_xyz")


def test_low_and_slow_stays_under_the_daily_cap(trace: list[RiskEvent]) -> None:
    cfg = preset("small", 0)
    events = by_family(trace, "low_and_slow")
    per_day = Counter((e.account, math.floor(e.ts / 86400)) for e in events)
    assert len({e.account for e in events}) == cfg.n_low_and_slow
    assert max(per_day.values()) <= cfg.low_and_slow_max_per_day
    assert len({d for _, d in per_day}) >= cfg.days - 2  # slow, but every day


def test_hydra_hides_in_ranges_benign_users_also_use(trace: list[RiskEvent]) -> None:
    cfg = preset("small", 0)
    hydra = by_family(trace, "hydra")
    accounts = {e.account for e in hydra}
    assert len(accounts) == cfg.hydra_size
    benign_ranges = {prefix24(e.ip) for e in trace if e.label == "benign" and e.family != "mixed_share"}
    assert {prefix24(e.ip) for e in hydra} & benign_ranges
    # key-creation bursts: first appearances fall in a few 15-minute windows
    first = sorted(min(e.ts for e in hydra if e.account == a) for a in accounts)
    windows = 1 + sum(1 for x, y in itertools.pairwise(first) if y - x > 900)
    assert windows <= max(2, math.ceil(cfg.hydra_size / 80))
    cards = Counter(next(e.payment_fingerprint for e in hydra if e.account == a) for a in accounts)
    assert max(cards.values()) >= 2  # some accounts share a payment fingerprint
    assert len({e.user_agent for e in hydra}) >= 5  # rotating user agents
    assert all(getattr(e, "campaign", None) == "hydra-0" for e in hydra)


def test_mixed_share_fraction_within_binomial_bound(traces: dict[int, list[RiskEvent]]) -> None:
    # Each request of a mixed account is an attack with probability s, independently, so given the
    # account's n requests the attack count K ~ Binomial(n, s). Accept K inside the exact central
    # 1 - 2e-6 interval: over 5 seeds x 3 shares a correct generator fails with probability < 3e-5.
    checked = 0
    for events in traces.values():
        groups: defaultdict[str, list[RiskEvent]] = defaultdict(list)
        for e in by_family(events, "mixed_share"):
            groups[e.account].append(e)
        for evs in groups.values():
            shares = {getattr(e, "share", None) for e in evs}
            assert len(shares) == 1
            s = shares.pop()
            assert s in preset("small").mixed_shares
            n, k = len(evs), sum(e.label == "attack" for e in evs)
            assert n >= 150
            assert binom.ppf(1e-6, n, s) <= k <= binom.isf(1e-6, n, s), (s, n, k)
            checked += 1
    assert checked == len(SEEDS) * 3


def test_benchmark_runs_exist(traces: dict[int, list[RiskEvent]]) -> None:
    full = load_corpora(None)
    mt_first = {q.turns[0] for q in full.mtbench}
    complete_runs, cot = 0, False
    for events in traces.values():
        prompts: defaultdict[str, set[str]] = defaultdict(set)
        for e in by_family(events, "benchmark_run"):
            text = e.last_user
            cot = cot or text.endswith(BENCH_COT)
            prompts[e.account].add(text.removesuffix(f"\n\n{BENCH_COT}"))
        for texts in prompts.values():
            has_mt = mt_first <= texts
            has_he = all(any(t.prompt in x for x in texts) for t in full.humaneval)
            complete_runs += has_mt or has_he
    assert complete_runs >= len(SEEDS)
    assert cot


def test_batch_jobs_are_one_template_at_a_fixed_cadence(trace: list[RiskEvent]) -> None:
    groups: defaultdict[str, list[RiskEvent]] = defaultdict(list)
    for e in by_family(trace, "batch_job"):
        groups[e.account].append(e)
    assert len(groups) == preset("small").n_batch_accounts
    for evs in groups.values():
        assert len({e.system for e in evs}) == 1 and len(evs) >= 100
        gaps = sorted(b.ts - a.ts for a, b in itertools.pairwise(evs))
        assert 1.5 <= gaps[len(gaps) // 2] <= 16.0


def test_enterprise_accounts_share_nat_and_sdk(trace: list[RiskEvent]) -> None:
    per_range: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
    for e in by_family(trace, "enterprise"):
        per_range[(prefix24(e.ip), e.user_agent)].add(e.account)
    assert max(len(v) for v in per_range.values()) >= 5
    assert all(ua.startswith(("OpenAI/", "AsyncOpenAI/")) for _, ua in per_range)


def test_reasoning_cues_in_many_languages(trace: list[RiskEvent]) -> None:
    texts = [" ".join(m.content for m in e.messages) for e in by_family(trace, "reasoning")]
    found = {code for code, (_, cues) in REASONING_CUES.items() if any(c in t for t in texts for c in cues)}
    assert {"en", "zh", "es", "ru"} <= found and len(found) >= 6
    assert any(e.system for e in by_family(trace, "reasoning"))  # the cue also hides in the system prompt
    stepwise_benign = [e for e in trace if e.label == "benign" and "step by step" in e.last_user]
    assert stepwise_benign


def test_paraphrase_rewords_every_request(trace: list[RiskEvent]) -> None:
    heads = [e.last_user[:40] for e in by_family(trace, "paraphrase")]
    assert len(set(heads)) >= 0.5 * len(heads)


def test_adaptive_rotates_accounts_on_the_proxy_pool(trace: list[RiskEvent]) -> None:
    events = by_family(trace, "adaptive")
    sizes = Counter(e.account for e in events)
    lo, hi = preset("small").adaptive_rotate
    assert len(sizes) >= 2
    assert sum(lo <= n <= hi for n in sizes.values()) >= len(sizes) - 1  # the last key may be cut short
    hydra_ranges = {prefix24(e.ip) for e in by_family(trace, "hydra")}
    assert {prefix24(e.ip) for e in events} <= hydra_ranges  # the same proxy pool


def test_bulk_runs_around_the_clock(trace: list[RiskEvent]) -> None:
    hours = {int(e.ts % 86400 // 3600) for e in by_family(trace, "bulk")}
    assert hours == set(range(24))


def test_account_truth(trace: list[RiskEvent]) -> None:
    truth = account_truth(trace)
    mixed = [t for t in truth.values() if t.family == "mixed_share"]
    assert len(mixed) == 3 and all(t.label == "attack" and t.share for t in mixed)
    assert {t.family for t in truth.values() if t.label == "benign"} == set(BENIGN_PERSONAS)
    assert sum(t.n_requests for t in truth.values()) == len(trace)


def test_trace_round_trip(tmp_path: Path, trace: list[RiskEvent]) -> None:
    path = tmp_path / "trace.jsonl"
    assert write_trace_jsonl(trace, path) == len(trace)
    first = orjson.loads(path.read_bytes().split(b"\n", 1)[0])
    assert {
        "ts",
        "account",
        "ip",
        "user_agent",
        "payment_fingerprint",
        "messages",
        "response",
        "label",
        "family",
        "share",
    } <= set(first)
    assert list(read_trace_jsonl(path)) == trace


def test_malformed_line_names_the_line(tmp_path: Path) -> None:
    good = b'{"ts": 1, "account": "a", "messages": [{"role": "user", "content": "hi"}]}\n'
    path = tmp_path / "bad.jsonl"
    path.write_bytes(good + b"\n" + good + b'{"ts": 2, "account": "a", "messages": [}\n')
    with pytest.raises(InvalidRequestError, match="line 4"):
        list(read_trace_jsonl(path))
    path.write_bytes(good + b'{"ts": 2, "messages": [{"role": "user", "content": "x"}]}\n')
    with pytest.raises(InvalidRequestError, match=r"line 2.*account"):
        list(read_trace_jsonl(path))
    path.write_bytes(b'{"ts": "yesterday", "account": "a", "messages": [{"role": "user", "content": "x"}]}\n')
    with pytest.raises(InvalidRequestError, match="line 1"):
        list(read_trace_jsonl(path))


def test_iso_timestamps_and_unknown_fields(tmp_path: Path) -> None:
    rows = [
        {
            "ts": "2026-01-05T00:00:10Z",
            "account": "a",
            "messages": [{"role": "user", "content": "hello"}],
            "extra": {"nested": True},
            "label": "benign",
        },
        {"ts": "2026-01-05T02:00:10+02:00", "account": "a", "messages": [{"role": "user", "content": "x"}]},
        {"ts": "2026-01-05T00:00:10.5", "account": "b", "messages": [{"role": "user", "content": "x"}]},
        {"ts": 1767571210.25, "account": "b", "messages": [{"role": "user", "content": "x"}], "share": 0.1},
    ]
    path = tmp_path / "iso.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    events = list(read_trace_jsonl(path))
    assert [e.ts for e in events] == [1767571210.0, 1767571210.0, 1767571210.5, 1767571210.25]
    assert events[0].label == "benign" and events[0].ip == "" and events[0].prompt_tokens == 1
    assert getattr(events[3], "share", None) == 0.1


def test_bad_config_and_preset_names() -> None:
    with pytest.raises(ConfigError, match="preset"):
        preset("huge", 0)
    with pytest.raises(ConfigError, match="hydra_accounts"):
        TrafficConfig(hydra_accounts=5)
    with pytest.raises(ConfigError, match="split"):
        replace(preset("small"), split="train")  # type: ignore[arg-type]
    assert preset("large").scale > 1 and preset("default").hydra_size == 300
