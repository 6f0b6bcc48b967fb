"""Replay: score a recorded trace offline, in time order, as if live.

The engine sees the requests exactly as the gateway would hand them over (in batches of ``chunk``
requests, time order kept), so ``first_flagged_ts`` and ``requests_before_flag`` are what a live
deployment would have achieved. Also the benign calibration (``calibrate``): the same replay over
benign-only traffic, fitted with ``fit_calibration``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from antidistill.errors import ConfigError
from antidistill.risk.calibration import Calibration
from antidistill.risk.embedding import Embedder, HashingEmbedder, MiniLmEmbedder
from antidistill.risk.engine import RiskEngine, fit_calibration
from antidistill.risk.types import RiskEvent
from antidistill.settings import RiskSettings

log = logging.getLogger("antidistill.replay")

# MiniLM costs ~21 MFLOP per token (about 40-70 short prompts/s per core here): topic features need
# the gist of a prompt, so texts are cut at 32 word pieces.
EMBEDDERS: dict[str, Callable[[], Embedder | None]] = {
    "minilm": lambda: MiniLmEmbedder(max_length=32),
    "hashing": HashingEmbedder,
    "none": lambda: None,
}


def make_embedder(name: str) -> Embedder | None:
    try:
        factory = EMBEDDERS[name]
    except KeyError:
        raise ConfigError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}") from None
    emb = factory()
    if emb is not None:
        emb.name = name  # type: ignore[attr-defined]  # recorded in calibrations; checked on load
    return emb


@dataclass
class ReplayStats:
    requests: int = 0
    out_of_order: int = 0
    seconds_wall: float = 0.0
    seconds_cpu: float = 0.0


def chunks(events: Iterable[RiskEvent], size: int) -> Iterator[list[RiskEvent]]:
    buf: list[RiskEvent] = []
    for e in events:
        buf.append(e)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def run(
    engine: RiskEngine,
    events: Iterable[RiskEvent],
    *,
    chunk: int = 2000,
    total: int | None = None,
    progress: bool = True,
    on_chunk: Callable[[list[RiskEvent]], None] | None = None,
) -> ReplayStats:
    """Feed ``events`` (in time order) to ``engine``. Out-of-order events are counted and processed
    at the latest time seen (a trace should be sorted; ``sort -k`` on the ts field, or sort in the
    generator)."""
    stats = ReplayStats()
    last = float("-inf")
    w0, c0 = time.perf_counter(), time.process_time()
    with tqdm(total=total, unit="req", disable=not progress, desc="replay", smoothing=0.05) as bar:
        for batch in chunks(events, chunk):
            for e in batch:
                if e.ts < last:
                    stats.out_of_order += 1
                else:
                    last = e.ts
            engine.process(batch)
            if on_chunk is not None:
                on_chunk(batch)
            stats.requests += len(batch)
            bar.update(len(batch))
    stats.seconds_wall = time.perf_counter() - w0
    stats.seconds_cpu = time.process_time() - c0
    if stats.out_of_order:
        log.warning(
            "%d requests were out of time order; they were scored at the latest time seen", stats.out_of_order
        )
    return stats


def write_findings(engine: RiskEngine, path: Path) -> int:
    """One JSON line per account (the replay output format)."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for account in engine.accounts:
            s = engine.account_summary(account)
            fh.write(json.dumps(s, ensure_ascii=False) + "\n")
            n += 1
    return n


def calibrate(
    benign: Iterable[RiskEvent],
    embedder: Embedder | None,
    target_fpr: float,
    *,
    chunk: int = 2000,
    total: int | None = None,
    progress: bool = True,
    meta: dict[str, object] | None = None,
) -> Calibration:
    engine = RiskEngine(None, embedder)
    run(engine, benign, chunk=chunk, total=total, progress=progress)
    return fit_calibration(engine, target_fpr, meta)


def cache_path(tag: str) -> Path:
    digest = hashlib.sha256(tag.encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "antidistill" / "risk" / f"calibration-{digest}.npz"


def engine_from_settings(risk: RiskSettings, *, progress: bool = False) -> RiskEngine:
    """The engine a deployment runs: its calibration file, or the default built from the bundled
    benign corpora (cached after the first build)."""
    if risk.calibration_file:
        cal = Calibration.load(Path(risk.calibration_file))
        if cal.reference_embeddings is not None and cal.embedder != risk.embedder:
            raise ConfigError(
                f"calibration {risk.calibration_file} was fitted with embedder {cal.embedder!r}, but "
                f"risk.embedder is {risk.embedder!r}; use the same one or re-calibrate"
            )
    else:
        from antidistill.evaluation.detection import default_calibration

        cal = default_calibration(risk.embedder, risk.target_fpr, progress=progress)
    return RiskEngine(cal, make_embedder(risk.embedder))
