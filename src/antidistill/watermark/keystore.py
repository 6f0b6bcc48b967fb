"""Where watermark keys come from at run time: the master secret and the store's key records.

* The master secret comes from ``watermark.master_secret`` (settings / environment) or from the file
  ``watermark.master_secret_file``, created on first use with 32 random bytes (hex) and mode 0600.
  It is never logged or returned; losing it makes every past watermark unverifiable, so back it up.
* ``KeyDirectory`` assigns each account its current key and keeps the key's public record in the
  store, so an audit can enumerate every key ever used (all versions) and re-derive it. Several
  gateway replicas derive the same key for the same account (derivation is deterministic), so they
  agree without coordination; a rotation is seen by other replicas within ``refresh_s``.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from antidistill.errors import ConfigError
from antidistill.settings import WatermarkSettings
from antidistill.store.base import Store
from antidistill.watermark.keys import KeyRecord, Keyring, WatermarkKey


def load_master_secret(settings: WatermarkSettings, *, create: bool = True) -> bytes:
    if settings.master_secret is not None:
        raw = settings.master_secret.get_secret_value().strip()
        return _decode(raw, "watermark.master_secret")
    path = Path(settings.master_secret_file).expanduser()
    if path.is_file():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        return _decode(path.read_text().strip(), str(path))
    if not create:
        raise ConfigError(f"no watermark master secret: {path} does not exist and none is configured")
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return load_master_secret(settings, create=False)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
        f.flush()
        os.fsync(f.fileno())
    return bytes.fromhex(value)


def _decode(raw: str, where: str) -> bytes:
    try:
        value = bytes.fromhex(raw)
    except ValueError:
        value = raw.encode()
    if len(value) < 16:
        raise ConfigError(f"the watermark master secret in {where} is too short (need >= 16 bytes)")
    return value


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A stable name of a tokenizer's vocabulary (what a key record fixes)."""
    import hashlib

    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256()
    for token, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        digest.update(f"{idx}\t{token}\n".encode())
    return f"{type(tokenizer).__name__.removesuffix('Fast')}:{len(vocab)}:{digest.hexdigest()[:16]}"


class KeyDirectory:
    """Current keys of accounts (and clusters), backed by the store's public key records."""

    def __init__(self, keyring: Keyring, store: Store, *, refresh_s: float = 60.0) -> None:
        self.keyring = keyring
        self._store = store
        self._refresh_s = refresh_s
        self._current: dict[tuple[str, str, str], tuple[float, WatermarkKey]] = {}
        self._lock = threading.Lock()

    def peek(self, scope: str, ident: str, scheme: str | None = None) -> WatermarkKey | None:
        """The cached current key if it is fresh (no I/O: safe on the event loop)."""
        hit = self._current.get((scope, ident, scheme or self.keyring.default_scheme))
        if hit is not None and time.monotonic() - hit[0] < self._refresh_s:
            return hit[1]
        return None

    def current(self, scope: str, ident: str, scheme: str | None = None) -> WatermarkKey:
        """The key to mark with now. Blocking (store I/O on a cache miss): call from a thread."""
        name = scheme or self.keyring.default_scheme
        hit = self.peek(scope, ident, name)
        if hit is not None:
            return hit
        records = [r for r in self._store.watermark_key_records(scope, ident) if r["scheme"] == name]
        version = max((int(r["version"]) for r in records), default=0)
        key = self.keyring.derive(scope, ident, max(version, 1), name)
        if version == 0:
            self._store.record_watermark_key(key.record(), key.config_hash)
        with self._lock:
            self._current[(scope, ident, name)] = (time.monotonic(), key)
        return key

    def rotate(self, scope: str, ident: str, scheme: str | None = None) -> WatermarkKey:
        """Start a new key version for (scope, ident); old versions stay derivable and recorded."""
        name = scheme or self.keyring.default_scheme
        records = [r for r in self._store.watermark_key_records(scope, ident) if r["scheme"] == name]
        version = max((int(r["version"]) for r in records), default=0) + 1
        key = self.keyring.derive(scope, ident, version, name)
        self._store.record_watermark_key(key.record(), key.config_hash)
        with self._lock:
            self._current.pop((scope, ident, name), None)
        return key

    def all_keys(self, scope: str | None = None) -> list[WatermarkKey]:
        """Every recorded key (all versions): the set an audit tests against."""
        out = []
        for r in self._store.watermark_key_records(scope):
            rec = KeyRecord(r["scope"], r["ident"], r["scheme"], int(r["version"]))
            key = self.keyring.derive(rec.scope, rec.ident, rec.version, rec.scheme)
            if key.key_id != r["key_id"]:
                raise ConfigError(
                    f"key record {r['key_id']} does not match the configured master secret, tokenizer or "
                    "scheme parameters; an audit with this configuration would be invalid"
                )
            out.append(key)
        return out
