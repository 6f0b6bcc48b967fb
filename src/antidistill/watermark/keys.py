"""Watermark keys: derived from one master secret with HMAC-SHA256, never stored, never printed.

A key is named by (scope, ident, version, scheme): scope is deployment / account / cluster, ident
the account or cluster id (the deployment name for the deployment scope). Its public record fixes the
scheme and parameters, the tokenizer and the vocabulary size; ``config_hash`` (sha256 of the record's
canonical JSON) is logged with every response so evidence says exactly how text was marked.
Rotation bumps the version: the new version is a new key (new id); older versions stay derivable, so
text marked months ago can still be tested.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from antidistill.errors import ConfigError
from antidistill.watermark.schemes import build_scheme
from antidistill.watermark.schemes.base import KeyedScheme, ParamValue

SCOPES = ("deployment", "account", "cluster")
PRF_VERSION = "antidistill/prf/v1"
DEFAULT_SCHEME = "gumbel"


def _encode(*parts: str | int) -> bytes:
    """Unambiguous length-prefixed encoding of the naming fields."""
    out = bytearray()
    for part in parts:
        raw = str(part).encode("utf-8")
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


@dataclass(frozen=True, slots=True)
class WatermarkKey:
    """One watermark key. ``secret`` is excluded from repr/str; use :meth:`record` to export."""

    key_id: str
    scope: str
    ident: str
    version: int
    scheme: str
    scheme_params: tuple[tuple[str, ParamValue], ...]
    tokenizer: str
    vocab_size: int
    secret: bytes = field(repr=False)

    @property
    def params(self) -> dict[str, ParamValue]:
        return dict(self.scheme_params)

    def record(self) -> dict[str, Any]:
        """Everything public about the key (no secret): what the store and the evidence keep."""
        return {
            "key_id": self.key_id,
            "scope": self.scope,
            "ident": self.ident,
            "version": self.version,
            "scheme": self.scheme,
            "scheme_params": self.params,
            "tokenizer": self.tokenizer,
            "vocab_size": self.vocab_size,
            "prf": PRF_VERSION,
        }

    @property
    def config_hash(self) -> str:
        canonical = json.dumps(self.record(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def build_scheme(self) -> KeyedScheme:
        return build_scheme(self.scheme, self.params)


def derive_key(
    master_secret: bytes,
    scope: str,
    ident: str,
    version: int,
    *,
    scheme: str = DEFAULT_SCHEME,
    scheme_params: Mapping[str, Any] | None = None,
    tokenizer: str = "unspecified",
    vocab_size: int = 0,
) -> WatermarkKey:
    """Derive one key. Deterministic: the same inputs always give the same key and id."""
    if not isinstance(master_secret, bytes) or len(master_secret) < 16:
        raise ConfigError("watermark master secret must be at least 16 bytes")
    if scope not in SCOPES:
        raise ConfigError(f"watermark key scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if not ident:
        raise ConfigError("watermark key ident must be non-empty")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"watermark key version must be an integer >= 1, got {version!r}")
    if vocab_size < 0:
        raise ConfigError("vocab_size must be >= 0")
    canonical = build_scheme(scheme, scheme_params).params()
    name = _encode(scope, ident, version, scheme)
    secret = hmac.new(master_secret, b"antidistill/wm/secret/v1" + name, hashlib.sha256).digest()
    tag = hmac.new(master_secret, b"antidistill/wm/id/v1" + name, hashlib.sha256).hexdigest()
    return WatermarkKey(
        key_id="wk_" + tag[:16],
        scope=scope,
        ident=ident,
        version=version,
        scheme=scheme,
        scheme_params=tuple(sorted(canonical.items())),
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        secret=secret,
    )


@dataclass(frozen=True, slots=True, order=True)
class KeyRecord:
    """The public name of one derivable key (what a keyring enumerates)."""

    scope: str
    ident: str
    scheme: str
    version: int


class Keyring:
    """Derives deployment / account / cluster keys for one tokenizer; tracks versions for rotation.

    ``schemes`` maps scheme name -> parameters (defaults: each scheme's own). The version records can
    be exported (:meth:`records`) and restored (``records=``) by whoever persists them.
    """

    def __init__(
        self,
        master_secret: bytes,
        tokenizer: str,
        vocab_size: int,
        *,
        schemes: Mapping[str, Mapping[str, Any]] | None = None,
        default_scheme: str = DEFAULT_SCHEME,
        records: Iterable[KeyRecord] = (),
    ) -> None:
        if not isinstance(master_secret, bytes) or len(master_secret) < 16:
            raise ConfigError("watermark master secret must be at least 16 bytes")
        self.__master = master_secret
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._schemes = {name: dict(p) for name, p in (schemes or {}).items()}
        for name, params in self._schemes.items():
            build_scheme(name, params)  # fail at start-up on a bad config
        build_scheme(default_scheme, self._schemes.get(default_scheme))
        self.default_scheme = default_scheme
        self._versions: dict[tuple[str, str, str], set[int]] = {}
        for r in records:
            self._versions.setdefault((r.scope, r.ident, r.scheme), set()).add(r.version)
        self._cache: dict[KeyRecord, WatermarkKey] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        n = sum(len(v) for v in self._versions.values())
        return f"Keyring(tokenizer={self.tokenizer!r}, vocab_size={self.vocab_size}, keys={n})"

    def derive(self, scope: str, ident: str, version: int, scheme: str | None = None) -> WatermarkKey:
        """Any version of a key, recorded or not (old evidence stays testable)."""
        rec = KeyRecord(scope, ident, scheme or self.default_scheme, version)
        key = self._cache.get(rec)
        if key is None:
            key = derive_key(
                self.__master,
                scope,
                ident,
                version,
                scheme=rec.scheme,
                scheme_params=self._schemes.get(rec.scheme),
                tokenizer=self.tokenizer,
                vocab_size=self.vocab_size,
            )
            self._cache[rec] = key
        return key

    def current_version(self, scope: str, ident: str, scheme: str | None = None) -> int:
        return max(self._versions.get((scope, ident, scheme or self.default_scheme), ()), default=0)

    def key(self, scope: str, ident: str, *, scheme: str | None = None) -> WatermarkKey:
        """The current key of (scope, ident, scheme); version 1 is recorded on first use."""
        name = scheme or self.default_scheme
        with self._lock:
            version = self.current_version(scope, ident, name)
            if version == 0:
                version = 1
                self._versions.setdefault((scope, ident, name), set()).add(version)
        return self.derive(scope, ident, version, name)

    def deployment_key(self, deployment: str = "default", *, scheme: str | None = None) -> WatermarkKey:
        return self.key("deployment", deployment, scheme=scheme)

    def account_key(self, account: str, *, scheme: str | None = None) -> WatermarkKey:
        return self.key("account", account, scheme=scheme)

    def cluster_key(self, cluster: str, *, scheme: str | None = None) -> WatermarkKey:
        return self.key("cluster", cluster, scheme=scheme)

    def rotate(self, scope: str, ident: str, *, scheme: str | None = None) -> WatermarkKey:
        """Start a new version (a new key id); earlier versions stay in :meth:`records`."""
        name = scheme or self.default_scheme
        with self._lock:
            version = self.current_version(scope, ident, name) + 1
            self._versions.setdefault((scope, ident, name), set()).add(version)
        return self.derive(scope, ident, version, name)

    def records(self) -> list[KeyRecord]:
        with self._lock:
            items = [(k, sorted(v)) for k, v in self._versions.items()]
        return sorted(KeyRecord(s, i, n, ver) for (s, i, n), vs in items for ver in vs)

    def all_keys(self, scope: str | None = None, scheme: str | None = None) -> list[WatermarkKey]:
        """Every recorded key (all versions), optionally of one scope / scheme: the attribution set."""
        return [
            self.derive(r.scope, r.ident, r.version, r.scheme)
            for r in self.records()
            if (scope is None or r.scope == scope) and (scheme is None or r.scheme == scheme)
        ]

    def find(self, key_id: str) -> WatermarkKey | None:
        """The recorded key with this public id, if any."""
        return next((k for k in self.all_keys() if k.key_id == key_id), None)
