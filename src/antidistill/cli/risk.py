"""``antidistill replay`` and ``antidistill risk calibrate``: the risk engine offline."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from antidistill.cli.common import ConfigOption, DatabaseOption, cli_errors, fail, settings_from
from antidistill.errors import ConfigError
from antidistill.evaluation import replay as rp
from antidistill.evaluation.traffic import read_trace_jsonl
from antidistill.risk.calibration import Calibration

app = typer.Typer(help="The risk engine offline: benign calibration.", no_args_is_help=True)

EmbedderOption = typer.Option("minilm", "--embedder", help="Prompt embeddings: minilm | hashing | none.")
FprOption = typer.Option(1e-3, "--target-fpr", help="Share of benign accounts allowed to be flagged.")


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def load_or_build_calibration(
    path: str | None, embedder: str, target_fpr: float, progress: bool
) -> Calibration:
    """The calibration at ``path``; without one, the default built from the bundled benign corpora
    (cached after the first build)."""
    if path:
        cal = Calibration.load(Path(path))
        if cal.embedder != embedder and cal.reference_embeddings is not None:
            raise ConfigError(
                f"calibration {path} was fitted with embedder {cal.embedder!r}, not {embedder!r}; "
                "pass the same --embedder or re-calibrate"
            )
        return cal
    from antidistill.evaluation.detection import default_calibration

    return default_calibration(embedder, target_fpr, progress=progress)


@app.command("calibrate")
@cli_errors
def calibrate_cmd(
    out: Path = typer.Option(..., "--out", help="Where to write the calibration (.npz)."),
    trace: Path | None = typer.Option(
        None, "--trace", help="Benign trace (JSONL) from your own deployment; default: bundled corpora."
    ),
    embedder: str = EmbedderOption,
    target_fpr: float = FprOption,
) -> None:
    """Fit the benign calibration (thresholds for a target false-positive rate)."""
    if trace is None:
        from antidistill.evaluation.detection import build_default_calibration

        cal = build_default_calibration(embedder, target_fpr, progress=True)
    else:
        if not trace.exists():
            fail(f"trace not found: {trace}")
        cal = rp.calibrate(
            read_trace_jsonl(trace),
            rp.make_embedder(embedder),
            target_fpr,
            total=_count_lines(trace),
            meta={"source": str(trace)},
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    cal.save(out)
    typer.echo(json.dumps({"out": str(out), "threshold": cal.threshold, **cal.meta}, default=str))


@cli_errors
def replay_cmd(
    trace: Path = typer.Argument(..., help="Trace JSONL: one request per line, in time order."),
    out: Path = typer.Option(..., "--out", help="Findings JSONL: one line per account."),
    calibration: str | None = typer.Option(
        None, "--calibration", help="Calibration .npz (default: bundled)."
    ),
    embedder: str = EmbedderOption,
    target_fpr: float = FprOption,
    chunk: int = typer.Option(2000, "--chunk", min=1, help="Requests scored together."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score a recorded trace offline, in time order, as if live."""
    if not trace.exists():
        fail(f"trace not found: {trace}")
    cal = load_or_build_calibration(calibration, embedder, target_fpr, progress=not quiet)
    engine = rp.RiskEngine(cal, rp.make_embedder(embedder))
    stats = rp.run(
        engine, read_trace_jsonl(trace), chunk=chunk, total=_count_lines(trace), progress=not quiet
    )
    n = rp.write_findings(engine, out)
    flagged = sum(1 for r in engine.accounts.values() if r.first_flag_ts is not None)
    summary = {
        "requests": stats.requests,
        "accounts": n,
        "flagged": flagged,
        "clusters": len(engine.graph.clusters()),
        "out_of_order": stats.out_of_order,
        "seconds": round(stats.seconds_wall, 1),
        "requests_per_s": round(stats.requests / max(stats.seconds_wall, 1e-9), 1),
        "out": str(out),
    }
    typer.echo(json.dumps(summary))


@cli_errors
def analyze_cmd(
    config: str | None = ConfigOption,
    database_url: str | None = DatabaseOption,
    once: bool = typer.Option(False, "--once", help="Score what is in the store now, then exit."),
    interval: float | None = typer.Option(
        None, "--interval", help="Seconds between passes (default: risk.interval_s)."
    ),
) -> None:
    """Run the risk engine as its own process over the shared store (multi-replica deployments)."""
    import signal
    import threading

    from antidistill.evaluation.replay import engine_from_settings
    from antidistill.risk.worker import RiskWorker
    from antidistill.store import open_store

    settings = settings_from(config, database_url=database_url)
    logging.basicConfig(
        level=settings.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    store = open_store(settings.database_url)
    store.migrate()
    try:
        engine = engine_from_settings(settings.risk, progress=True)
        worker = RiskWorker(store, engine, batch_size=settings.risk.batch_size)
        if once:
            n = worker.step()
            worker.release()
            if not worker.has_led:
                fail(
                    "another risk worker holds the lease (a gateway with risk.enabled, or another "
                    "`antidistill analyze`): stop it, or wait for its lease to run out (30 s)"
                )
        else:
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            worker.run_forever(interval if interval is not None else settings.risk.interval_s, stop)
            n = worker.stats.events
        s = worker.stats
        typer.echo(
            json.dumps(
                {
                    "events": n,
                    "scored": s.scored,
                    "findings": s.findings,
                    "flagged_accounts": s.flagged_accounts,
                    "errors": s.errors,
                }
            )
        )
    finally:
        store.close()
