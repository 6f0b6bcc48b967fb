"""Master secret handling and the store-backed key directory (SQLite)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from antidistill.errors import ConfigError
from antidistill.settings import WatermarkSettings
from antidistill.store import open_store
from antidistill.watermark.keys import Keyring
from antidistill.watermark.keystore import KeyDirectory, load_master_secret


def test_secret_file_is_created_private_and_stable(tmp_path: Path) -> None:
    s = WatermarkSettings(master_secret_file=str(tmp_path / "d" / "wm.secret"))
    first = load_master_secret(s)
    path = tmp_path / "d" / "wm.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 32 and load_master_secret(s) == first
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_master_secret(s)


def test_configured_secret_wins_and_short_secret_is_refused(tmp_path: Path) -> None:
    s = WatermarkSettings(master_secret="ab" * 16, master_secret_file=str(tmp_path / "unused"))
    assert load_master_secret(s) == bytes.fromhex("ab" * 16)
    assert not (tmp_path / "unused").exists()
    with pytest.raises(ConfigError, match="too short"):
        load_master_secret(WatermarkSettings(master_secret="short"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_master_secret(WatermarkSettings(master_secret_file=str(tmp_path / "none")), create=False)


def test_directory_records_rotates_and_detects_a_wrong_secret(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    try:
        ring = Keyring(b"m" * 32, "tok:1:abc", 1000)
        d = KeyDirectory(ring, store)
        k1 = d.current("account", "acc-1")
        assert d.peek("account", "acc-1") == k1 and d.current("account", "acc-1") == k1
        assert [r["key_id"] for r in store.watermark_key_records("account", "acc-1")] == [k1.key_id]
        # a second replica (fresh directory, same secret) agrees without coordination
        assert KeyDirectory(Keyring(b"m" * 32, "tok:1:abc", 1000), store).current("account", "acc-1") == k1
        k2 = d.rotate("account", "acc-1")
        assert k2.version == 2 and k2.key_id != k1.key_id
        assert d.current("account", "acc-1") == k2
        assert {k.key_id for k in d.all_keys("account")} == {k1.key_id, k2.key_id}  # old evidence stays
        assert all("secret" not in str(r) for r in store.watermark_key_records())
        wrong = KeyDirectory(Keyring(b"x" * 32, "tok:1:abc", 1000), store)
        with pytest.raises(ConfigError, match="does not match"):
            wrong.all_keys()
    finally:
        store.close()
