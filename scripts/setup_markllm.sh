#!/usr/bin/env bash
# Create .venv-markllm/ with the peer toolkit markllm 0.1.5 (CPU torch), for the side-by-side
# detector comparison in benchmarks/markllm_compare.py. Kept apart from .venv: markllm pins
# openai==0.28 and Pillow==9.4.0, which must not leak into the project's environment.
#
#   scripts/setup_markllm.sh          # idempotent; prints the venv's python on success
#
# The venv writes its own .gitignore ("*") so it is never committed even though the project's
# .gitignore does not list it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv-markllm
STAMP="$VENV/.markllm-stamp"
WANT="markllm==0.1.5 torch==2.13.0"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
  echo "$VENV/bin/python"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
printf '*\n' > "$VENV/.gitignore"
pip_q() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v '^WARNING: Location' >&2); }
pip_q install --upgrade pip >/dev/null
# CPU torch first (the local wheel / the CPU index via this machine's pip config): a bare `torch`
# requirement pulled in by markllm's deps would otherwise fetch a multi-GB CUDA build.
pip_q install "torch==2.13.0"
pip_q install "markllm==0.1.5"
# markllm imports these at package import time on some code paths; fail here, not mid-benchmark.
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import torch
from markllm.watermark.kgw.kgw import KGWConfig, KGWUtils  # noqa: F401
print("markllm", md.version("markllm"), "torch", torch.__version__)
EOF
echo "$WANT" > "$STAMP"
echo "$VENV/bin/python"
