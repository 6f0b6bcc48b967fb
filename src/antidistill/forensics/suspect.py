"""Query a suspect model behind an OpenAI-compatible chat endpoint: budget, concurrency, retries, cache.

* Every answer is written to a persistent SQLite cache as soon as it arrives (one committed row per
  answer), keyed by sha256 of (endpoint URL, model, prompt, params). A run that crashes halfway loses
  nothing already paid for: re-running the same audit reads those answers back and only queries the
  rest. Cached answers never count against the budget.
* ``budget``: the most NEW prompts this client sends in its lifetime (a retried prompt counts once).
  Prompts beyond it are skipped and reported (``Answer.text is None``, ``skipped=True``).
* Retries with exponential backoff (and ``Retry-After`` when given) on 429, 5xx and transport errors;
  other 4xx are permanent failures of that prompt (recorded in the answer, never cached).
* The API key comes from the environment (``ANTIDISTILL_SUSPECT_API_KEY`` by default), never a flag.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from antidistill.errors import ConfigError

API_KEY_ENV = "ANTIDISTILL_SUSPECT_API_KEY"
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def chat_endpoint(url: str) -> str:
    """The chat-completions URL of a base URL (``http://h``, ``http://h/v1`` or the full path)."""
    base = url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ConfigError(f"suspect URL must start with http:// or https://, got {url!r}")
    if base.endswith("/chat/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


def cache_key(endpoint: str, model: str, prompt: str, params: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of (endpoint, model, prompt, params): what identifies one paid answer."""
    canonical = json.dumps(
        {"endpoint": endpoint, "model": model, "prompt": prompt, "params": dict(params)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """Answers on disk (SQLite, WAL, one commit per answer). Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, endpoint TEXT NOT NULL, "
            "model TEXT NOT NULL, prompt TEXT NOT NULL, params TEXT NOT NULL, text TEXT NOT NULL, "
            "ts REAL NOT NULL)"
        )
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT text FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(
        self, key: str, endpoint: str, model: str, prompt: str, params: Mapping[str, Any], text: str
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, endpoint, model, prompt, json.dumps(dict(params), sort_keys=True), text, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(frozen=True, slots=True)
class Answer:
    prompt: str
    text: str | None  # None: skipped (budget) or failed
    cached: bool = False
    skipped: bool = False
    error: str | None = None


@dataclass
class ClientStats:
    sent: int = 0  # new prompts sent (what the budget counts)
    requests: int = 0  # HTTP attempts, retries included
    retries: int = 0
    cache_hits: int = 0
    skipped: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            k: int(getattr(self, k))
            for k in ("sent", "requests", "retries", "cache_hits", "skipped", "failed")
        }


def plan_queries(
    cache: ResponseCache,
    stats: ClientStats,
    endpoint: str,
    model: str,
    prompts: Sequence[str],
    params: dict[str, Any],
    budget: int,
) -> tuple[list[Answer | None], list[tuple[int, str, str]]]:
    """What a suspect client must still ask: answers from the cache, prompts beyond the budget
    answered as skipped, and the rest to send as ``(index, prompt, cache key)`` (for the HTTP and the
    local-weights clients alike)."""
    out: list[Answer | None] = [None] * len(prompts)
    todo: list[tuple[int, str, str]] = []
    for i, prompt in enumerate(prompts):
        key = cache_key(endpoint, model, prompt, params)
        hit = cache.get(key)
        if hit is not None:
            out[i] = Answer(prompt, hit, cached=True)
            stats.cache_hits += 1
        else:
            todo.append((i, prompt, key))
    allowed = max(0, budget - stats.sent)
    for i, prompt, _ in todo[allowed:]:
        out[i] = Answer(prompt, None, skipped=True, error="query budget exhausted")
        stats.skipped += 1
    return out, todo[:allowed]


@dataclass
class SuspectClient:
    """One suspect (or control) model. ``params`` are the sampling parameters sent with every prompt."""

    url: str
    model: str
    cache: ResponseCache
    api_key: str | None = None
    budget: int = 1000
    concurrency: int = 4
    max_retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    timeout_s: float = 120.0
    progress: bool = False
    label: str = "suspect"
    transport: httpx.AsyncBaseTransport | None = None  # tests
    stats: ClientStats = field(default_factory=ClientStats)

    def __post_init__(self) -> None:
        if self.budget < 0 or self.concurrency < 1 or self.max_retries < 0:
            raise ConfigError("budget must be >= 0, concurrency >= 1 and max_retries >= 0")
        self.endpoint = chat_endpoint(self.url)
        if not self.model:
            raise ConfigError("a model name is required")

    @classmethod
    def from_env(
        cls, url: str, model: str, cache: ResponseCache, *, env: str = API_KEY_ENV, **kw: Any
    ) -> SuspectClient:
        return cls(url, model, cache, api_key=os.environ.get(env) or None, **kw)

    def describe(self) -> dict[str, Any]:
        """What the report records about this client (never the API key)."""
        return {"url": self.url, "endpoint": self.endpoint, "model": self.model, "budget": self.budget}

    def query(self, prompts: Sequence[str], params: Mapping[str, Any] | None = None) -> list[Answer]:
        """Blocking: one answer per prompt, in order (cache first, then the network within budget)."""
        return asyncio.run(self.aquery(prompts, params))

    async def aquery(self, prompts: Sequence[str], params: Mapping[str, Any] | None = None) -> list[Answer]:
        params = dict(params or {})
        out, todo = plan_queries(
            self.cache, self.stats, self.endpoint, self.model, prompts, params, self.budget
        )
        bar = None
        if self.progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"querying {self.label}", unit="prompt", file=sys.stderr)
        sem = asyncio.Semaphore(self.concurrency)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        async with httpx.AsyncClient(
            timeout=self.timeout_s, headers=headers, transport=self.transport
        ) as http:

            async def one(i: int, prompt: str, key: str) -> None:
                async with sem:
                    self.stats.sent += 1
                    out[i] = await self._ask(http, prompt, key, params)
                if bar is not None:
                    bar.update(1)

            try:
                await asyncio.gather(*(one(*t) for t in todo))
            finally:
                if bar is not None:
                    bar.close()
        return [
            a if a is not None else Answer(p, None, error="not run")
            for a, p in zip(out, prompts, strict=True)
        ]

    async def _ask(self, http: httpx.AsyncClient, prompt: str, key: str, params: dict[str, Any]) -> Answer:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], **params}
        body.pop("sample", None)  # a cache-key-only field: several samples of one prompt
        error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.retries += 1
            self.stats.requests += 1
            delay: float | None = None
            try:
                resp = await http.post(self.endpoint, json=body)
            except httpx.HTTPError as e:
                error = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code == 200:
                    try:
                        text = str(resp.json()["choices"][0]["message"]["content"] or "")
                    except (ValueError, KeyError, IndexError, TypeError) as e:
                        self.stats.failed += 1
                        return Answer(prompt, None, error=f"malformed response: {e}")
                    self.cache.put(key, self.endpoint, self.model, prompt, params, text)
                    return Answer(prompt, text)
                error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code not in RETRY_STATUS:
                    break
                delay = _retry_after(resp.headers.get("retry-after"))
            if attempt < self.max_retries:
                backoff = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
                await asyncio.sleep(min(self.max_backoff_s, delay) if delay is not None else backoff)
        self.stats.failed += 1
        return Answer(prompt, None, error=error)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
