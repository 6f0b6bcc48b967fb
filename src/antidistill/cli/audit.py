"""``antidistill audit``: was a suspect model distilled from ours? Writes DIR/report.json and report.html."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import typer

from antidistill.cli.common import ConfigOption, DatabaseOption, cli_errors, fail, settings_from
from antidistill.forensics.suspect import API_KEY_ENV

CONTROL_KEY_ENV = "ANTIDISTILL_CONTROL_API_KEY"
TEACHER_KEY_ENV = "ANTIDISTILL_TEACHER_API_KEY"  # canary recall + similarity (issue 6)
REFERENCE_KEY_ENV = "ANTIDISTILL_REFERENCE_API_KEY"


@cli_errors
def audit(
    suspect_url: str | None = typer.Option(
        None, "--suspect-url", help="OpenAI-compatible base URL of the suspect (or --suspect-path)."
    ),
    suspect_model: str | None = typer.Option(None, "--suspect-model", help="Model name at --suspect-url."),
    out: Path = typer.Option(
        ..., "--out", help="Directory for report.json, report.html and the answer cache."
    ),
    control_url: str | None = typer.Option(
        None, "--control-url", help="A model NOT trained on our outputs (control arm; strongly advised)."
    ),
    control_model: str | None = typer.Option(None, "--control-model", help="Model name at --control-url."),
    suspect_path: str | None = typer.Option(
        None,
        "--suspect-path",
        help="Local open weights: a transformers directory or a .gguf file (adds the reading-mode test).",
    ),
    # --- open weights (issue 6) ---
    control_path: str | None = typer.Option(
        None, "--control-path", help="Control model as local weights (directory or .gguf)."
    ),
    reading_texts: Path | None = typer.Option(
        None,
        "--reading-texts",
        help='Texts for reading mode: JSONL {"text", "prompt"?|"messages"?} [default: event log].',
    ),
    reading_n: int = typer.Option(400, "--reading-n", min=1, help="Event-log answers read (uniform sample)."),
    reading_account: str | None = typer.Option(
        None, "--reading-account", help="Read only this account's answers from the event log."
    ),
    reading_filter: str = typer.Option(
        "window", "--reading-filter", help="window (exact null) | tuple (published dedup)."
    ),
    local_batch: int = typer.Option(8, "--local-batch", min=1, help="Prompts per generate() batch (local)."),
    # --- end ---
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
    # --- canary recall + output similarity (issue 6) ---
    canaries: bool = typer.Option(
        True, "--canaries/--no-canaries", help="Canary recall: ask about every canary served (event log)."
    ),
    canary_phrasings: int = typer.Option(
        3, "--canary-phrasings", min=1, max=4, help="Questions per canary (different phrasings)."
    ),
    canary_max: int = typer.Option(
        256, "--canary-max", min=1, help="Most served canaries asked about (a uniform sample beyond)."
    ),
    canary_controls: int = typer.Option(
        16, "--canary-controls", min=0, help="Never-served canaries asked too (a cross-check of the null)."
    ),
    similarity: bool = typer.Option(
        True, "--similarity/--no-similarity", help="Output similarity to ours vs a reference (supporting)."
    ),
    teacher_url: str | None = typer.Option(
        None, "--teacher-url", help="Our model's OpenAI-compatible URL (similarity; else the event log)."
    ),
    teacher_model: str | None = typer.Option(None, "--teacher-model", help="Model name at --teacher-url."),
    reference_url: str | None = typer.Option(
        None, "--reference-url", help="A reference model for similarity [default: the control model]."
    ),
    reference_model: str | None = typer.Option(
        None, "--reference-model", help="Model name at --reference-url."
    ),
    similarity_embedder: str = typer.Option(
        "hashing", "--similarity-embedder", help="hashing (character n-grams) | minilm (sentence embeddings)."
    ),
    # --- end ---
    config: str | None = ConfigOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Audit a suspect model: radioactivity (our watermark in its answers, accounts named) and identity
    probes, with a control arm; prints a one-line JSON summary. Verdict rule: see report.json."""
    if (suspect_path is None) == (suspect_url is None):
        fail("give the suspect as --suspect-url with --suspect-model, or as --suspect-path (not both)")
    if suspect_url is not None and suspect_model is None:
        fail("--suspect-url needs --suspect-model")
    if control_path is not None and control_url is not None:
        fail("give the control as --control-url/--control-model or as --control-path (not both)")
    if reading_filter not in ("window", "tuple"):
        fail("--reading-filter must be window or tuple")
    from antidistill.forensics.local_suspect import check_model_path

    for option, path in (("--suspect-path", suspect_path), ("--control-path", control_path)):
        if path is not None:
            check_model_path(path, option)  # a clear error before anything is loaded
    if (control_url is None) != (control_model is None):
        fail("--control-url and --control-model go together")
    if (teacher_url is None) != (teacher_model is None) or (reference_url is None) != (
        reference_model is None
    ):
        fail("--teacher-url/--teacher-model and --reference-url/--reference-model go in pairs")
    if similarity_embedder not in ("hashing", "minilm"):
        fail("--similarity-embedder must be hashing or minilm")
    if prompts not in ("builtin", "events"):
        fail("--prompts must be builtin or events")
    if not 0.0 < alpha < 1.0:
        fail("--alpha must be between 0 and 1")
    if reference_rate is not None and not 0.0 < reference_rate < 1.0:
        fail("--reference-rate must be between 0 and 1")
    settings = settings_from(config, database_url=database_url, **{"backend.local.model_path": model_path})

    from antidistill.forensics.audit import AuditConfig, run_audit
    from antidistill.forensics.extra_tests import ExtraTestsConfig
    from antidistill.forensics.local_suspect import LocalSuspect
    from antidistill.forensics.radioactivity import builtin_prompts, event_log_prompts
    from antidistill.forensics.reading import ReadingConfig, load_reading_texts
    from antidistill.forensics.suspect import ResponseCache, SuspectClient
    from antidistill.risk.embedding import MiniLmEmbedder
    from antidistill.store import open_store
    from antidistill.watermark import texts as wm_texts
    from antidistill.watermark.keystore import load_master_secret

    command = shlex.join(
        [
            "antidistill",
            "audit",
            *(
                ["--suspect-path", suspect_path]
                if suspect_path
                else ["--suspect-url", str(suspect_url), "--suspect-model", str(suspect_model)]
            ),
            "--out",
            str(out),
        ]
        + (["--control-path", control_path] if control_path else [])
        + (["--reading-texts", str(reading_texts)] if reading_texts else [])
        + ["--reading-n", str(reading_n), "--reading-filter", reading_filter]
        + (["--reading-account", reading_account] if reading_account else [])
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
        + ([] if canaries else ["--no-canaries"])
        + ["--canary-phrasings", str(canary_phrasings), "--canary-max", str(canary_max)]
        + ["--canary-controls", str(canary_controls)]
        + ([] if similarity else ["--no-similarity"])
        + (["--teacher-url", teacher_url, "--teacher-model", str(teacher_model)] if teacher_url else [])
        + (
            ["--reference-url", reference_url, "--reference-model", str(reference_model)]
            if reference_url
            else []
        )
        + ["--similarity-embedder", similarity_embedder]
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
        suspect: Any
        control: Any
        if suspect_path is not None:  # open weights (issue 6)
            suspect = LocalSuspect(
                suspect_path, answer_cache, budget=budget, batch_size=local_batch, progress=progress
            )
        else:
            suspect = SuspectClient(
                str(suspect_url),
                str(suspect_model),
                answer_cache,
                api_key=os.environ.get(API_KEY_ENV) or None,
                budget=budget,
                concurrency=concurrency,
                progress=progress,
            )
        control = None
        if control_path is not None:
            control = LocalSuspect(
                control_path,
                answer_cache,
                budget=budget,
                batch_size=local_batch,
                progress=progress,
                label="control",
            )
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
        teacher = reference = None  # canary recall + similarity (issue 6)
        if teacher_url is not None and teacher_model is not None:
            teacher = SuspectClient(
                teacher_url,
                teacher_model,
                answer_cache,
                api_key=os.environ.get(TEACHER_KEY_ENV) or None,
                label="teacher",
                budget=budget,
                concurrency=concurrency,
                progress=progress,
            )
        if reference_url is not None and reference_model is not None:
            reference = SuspectClient(
                reference_url,
                reference_model,
                answer_cache,
                api_key=os.environ.get(REFERENCE_KEY_ENV) or None,
                label="reference",
                budget=budget,
                concurrency=concurrency,
                progress=progress,
            )
        wm = settings.watermark
        extra = ExtraTestsConfig(
            canary=canaries,
            canary_phrasings=canary_phrasings,
            canary_max=canary_max,
            canary_controls=canary_controls,
            pool_size=wm.canary_pool_size,
            per_account=wm.canary_per_account,
            similarity=similarity,
            embedder=MiniLmEmbedder() if similarity_embedder == "minilm" else None,
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
            extra=extra,
            reading=ReadingConfig(
                documents=load_reading_texts(reading_texts) if reading_texts is not None else None,
                n_texts=reading_n,
                account_id=_account_id(store, reading_account),
                filter="tuple" if reading_filter == "tuple" else "window",
                min_tokens=min_tokens,
            ),
        )
        report = run_audit(
            suspect,
            control,
            cfg,
            tok,
            store,
            secret,
            out,
            command=command,
            teacher=teacher,
            reference=reference,
        )
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


def _account_id(store: Any, name_or_id: str | None) -> str | None:
    """The account id of ``--reading-account`` (a name or an id); an unknown one is an error."""
    if name_or_id is None:
        return None
    account = store.get_account(name_or_id)
    if account is None:
        fail(f"--reading-account {name_or_id!r}: no such account")
    return str(account.id)
