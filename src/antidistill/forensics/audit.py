"""Run the audit: query the suspect (and the control), run every test on each, decide, write the report.

Order of queries per model: identity probes first (few), then the radioactivity prompts; both share
the model's query budget. The control arm runs exactly the same prompts and parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from antidistill.errors import NotFoundError
from antidistill.forensics.extra_tests import ExtraTestsConfig, add_canary_and_similarity  # issue 6
from antidistill.forensics.identity import identity_prompts, identity_test
from antidistill.forensics.radioactivity import MIN_SCORED_TOKENS, radioactivity_test
from antidistill.forensics.reading import ReadingConfig  # open-weights reading mode (issue 6)
from antidistill.forensics.report import Arm, build_report, write_report
from antidistill.forensics.suspect import SuspectClient
from antidistill.store.base import Store
from antidistill.watermark.keys import WatermarkKey
from antidistill.watermark.texts import TextTokenizer, recorded_keys


@dataclass
class AuditConfig:
    prompts: list[str]
    prompt_source: str  # "builtin" | "events"
    names: list[str]
    reference_rate: float | None = None
    alpha: float = 1e-3
    min_tokens: int = MIN_SCORED_TOKENS
    params: dict[str, Any] = field(default_factory=lambda: {"temperature": 1.0, "max_tokens": 256})
    identity_samples: int = 2
    extra: ExtraTestsConfig = field(default_factory=ExtraTestsConfig)  # canary recall + similarity
    reading: ReadingConfig = field(default_factory=ReadingConfig)  # open weights only (reading mode)


def _identity_answers(client: SuspectClient, cfg: AuditConfig) -> list[str]:
    out: list[str] = []
    for s in range(cfg.identity_samples):
        params = {**cfg.params, "sample": s}  # "sample" only separates cache entries
        out += [a.text for a in client.query(identity_prompts(), params) if a.text is not None]
    return out


def _arm(
    label: str,
    client: SuspectClient,
    cfg: AuditConfig,
    identity: tuple[list[str], list[str] | None],
    tok: TextTokenizer,
    keys: Sequence[WatermarkKey],
    account_keys: Sequence[WatermarkKey],
    store: Store,
) -> Arm:
    answers = client.query(cfg.prompts, cfg.params)
    pairs = [(a.prompt, a.text) for a in answers if a.text]
    radio = radioactivity_test(
        pairs, tok, keys, account_keys, store, alpha=cfg.alpha, min_tokens=cfg.min_tokens
    )
    own, reference = identity
    ident = identity_test(own, cfg.names, control_answers=reference, reference_rate=cfg.reference_rate)
    failed = [a.error for a in answers if a.text is None and a.error]
    target = {**client.describe(), "answers": len(pairs), "failed_or_skipped": len(failed)}
    return Arm(label, target, [radio.result, ident], radio.accounts, radio.curve, client.stats.as_dict())


def key_summary(keys: Sequence[WatermarkKey]) -> list[dict[str, Any]]:
    """Public ids of the keys tested (never key material)."""
    return [
        {"key_id": k.key_id, "scope": k.scope, "ident": k.ident, "version": k.version, "scheme": k.scheme}
        for k in keys
    ]


def run_audit(
    suspect: SuspectClient,
    control: SuspectClient | None,
    cfg: AuditConfig,
    tok: TextTokenizer,
    store: Store,
    master_secret: bytes,
    out_dir: Path,
    *,
    command: str,
    teacher: SuspectClient | None = None,  # our model, for output_similarity
    reference: SuspectClient | None = None,  # a reference model for output_similarity (else control)
) -> dict[str, Any]:
    keys = recorded_keys(store, master_secret, tok)
    try:
        account_keys = recorded_keys(store, master_secret, tok, scope="account")
    except NotFoundError:
        account_keys = []
    s_ident = _identity_answers(suspect, cfg)
    c_ident = _identity_answers(control, cfg) if control is not None else None
    s_arm = _arm("suspect", suspect, cfg, (s_ident, c_ident), tok, keys, account_keys, store)
    c_arm = (
        _arm("control", control, cfg, (c_ident or [], None), tok, keys, account_keys, store)
        if control is not None
        else None
    )
    # --- canary recall + output similarity (forensics/extra_tests.py), appended to both arms ---
    extra_settings = add_canary_and_similarity(
        s_arm,
        c_arm,
        suspect,
        control,
        prompts=cfg.prompts,
        params=cfg.params,
        prompt_source=cfg.prompt_source,
        extra=cfg.extra,
        store=store,
        master_secret=master_secret,
        alpha=cfg.alpha,
        teacher=teacher,
        reference=reference,
    )
    # --- end canary recall + output similarity ---
    # --- open-weights reading mode (forensics/reading.py): arms whose model has local weights ---
    from antidistill.forensics.reading import add_reading_test

    for arm, client in ((s_arm, suspect), (c_arm, control)):
        if arm is not None and client is not None:
            add_reading_test(arm, client, cfg.reading, tok, keys, account_keys, store, alpha=cfg.alpha)
    # --- end open-weights reading mode ---
    settings = {
        **extra_settings,
        "prompt_source": cfg.prompt_source,
        "n_prompts": len(cfg.prompts),
        "params": cfg.params,
        "identity_samples": cfg.identity_samples,
        "names": cfg.names,
        "reference_rate": cfg.reference_rate,
        "alpha": cfg.alpha,
        "min_tokens": cfg.min_tokens,
        "tokenizer": tok.fingerprint,
        "n_keys": len(keys),
        "n_account_keys": len(account_keys),
    }
    report = build_report(s_arm, c_arm, command=command, keys=key_summary(keys), settings=settings)
    write_report(out_dir, report, s_arm, c_arm)
    return report
