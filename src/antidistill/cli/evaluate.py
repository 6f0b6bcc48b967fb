"""``antidistill eval``: measure detection quality on labelled traffic."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from antidistill.cli.common import cli_errors

app = typer.Typer(help="Evaluation harnesses (labelled traffic, baselines, reports).", no_args_is_help=True)


@app.command("detection")
@cli_errors
def detection(
    out: Path = typer.Option(Path("eval-detection"), "--out", help="Directory for detection.json/.html."),
    preset: str = typer.Option("default", "--preset", help="Traffic size: small | default | large."),
    embedder: str = typer.Option("minilm", "--embedder", help="minilm | hashing | none."),
    target_fpr: float = typer.Option(1e-3, "--target-fpr", help="FPR the deployed thresholds aim at."),
    baselines: bool = typer.Option(
        True, "--baselines/--no-baselines", help="Also run the MMD and rate-limit baselines."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Calibrate on benign traffic, replay labelled attack traffic, report TPR/FPR, delay and cost."""
    from antidistill.evaluation.detection import DetectionEvalConfig, run_detection_eval

    cfg = DetectionEvalConfig(
        preset=preset, embedder=embedder, target_fpr=target_fpr, baselines=baselines, progress=not quiet
    )
    results = run_detection_eval(cfg, out)
    summary = {}
    for name, det in results["detectors"].items():
        ops = det["operating_points"]
        summary[name] = {
            op: {"tpr": ops[op]["overall"]["rate"], "benign_fpr": ops[op]["benign"]["rate"]} for op in ops
        }
    typer.echo(json.dumps({"out": str(out), "summary": summary}, default=str))
