"""Canary recall and output similarity in the audit's arms (one call from ``audit.run_audit``).

Both arms (suspect and control) get the same canary questions and the same similarity test:

* ``canary_recall`` (``forensics/canary.py``): exact; a verdict-driving test like radioactivity;
* ``output_similarity`` (``forensics/similarity.py``): supporting evidence only. The teacher's
  answers come from ``teacher`` (our model, queried with the radioactivity prompts and parameters)
  or, when the prompts came from the event log, from the answers recorded there. The reference is
  ``reference`` when given, else the control model for the suspect arm (the control arm then has no
  independent reference: inconclusive).

Accounts named by canary recall are added to the arm's accounts (``"evidence": "canary_recall"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from antidistill.forensics.canary import (
    DEFAULT_CONTROLS,
    DEFAULT_MAX_CANARIES,
    DEFAULT_PHRASINGS,
    run_canary_recall,
    served_canaries,
)
from antidistill.forensics.similarity import event_log_answers, similarity_test
from antidistill.forensics.suspect import cache_key
from antidistill.store.base import Store
from antidistill.watermark.canaries import DEFAULT_PER_ACCOUNT, DEFAULT_POOL_SIZE, CanaryBook

if TYPE_CHECKING:
    from antidistill.forensics.report import Arm
    from antidistill.forensics.suspect import SuspectClient
    from antidistill.risk.embedding import Embedder


class Queryable(Protocol):
    """What an arm's model must offer (``SuspectClient``, or open weights with the same interface)."""

    stats: Any

    def query(self, prompts: Sequence[str], params: Mapping[str, Any] | None = None) -> list[Any]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class ExtraTestsConfig:
    canary: bool = True
    canary_phrasings: int = DEFAULT_PHRASINGS
    canary_max: int = DEFAULT_MAX_CANARIES
    canary_controls: int = DEFAULT_CONTROLS
    canary_params: dict[str, Any] = field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 96})
    pool_size: int = DEFAULT_POOL_SIZE
    per_account: int = DEFAULT_PER_ACCOUNT
    similarity: bool = True
    embedder: Embedder | None = None  # None: the offline character n-gram hashing embedder


def _answers(client: Queryable, prompts: Sequence[str], params: Mapping[str, Any]) -> dict[str, str]:
    """Answers by prompt from a model not queried yet (teacher, reference): within its budget."""
    return {a.prompt: a.text for a in client.query(prompts, params) if a.text}


def _cached(client: Queryable, prompts: Sequence[str], params: Mapping[str, Any]) -> dict[str, str]:
    """The answers an arm already paid for (radioactivity prompts), read from its cache: no query,
    no budget. Works for any client that keys its cache like ``SuspectClient`` (endpoint, the model
    name of ``describe()``, prompt, params); otherwise nothing (the similarity test is inconclusive)."""
    cache, endpoint = getattr(client, "cache", None), getattr(client, "endpoint", None)
    if cache is None or endpoint is None:
        return {}
    name = str(client.describe().get("model"))
    out = {}
    for p in prompts:
        text = cache.get(cache_key(endpoint, name, p, dict(params)))
        if text:
            out[p] = text
    return out


def _name(client: Queryable) -> str:
    return str(client.describe().get("model"))


def add_canary_and_similarity(
    suspect_arm: Arm,
    control_arm: Arm | None,
    suspect: Queryable,
    control: Queryable | None,
    *,
    prompts: Sequence[str],
    params: Mapping[str, Any],
    prompt_source: str,
    extra: ExtraTestsConfig,
    store: Store,
    master_secret: bytes,
    alpha: float,
    teacher: SuspectClient | None = None,
    reference: SuspectClient | None = None,
) -> dict[str, Any]:
    """Run both tests on both arms (appended to ``arm.tests``); returns the report's settings."""
    arms = [(suspect_arm, suspect)] + ([(control_arm, control)] if control_arm and control else [])
    info: dict[str, Any] = {}
    if extra.canary:
        book = CanaryBook(master_secret, extra.pool_size, extra.per_account)
        served = served_canaries(store, book.pool_id)
        for arm, client in arms:
            out = run_canary_recall(
                client,
                book,
                served,
                phrasings=extra.canary_phrasings,
                params=extra.canary_params,
                max_canaries=extra.canary_max,
                controls=extra.canary_controls,
                store=store,
                alpha=alpha,
            )
            arm.tests.append(out.result)
            arm.accounts.extend(out.accounts)
        info["canaries"] = {
            "pool_id": book.pool_id,
            "pool_size": book.pool_size,
            "served_canaries": len(served.indices),
            "served_accounts": len(served.by_account),
            "phrasings": extra.canary_phrasings,
            "max_canaries": extra.canary_max,
            "controls": extra.canary_controls,
            "params": extra.canary_params,
        }
    if extra.similarity:
        if teacher is not None:
            ours, source = _answers(teacher, prompts, params), f"teacher {_name(teacher)} at {teacher.url}"
        elif prompt_source == "events":
            ours, source = event_log_answers(store, prompts), "our answers recorded in the event log"
        else:
            ours, source = {}, "none (pass --teacher-url, or --prompts events)"
        ref_answers = _answers(reference, prompts, params) if reference is not None else None
        ref_label = f"reference model {_name(reference)}" if reference is not None else "reference model"
        for arm, client in arms:
            own = _cached(client, prompts, params)
            ref: dict[str, str] | None
            if arm is suspect_arm and reference is None and control is not None:
                ref, label = _cached(control, prompts, params), f"control model {_name(control)}"
            else:
                ref, label = ref_answers, ref_label
            arm.tests.append(
                similarity_test(
                    own, ours, ref, embedder=extra.embedder, reference_label=label, teacher_label=source
                )
            )
        info["similarity"] = {
            "teacher_answers": source,
            "teacher_answered": len(ours),
            "reference": None if reference is None else {"url": reference.url, "model": reference.model},
            "embedder": "hashing" if extra.embedder is None else type(extra.embedder).__name__,
            "supporting_only": True,
        }
    for arm, client in arms:
        if hasattr(client.stats, "as_dict"):
            arm.stats = client.stats.as_dict()  # the canary questions were paid from the same budget
    return info
