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


@app.command("distillation")
@cli_errors
def distillation(
    out: Path = typer.Option(Path("eval-distillation"), "--out", help="Directory for results.json, work/."),
    quick: bool = typer.Option(False, "--quick", help="The small variant (minutes on 2 cores)."),
    n_harvest: int | None = typer.Option(None, "--n-harvest", min=1, help="Prompts the attacker harvests."),
    harvest_accounts: int | None = typer.Option(
        None, "--harvest-accounts", min=1, help="Accounts the attacker spreads the harvest over."
    ),
    decoys: int | None = typer.Option(None, "--decoys", min=0, help="Decoy accounts with recorded keys."),
    student: str | None = typer.Option(None, "--student", help="gpt2 (from config) | lora (on the teacher)."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Student training epochs."),
    threads: int = typer.Option(2, "--threads", min=1, help="torch threads."),
    seed: int = typer.Option(0, "--seed", help="Prompt sample and training seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Harvest the watermarked teacher through the gateway, train a student and a control student, audit
    both (reading mode and API mode); prints a one-line JSON summary and writes OUT/results.json."""
    from dataclasses import replace

    from antidistill.evaluation.distillation import FULL, QUICK, run_distillation

    cfg = QUICK if quick else FULL
    over: dict[str, object] = {"threads": threads, "seed": seed, "progress": not quiet}
    if n_harvest is not None:
        over["n_harvest"] = n_harvest
        over["sizes"] = tuple(n for n in cfg.sizes if n < n_harvest)
    if harvest_accounts is not None:
        over["harvest_accounts"] = harvest_accounts
    if decoys is not None:
        over["n_decoys"] = decoys
    if student is not None:
        over["student"] = replace(cfg.student, kind=student)
    if epochs is not None:
        over["student"] = replace(over.get("student", cfg.student), epochs=epochs)  # type: ignore[type-var]
    cfg = replace(cfg, **over)  # type: ignore[arg-type]
    results = run_distillation(cfg, out)
    summary = {
        "out": str(out / "results.json"),
        "watermarked_student": {
            k: results["watermarked_student"][k]
            for k in ("p_value", "log10_p", "accounts", "harvester_named")
        },
        "control_student": {k: results["control_student"][k] for k in ("p_value", "log10_p", "accounts")},
        "seconds": results["timings"]["total_s"],
    }
    typer.echo(json.dumps(summary))
