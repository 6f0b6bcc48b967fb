"""The distillation experiment's world: its configuration, the teacher behind two gateways
(watermarked and not), the accounts and the harvest (see ``evaluation/distillation.py``)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from antidistill.evaluation.student import StudentConfig

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
