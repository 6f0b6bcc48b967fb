"""``antidistill audit``: was a suspect model distilled from ours? Writes DIR/report.json and report.html."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import typer

from antidistill.cli.common import ConfigOption, DatabaseOption, cli_errors, fail, settings_from
from antidistill.forensics.suspect import API_KEY_ENV

CONTROL_KEY_ENV = "ANTIDISTILL_CONTROL_API_KEY"


@cli_errors
def audit(
    suspect_url: str = typer.Option(..., "--suspect-url", help="OpenAI-compatible base URL of the suspect."),
    suspect_model: str = typer.Option(..., "--suspect-model", help="Model name to ask the suspect for."),
    out: Path = typer.Option(
        ..., "--out", help="Directory for report.json, report.html and the answer cache."
    ),
    control_url: str | None = typer.Option(
        None, "--control-url", help="A model NOT trained on our outputs (control arm; strongly advised)."
    ),
    control_model: str | None = typer.Option(None, "--control-model", help="Model name at --control-url."),
    suspect_path: str | None = typer.Option(
        None, "--suspect-path", help="Local open weights (not implemented yet: use --suspect-url)."
    ),
    budget: int = typer.Option(400, "--budget", min=0, help="Most new queries sent to each model."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests in flight per model."),
    prompts: str = typer.Option(
        "builtin", "--prompts", help="builtin (offline corpora) | events (our event log)."
    ),
    n_prompts: int = typer.Option(200, "--n-prompts", min=1, help="Radioactivity prompts per model."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="max_tokens asked per answer."),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="Sampling temperature asked."),
    name: list[str] = typer.Option(
        ["antidistill"], "--name", help="Our model / company name for the identity probes (repeatable)."
    ),
    reference_rate: float | None = typer.Option(
        None,
        "--reference-rate",
        help="Rate at which unrelated models name us (identity test without control).",
    ),
    identity_samples: int = typer.Option(2, "--identity-samples", min=1, help="Samples per identity probe."),
    alpha: float = typer.Option(
        1e-3, "--alpha", help="Level at which accounts are named (Bonferroni over keys)."
    ),
    min_tokens: int = typer.Option(2000, "--min-tokens", min=1, help="Fewer scored tokens: inconclusive."),
    cache: Path | None = typer.Option(
        None, "--cache", help="Answer cache (SQLite) [default: OUT/answers.sqlite]."
    ),
    model_path: str | None = typer.Option(
        None, "--model-path", help="Our tokenizer source: HF directory or .gguf (default: backend.local)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
    config: str | None = ConfigOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Audit a suspect model: radioactivity (our watermark in its answers, accounts named) and identity
    probes, with a control arm; prints a one-line JSON summary. Verdict rule: see report.json."""
    if suspect_path is not None:
        fail(
            "--suspect-path (open-weights reading mode) is not implemented yet; "
            "serve the model and use --suspect-url"
        )
    if (control_url is None) != (control_model is None):
        fail("--control-url and --control-model go together")
    if prompts not in ("builtin", "events"):
        fail("--prompts must be builtin or events")
    if not 0.0 < alpha < 1.0:
        fail("--alpha must be between 0 and 1")
    if reference_rate is not None and not 0.0 < reference_rate < 1.0:
        fail("--reference-rate must be between 0 and 1")
    settings = settings_from(config, database_url=database_url, **{"backend.local.model_path": model_path})

    from antidistill.forensics.audit import AuditConfig, run_audit
    from antidistill.forensics.radioactivity import builtin_prompts, event_log_prompts
    from antidistill.forensics.suspect import ResponseCache, SuspectClient
    from antidistill.store import open_store
    from antidistill.watermark import texts as wm_texts
    from antidistill.watermark.keystore import load_master_secret

    command = shlex.join(
        [
            "antidistill",
            "audit",
            "--suspect-url",
            suspect_url,
            "--suspect-model",
            suspect_model,
            "--out",
            str(out),
        ]
        + (["--control-url", control_url, "--control-model", str(control_model)] if control_url else [])
        + ["--budget", str(budget), "--prompts", prompts, "--n-prompts", str(n_prompts)]
        + ["--max-tokens", str(max_tokens), "--temperature", str(temperature)]
        + [x for n in name for x in ("--name", n)]
        + (["--reference-rate", str(reference_rate)] if reference_rate is not None else [])
        + [
            "--identity-samples",
            str(identity_samples),
            "--alpha",
            str(alpha),
            "--min-tokens",
            str(min_tokens),
        ]
        + (["--model-path", model_path] if model_path else [])
        + (["--config", config] if config else [])
        + (["--database-url", database_url] if database_url else [])
    )
    store = open_store(settings.database_url)
    answer_cache = ResponseCache(cache or out / "answers.sqlite")
    try:
        store.migrate()
        secret = load_master_secret(settings.watermark, create=False)
        tok = wm_texts.load_text_tokenizer(settings.backend.local)
        chosen = builtin_prompts(n_prompts) if prompts == "builtin" else event_log_prompts(store, n_prompts)
        if not chosen:
            fail("the event log holds no prompts; use --prompts builtin")
        suspect = SuspectClient(
            suspect_url,
            suspect_model,
            answer_cache,
            api_key=os.environ.get(API_KEY_ENV) or None,
            budget=budget,
            concurrency=concurrency,
            progress=progress,
        )
        control = None
        if control_url is not None and control_model is not None:
            key = os.environ.get(CONTROL_KEY_ENV) or os.environ.get(API_KEY_ENV) or None
            control = SuspectClient(
                control_url,
                control_model,
                answer_cache,
                api_key=key,
                label="control",
                budget=budget,
                concurrency=concurrency,
                progress=progress,
            )
        cfg = AuditConfig(
            prompts=chosen,
            prompt_source=prompts,
            names=list(name),
            reference_rate=reference_rate,
            alpha=alpha,
            min_tokens=min_tokens,
            params={"temperature": temperature, "max_tokens": max_tokens},
            identity_samples=identity_samples,
        )
        report = run_audit(suspect, control, cfg, tok, store, secret, out, command=command)
    finally:
        answer_cache.close()
        store.close()
    summary = {
        "verdict": report["verdict"],
        "p_value": report["p_value"],
        "log10_p": report["log10_p"],
        "accounts": [a.get("account") or a.get("ident") for a in report["accounts"]],
        "control_verdict": (report["control"] or {}).get("verdict"),
        "report": str(out / "report.json"),
        "html": str(out / "report.html"),
    }
    typer.echo(json.dumps(summary))
