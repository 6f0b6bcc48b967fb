"""End-to-end distillation experiment: harvest the watermarked teacher, train students, audit them.

1. The embedded teacher (SmolLM2-135M-Instruct) runs behind the gateway (in-process app, local
   backend, watermarking on: every answer is marked with its account's Gumbel key). The store holds
   the harvesting account(s), a few benign accounts and ``n_decoys`` decoy accounts, each with a
   recorded key, so naming the harvester is a test among more than ``n_decoys`` account keys.
2. The attacker harvests ``n_harvest`` prompts (offline corpora) through the OpenAI API from
   ``harvest_accounts`` accounts (round robin); benign accounts send a few requests too.
3. The same prompts go to a second gateway with watermarking off (same teacher, its own store): the
   control answers, i.e. what the distiller would have got from an unmarked copy of the teacher.
4. Students (``evaluation.student``) are trained on the harvested pairs and, identically, on the
   control pairs; in the full run also on fewer harvested examples and on mixes where the harvested
   (marked) answers are only a share of the training set (the rest: control answers to other prompts).
5. Each student is audited with the open-weights reading mode (``forensics.reading``: it reads the
   answers in our event log that its scenario harvested, plus the benign accounts' answers) and the
   API mode (``forensics.radioactivity``: it answers the harvested prompts, as an auditor would query
   it, and its answers are scored). Every recorded key is tested (Bonferroni); accounts are named
   over all account keys.
6. Nulls: the untouched teacher and a random tiny model read the same texts; and the reading / API
   tests of both main students are repeated with ``null_runs`` fresh master secrets (keys unrelated to
   the text), which counts false verdicts at ``alpha`` and checks that per-key p-values are uniform.

Writes ``DIR/results.json`` (and keeps the students, caches and stores under ``DIR/work``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from antidistill.evaluation.student import StudentConfig, TrainStats, train_student

RESULTS_VERSION = 1
DISTILLED_P = 1e-6


@dataclass(frozen=True)
class DistillationConfig:
    n_harvest: int = 32
    harvest_accounts: int = 1
    n_decoys: int = 1000
    benign_requests: int = 8
    max_tokens: int = 48
    temperature: float = 1.0
    # measured on 32 harvested answers: 40 epochs (lr 3e-3, 1,024-token batches, 240 steps) memorize
    # them (loss 0.04, reading log10 p -426); 24 epochs left the loss at 2-4 and the reading log10 p
    # anywhere between -30 and -3.6 from one harvest to the next (too close to the goal for a test)
    student: StudentConfig = field(
        default_factory=lambda: StudentConfig(epochs=40, lr=3e-3, batch_tokens=1024)
    )
    sizes: tuple[int, ...] = ()  # p vs harvested examples (students on the first n harvested pairs)
    shares: tuple[float, ...] = ()  # p vs share of marked data (total training set = n_harvest)
    audit_prompts: int = 32
    audit_max_tokens: int = 48
    audit_temperature: float = 1.0
    reading_texts: int = 2000
    min_tokens: int = 500
    null_runs: int = 20
    alpha: float = 1e-3
    batch_size: int = 16
    threads: int = 2
    seed: int = 0
    progress: bool = True
    variant: str = "quick"


QUICK = DistillationConfig()
FULL = DistillationConfig(
    n_harvest=160,
    harvest_accounts=1,
    max_tokens=64,
    benign_requests=8,
    student=StudentConfig(n_layer=2, n_embd=128, epochs=24, lr=5e-3, batch_tokens=512),
    sizes=(40, 80),
    shares=(0.25, 0.05),
    audit_prompts=160,
    audit_max_tokens=64,
    null_runs=100,
    variant="full",
)


# ---- the gateway part -------------------------------------------------------------------------------
@dataclass
class Harvest:
    pairs: list[tuple[str, str]]  # (prompt, answer) in prompt order
    accounts: list[str]  # account names that harvested
    completion_tokens: int
    seconds: float


def _gateway_settings(root: Path, *, watermark: bool, cfg: DistillationConfig) -> Any:
    from antidistill.settings import load_settings

    return load_settings(
        None,
        {
            "database_url": f"sqlite:///{root / 'gateway.db'}",
            "backend.kind": "local",
            "backend.local.max_batch_size": cfg.batch_size,
            "backend.local.torch_threads": cfg.threads,
            "events.spill_dir": str(root / "spill"),
            "events.flush_interval_ms": 50,
            "limits.max_tokens_cap": max(cfg.max_tokens, cfg.audit_max_tokens),
            "watermark.enabled": watermark,
            "watermark.master_secret_file": str(root / "wm.secret"),
            # this experiment measures the watermark evidence: detection and enforcement stay off
            "risk.enabled": False,
            "policy.enabled": False,
        },
    )


def _chat_all(
    url: str,
    jobs: Sequence[tuple[str, str]],
    cfg: DistillationConfig,
    desc: str,
    max_tokens: int,
) -> list[tuple[str, str, int]]:
    """POST every (api token, prompt) concurrently; (prompt, answer, completion tokens) in order."""
    import httpx
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="req", file=sys.stderr, disable=not cfg.progress)

    def one(http: httpx.Client, job: tuple[str, str]) -> tuple[str, str, int]:
        token, prompt = job
        body = {
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": cfg.temperature,
            "seed": cfg.seed,  # reproducible runs (the watermark itself is keyed, not seeded)
        }
        for attempt in range(5):
            r = http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"})
            if r.status_code == 200:
                out = r.json()
                bar.update(1)
                text = str(out["choices"][0]["message"]["content"])
                return prompt, text, int(out["usage"]["completion_tokens"])
            if r.status_code not in (429, 503) or attempt == 4:
                raise RuntimeError(f"gateway answered {r.status_code}: {r.text[:200]}")
            time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    try:
        with httpx.Client(base_url=url, timeout=1800.0) as http, ThreadPoolExecutor(cfg.batch_size) as pool:
            return list(pool.map(lambda job: one(http, job), jobs))
    finally:
        bar.close()


@contextmanager
def serve(app: Any, timeout: float = 300.0) -> Iterator[str]:
    """Serve ``app`` (lifespan included) on a free loopback port in a thread; yields its base URL."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the gateway did not start (see the log above)")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@dataclass
class World:
    root: Path
    store_url: str
    secret_file: Path
    harvest: Harvest
    control: Harvest
    benign_prompts: list[str]
    harvesters: dict[str, str]  # account name -> account id
    n_account_keys: int
    teacher: Any
    tokenizer: Any
    vocab_size: int


def _experiment_secret(path: Path, seed: int) -> None:
    """A master secret derived from the experiment's seed (reproducible runs; never for production)."""
    import hashlib

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(hashlib.sha256(f"antidistill/distillation-experiment/{seed}".encode()).hexdigest() + "\n")


def _teacher(cfg: DistillationConfig) -> Any:
    from antidistill.backends.model_loading import load_model
    from antidistill.settings import LocalBackendSettings

    return load_model(LocalBackendSettings(max_batch_size=cfg.batch_size, torch_threads=cfg.threads))


def build_world(cfg: DistillationConfig, root: Path, log: Callable[[str], None]) -> World:
    """Steps 1-3: accounts and keys, the harvest through the watermarking gateway, the control answers."""
    from antidistill.backends.local import LocalBackend
    from antidistill.forensics.radioactivity import builtin_prompts
    from antidistill.gateway.app import create_app
    from antidistill.store import open_store
    from antidistill.watermark.keys import Keyring
    from antidistill.watermark.keystore import KeyDirectory, load_master_secret, tokenizer_fingerprint

    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    teacher = _teacher(cfg)
    log(f"teacher loaded from {teacher.source} in {time.perf_counter() - t0:.1f}s")
    vocab = int(teacher.model.config.vocab_size)
    prompts = builtin_prompts(cfg.n_harvest + cfg.benign_requests, seed=cfg.seed)
    harvest_prompts, benign_prompts = prompts[: cfg.n_harvest], prompts[cfg.n_harvest :]

    marked = root / "marked"
    settings = _gateway_settings(marked, watermark=True, cfg=cfg)
    saved = root / "world.json"  # a finished harvest is reused (resume after a crash or a change later)
    if saved.is_file():
        w = json.loads(saved.read_text())
        log(f"reusing the harvest in {saved}")
        return World(
            root,
            settings.database_url,
            Path(settings.watermark.master_secret_file),
            Harvest(**{**w["harvest"], "pairs": [tuple(x) for x in w["harvest"]["pairs"]]}),
            Harvest(**{**w["control"], "pairs": [tuple(x) for x in w["control"]["pairs"]]}),
            w["benign_prompts"],
            w["harvesters"],
            w["n_account_keys"],
            teacher.model,
            teacher.tokenizer,
            vocab,
        )
    if marked.exists():
        import shutil

        shutil.rmtree(marked)  # a half-finished earlier harvest: start over
        shutil.rmtree(root / "unmarked", ignore_errors=True)
    store = open_store(settings.database_url)
    store.migrate()
    _experiment_secret(Path(settings.watermark.master_secret_file), cfg.seed)
    secret = load_master_secret(settings.watermark)
    keyring = Keyring(secret, tokenizer_fingerprint(teacher.tokenizer), vocab)
    directory = KeyDirectory(keyring, store)
    tokens: dict[str, str] = {}
    harvesters: dict[str, str] = {}
    names = [f"harvester-{i}" for i in range(cfg.harvest_accounts)] + [
        f"benign-{i}" for i in range(min(4, cfg.benign_requests))
    ]
    for name in names:
        acc = store.create_account(name, "standard", {"experiment": "distillation"})
        tokens[name], _ = store.create_api_key(acc.id)
        directory.current("account", acc.id)
        if name.startswith("harvester"):
            harvesters[name] = acc.id
    from tqdm import tqdm

    for i in tqdm(range(cfg.n_decoys), desc="decoy accounts", file=sys.stderr, disable=not cfg.progress):
        acc = store.create_account(f"decoy-{i:05d}", "standard", {"experiment": "distillation"})
        directory.current("account", acc.id)
    n_account_keys = len(store.watermark_key_records("account"))
    store.close()

    def gateway(settings: Any) -> Any:
        backend = LocalBackend(
            settings.backend.local,
            settings.backend.served_model,
            model=teacher.model,
            tokenizer=teacher.tokenizer,
            max_pending=4 * cfg.n_harvest + 64,
        )
        return serve(create_app(settings, backend=backend))

    harvest_names = [n for n in names if n.startswith("harvester")]
    jobs = [(tokens[harvest_names[i % len(harvest_names)]], p) for i, p in enumerate(harvest_prompts)]
    benign_names = [n for n in names if n.startswith("benign")]
    benign_jobs = [(tokens[benign_names[i % len(benign_names)]], p) for i, p in enumerate(benign_prompts)]
    with gateway(settings) as url:
        t0 = time.perf_counter()
        got = _chat_all(url, jobs, cfg, "harvesting (watermarked gateway)", cfg.max_tokens)
        seconds = time.perf_counter() - t0
        if benign_jobs:
            _chat_all(url, benign_jobs, cfg, "benign traffic", cfg.max_tokens)
    harvest = Harvest([(p, a) for p, a, _ in got], harvest_names, sum(n for *_, n in got), seconds)
    log(f"harvested {len(got)} answers ({harvest.completion_tokens} tokens) in {seconds:.0f}s")

    plain_settings = _gateway_settings(root / "unmarked", watermark=False, cfg=cfg)
    plain_store = open_store(plain_settings.database_url)
    plain_store.migrate()
    acc = plain_store.create_account("control-harvester", "standard")
    token, _ = plain_store.create_api_key(acc.id)
    plain_store.close()
    with gateway(plain_settings) as url:
        t0 = time.perf_counter()
        got = _chat_all(
            url, [(token, p) for p in harvest_prompts], cfg, "control answers (unmarked)", cfg.max_tokens
        )
        seconds = time.perf_counter() - t0
    control = Harvest([(p, a) for p, a, _ in got], ["control-harvester"], sum(n for *_, n in got), seconds)
    log(f"control: {len(got)} unmarked answers ({control.completion_tokens} tokens) in {seconds:.0f}s")
    saved.write_text(
        json.dumps(
            {
                "harvest": asdict(harvest),
                "control": asdict(control),
                "benign_prompts": benign_prompts,
                "harvesters": harvesters,
                "n_account_keys": n_account_keys,
            }
        )
    )
    return World(
        root,
        settings.database_url,
        Path(settings.watermark.master_secret_file),
        harvest,
        control,
        benign_prompts,
        harvesters,
        n_account_keys,
        teacher.model,
        teacher.tokenizer,
        vocab,
    )


# ---- the audit part ---------------------------------------------------------------------------------
@dataclass
class Auditor:
    """Everything an audit needs that does not depend on the suspect."""

    store: Any
    tok: Any  # TextTokenizer
    keys: list[Any]
    account_keys: list[Any]
    docs: list[Any]  # watermarked event-log Documents (harvest + benign)
    doc_prompts: list[str]
    ids: list[list[int]]
    prompt_ids: list[list[int]]
    cfg: DistillationConfig
    root: Path
    harvested: set[str] = field(default_factory=set)  # every harvested prompt

    def texts_for(self, prompts: set[str]) -> tuple[list[list[int]], list[list[int]]]:
        """Event-log texts served for ``prompts`` (this scenario's harvest) and all benign texts."""
        keep = [i for i, p in enumerate(self.doc_prompts) if p in prompts or p not in self.harvested]
        return [self.ids[i] for i in keep], [self.prompt_ids[i] for i in keep]


def make_auditor(world: World, cfg: DistillationConfig) -> Auditor:
    from antidistill.forensics.reading import event_log_documents
    from antidistill.settings import WatermarkSettings
    from antidistill.store import open_store
    from antidistill.watermark.keystore import load_master_secret
    from antidistill.watermark.texts import TextTokenizer, recorded_keys

    store = open_store(world.store_url)
    secret = load_master_secret(WatermarkSettings(master_secret_file=str(world.secret_file)), create=False)
    tok = TextTokenizer(world.tokenizer, world.vocab_size, "teacher")
    keys = recorded_keys(store, secret, tok)
    account_keys = recorded_keys(store, secret, tok, scope="account")
    docs = event_log_documents(store, cfg.reading_texts, seed=cfg.seed)
    ids, prompt_ids = tok.encode(docs)
    assert prompt_ids is not None
    doc_prompts = [d.messages[-1][1] if d.messages else (d.prompt or "") for d in docs]
    return Auditor(
        store,
        tok,
        keys,
        account_keys,
        docs,
        doc_prompts,
        ids,
        prompt_ids,
        cfg,
        world.root,
        harvested={p for p, _ in world.harvest.pairs},
    )


def _outcome_json(o: Any) -> dict[str, Any]:
    r = o.result
    return {
        "p_value": r.p_value,
        "log10_p": r.log10_p,
        "n_scored": r.n,
        "inconclusive": r.inconclusive,
        "best_key": r.data.get("best_key"),
        "accounts": [a.get("account") or a.get("ident") for a in o.accounts],
        "detail": r.detail,
    }


def audit_student(
    model_dir: Path,
    aud: Auditor,
    prompts: Sequence[str],
    label: str,
    *,
    model: Any = None,
    tokenizer: Any = None,
    api: bool = True,
) -> tuple[dict[str, Any], list[Any], list[tuple[str, str]]]:
    """Reading mode on the scenario's texts, API mode on its prompts; (json, reading docs, answers)."""
    from antidistill.forensics.local_suspect import LocalSuspect, reading_docs
    from antidistill.forensics.radioactivity import radioactivity_test
    from antidistill.forensics.reading import reading_test
    from antidistill.forensics.suspect import ResponseCache

    cfg = aud.cfg
    cache = ResponseCache(aud.root / "audit-cache.sqlite")
    try:
        suspect = LocalSuspect(
            model_dir,
            cache,
            budget=len(prompts) + 10,
            batch_size=cfg.batch_size,
            progress=cfg.progress,
            label=label,
            model=model,
            tokenizer=tokenizer,
        )
        ids, pids = aud.texts_for(set(prompts))
        rdocs = reading_docs(suspect, ids, pids)
        reading = reading_test(
            rdocs, aud.keys, aud.account_keys, aud.store, alpha=cfg.alpha, min_tokens=cfg.min_tokens
        )
        out: dict[str, Any] = {"reading": _outcome_json(reading)}
        answers: list[tuple[str, str]] = []
        if api:
            params = {"temperature": cfg.audit_temperature, "max_tokens": cfg.audit_max_tokens}
            got = suspect.query(list(prompts)[: cfg.audit_prompts], params)
            answers = [(a.prompt, a.text) for a in got if a.text]
            radio = radioactivity_test(
                answers,
                aud.tok,
                aud.keys,
                aud.account_keys,
                aud.store,
                alpha=cfg.alpha,
                min_tokens=cfg.min_tokens,
                curve=False,
            )
            gen_tokens = sum(len(x) for x in aud.tok.encode([_doc(a) for _, a in answers])[0])
            out["api"] = {
                **_outcome_json(radio),
                "suspect_generated_tokens": gen_tokens,
                "prompts": len(answers),
            }
    finally:
        cache.close()
    tests = [out["reading"]] + ([out["api"]] if "api" in out else [])
    best = min(t["log10_p"] for t in tests)
    log10_p = min(0.0, best + math.log10(len(tests)))  # Bonferroni over the tests, as the audit report
    named = out["reading"]["accounts"] or (out.get("api") or {}).get("accounts") or []
    out.update(
        p_value=10.0**log10_p, log10_p=log10_p, accounts=named, distilled=log10_p <= math.log10(DISTILLED_P)
    )
    return out, rdocs, answers


def _doc(text: str) -> Any:
    from antidistill.watermark.texts import Document

    return Document(text)


def null_runs(
    rdocs: list[Any], answers: list[tuple[str, str]], aud: Auditor, runs: int, seed: int
) -> dict[str, Any]:
    """The reading and API tests repeated with ``runs`` fresh master secrets: every key is unrelated to
    the texts, so every verdict is a false one. Also pools the per-key (unadjusted) p-values, which are
    independent across keys, for a uniformity check."""
    from scipy import stats

    from antidistill.forensics.reading import score_keys
    from antidistill.watermark.detect import Detector
    from antidistill.watermark.keys import Keyring
    from antidistill.watermark.schemes.pvalues import bonferroni

    rng = np.random.default_rng(seed)
    idents = [k.ident for k in aud.keys]
    scopes = [k.scope for k in aud.keys]
    ids, pids = aud.tok.encode([_doc_prompt(p, a) for p, a in answers]) if answers else ([], None)
    min_lp: dict[str, list[float]] = {"reading": [], "api": []}
    per_key: dict[str, list[float]] = {"reading": [], "api": []}
    cache: dict[int, Any] = {}
    for _ in range(runs):
        secret = bytes(rng.integers(0, 256, 32, dtype=np.uint8))
        ring = Keyring(secret, aud.tok.fingerprint, aud.tok.vocab_size)
        keys = [ring.derive(s, i, 1) for s, i in zip(scopes, idents, strict=True)]
        scores, cache = score_keys(rdocs, keys, cache=cache)
        lps = np.array([s.log10_p for s in scores])
        per_key["reading"] += lps.tolist()
        min_lp["reading"].append(float(bonferroni(lps.min(), len(keys))))
        if answers:
            det = Detector().detect(ids, keys, pids, pool=True)
            lps = np.array([k.log10_p for k in det.keys])
            per_key["api"] += lps.tolist()
            min_lp["api"].append(det.log10_p_adj)
    out: dict[str, Any] = {"runs": runs, "keys_per_run": len(aud.keys)}
    for name in ("reading", "api"):
        if not min_lp[name]:
            continue
        p = 10.0 ** np.array(per_key[name])
        # the discrete KGW test would make this conservative; these keys are Gumbel (continuous)
        ks = stats.kstest(p, "uniform")
        out[name] = {
            "false_verdicts_at_alpha": int(sum(lp <= math.log10(aud.cfg.alpha) for lp in min_lp[name])),
            "min_log10_p_adj": float(min(min_lp[name])),
            "median_p_adj": float(np.median(10.0 ** np.array(min_lp[name]))),
            "per_key_p_values": int(p.shape[0]),
            "per_key_ks_p": float(ks.pvalue),
            "per_key_share_below_0.01": float(np.mean(p <= 0.01)),
            "per_key_share_below_0.001": float(np.mean(p <= 0.001)),
        }
    return out


def _doc_prompt(prompt: str, text: str) -> Any:
    from antidistill.watermark.texts import Document

    return Document(text, prompt=prompt)


# ---- the whole experiment ---------------------------------------------------------------------------
def _train(
    world: World, pairs: Sequence[tuple[str, str]], cfg: DistillationConfig, name: str
) -> tuple[Path, TrainStats]:
    out = world.root / "students" / name
    scfg = replace(cfg.student, threads=cfg.threads, seed=cfg.seed)
    done = out / "antidistill-train.json"  # a student trained with the same config and data is reused
    fingerprint = json.loads(
        json.dumps({"config": asdict(scfg), "pairs": len(pairs), "data": _digest(pairs)})
    )
    if done.is_file():
        saved = json.loads(done.read_text())
        if saved.get("fingerprint") == fingerprint:
            return out, TrainStats(**saved["stats"])
    teacher = world.teacher if scfg.kind == "lora" else None
    stats = train_student(
        pairs,
        world.tokenizer,
        world.vocab_size,
        scfg,
        out,
        teacher=teacher,
        progress=cfg.progress,
        desc=f"training {name}",
    )
    done.write_text(json.dumps({"fingerprint": fingerprint, "stats": stats.as_dict()}))
    return out, stats


def _digest(pairs: Sequence[tuple[str, str]]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(list(pairs)).encode()).hexdigest()[:16]


def _random_model(world: World, root: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(12345)
    out = root / "students" / "random-tiny"
    eos = world.tokenizer.eos_token_id
    GPT2LMHeadModel(
        GPT2Config(
            vocab_size=world.vocab_size,
            n_positions=512,
            n_embd=64,
            n_layer=2,
            n_head=2,
            eos_token_id=eos,
            bos_token_id=eos,
        )
    ).save_pretrained(out)
    world.tokenizer.save_pretrained(out)
    return out


def run_distillation(
    cfg: DistillationConfig, out_dir: Path, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the whole experiment and write ``out_dir/results.json``; returns the results."""
    import torch

    say = log or (lambda msg: print(msg, file=sys.stderr))
    torch.set_num_threads(cfg.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir.mkdir(parents=True, exist_ok=True)
    root = out_dir / "work"
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    world = build_world(cfg, root, say)
    timings["harvest_and_control_s"] = round(time.perf_counter() - t0, 1)
    aud = make_auditor(world, cfg)
    harvest_prompts = [p for p, _ in world.harvest.pairs]
    results: dict[str, Any] = {
        "version": RESULTS_VERSION,
        "variant": cfg.variant,
        "config": _config_json(cfg),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch_threads": cfg.threads,
        },
        "teacher": "SmolLM2-135M-Instruct (embedded GGUF) behind the gateway, Gumbel watermark per account",
        "harvest": {
            "examples": len(world.harvest.pairs),
            "accounts": world.harvest.accounts,
            "completion_tokens": world.harvest.completion_tokens,
            "seconds": round(world.harvest.seconds, 1),
        },
        "control_answers": {
            "examples": len(world.control.pairs),
            "completion_tokens": world.control.completion_tokens,
        },
        "n_account_keys": len(aud.account_keys),
        "n_keys": len(aud.keys),
        "event_log_texts_read": len(aud.docs),
    }
    harvester_names = set(world.harvesters)

    def named(acc: list[str]) -> bool:
        return bool(acc) and set(acc) <= harvester_names

    # the two main students
    t0 = time.perf_counter()
    wm_dir, wm_stats = _train(world, world.harvest.pairs, cfg, "watermarked")
    ctl_dir, ctl_stats = _train(world, world.control.pairs, cfg, "control")
    timings["train_main_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    wm, wm_docs, wm_answers = audit_student(wm_dir, aud, harvest_prompts, "watermarked-student")
    ctl, ctl_docs, ctl_answers = audit_student(ctl_dir, aud, harvest_prompts, "control-student")
    timings["audit_main_s"] = round(time.perf_counter() - t0, 1)
    results["watermarked_student"] = {
        **wm,
        "harvester_named": named(wm["accounts"]),
        "train": wm_stats.as_dict(),
    }
    results["control_student"] = {**ctl, "train": ctl_stats.as_dict()}
    say(f"watermarked student: log10 p = {wm['log10_p']:.1f}, accounts {wm['accounts']}")
    say(f"control student: log10 p = {ctl['log10_p']:.2f}, accounts {ctl['accounts']}")

    # untouched models read the same texts (null)
    t0 = time.perf_counter()
    teacher_read, _, _ = audit_student(
        wm_dir,
        aud,
        harvest_prompts,
        "untouched-teacher",
        model=world.teacher,
        tokenizer=world.tokenizer,
        api=False,
    )
    rnd, _, _ = audit_student(_random_model(world, root), aud, harvest_prompts, "random-tiny", api=False)
    results["untouched_teacher"] = teacher_read
    results["random_model"] = rnd
    timings["untouched_s"] = round(time.perf_counter() - t0, 1)

    # repeated runs with fresh keys
    t0 = time.perf_counter()
    results["null_runs"] = {
        "control_student": null_runs(ctl_docs, ctl_answers, aud, cfg.null_runs, cfg.seed + 1),
        "watermarked_student_unrelated_keys": null_runs(
            wm_docs, wm_answers, aud, cfg.null_runs, cfg.seed + 2
        ),
    }
    timings["null_runs_s"] = round(time.perf_counter() - t0, 1)

    # full run: p vs harvested examples and vs share of marked data
    if cfg.sizes:
        rows = []
        for n in cfg.sizes:
            pairs = world.harvest.pairs[:n]
            d, st = _train(world, pairs, cfg, f"examples-{n}")
            r, _, _ = audit_student(d, aud, [p for p, _ in pairs], f"examples-{n}")
            rows.append({"examples": n, **_row(r, named), "train": st.as_dict()})
            say(f"{n} harvested examples: log10 p = {r['log10_p']:.1f}")
        rows.append({"examples": len(world.harvest.pairs), **_row(wm, named), "train": wm_stats.as_dict()})
        results["vs_examples"] = rows
    if cfg.shares:
        rows = [{"share": 1.0, "marked_examples": len(world.harvest.pairs), **_row(wm, named)}]
        total = len(world.harvest.pairs)
        for s in cfg.shares:
            k = max(1, round(s * total))
            marked = world.harvest.pairs[:k]
            filler = world.control.pairs[k:]  # unmarked answers to the other prompts
            d, st = _train(world, marked + filler, cfg, f"share-{s:g}")
            r, _, _ = audit_student(d, aud, [p for p, _ in marked], f"share-{s:g}")
            rows.append(
                {
                    "share": s,
                    "marked_examples": k,
                    "total_examples": len(marked) + len(filler),
                    **_row(r, named),
                    "train": st.as_dict(),
                }
            )
            say(f"share {s:g} ({k} marked of {total}): log10 p = {r['log10_p']:.1f}")
        results["vs_share"] = rows
    timings["total_s"] = round(time.perf_counter() - t_start, 1)
    results["timings"] = timings
    aud.store.close()
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False, default=str) + "\n")
    return results


def _row(r: dict[str, Any], named: Callable[[list[str]], bool]) -> dict[str, Any]:
    return {
        "p_value": r["p_value"],
        "log10_p": r["log10_p"],
        "reading_log10_p": r["reading"]["log10_p"],
        "reading_n_scored": r["reading"]["n_scored"],
        "api_log10_p": (r.get("api") or {}).get("log10_p"),
        "api_suspect_generated_tokens": (r.get("api") or {}).get("suspect_generated_tokens"),
        "accounts": r["accounts"],
        "harvester_named": named(r["accounts"]),
    }


def _config_json(cfg: DistillationConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d.pop("progress", None)
    return d
