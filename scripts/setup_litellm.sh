#!/usr/bin/env bash
# Create .venv-litellm/ with LiteLLM's proxy 1.108.7, the peer in benchmarks/gateway_protections.py
# (--litellm .venv-litellm/bin/litellm). Kept apart from .venv: LiteLLM brings its own pins.
# Its Postgres spend logging needs Prisma's query engine, which Prisma downloads at start from
# binaries.prisma.sh: this workplace cannot reach it, so the benchmark runs LiteLLM without it.
#
#   scripts/setup_litellm.sh          # idempotent; prints the venv's litellm on success
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv-litellm
WANT="litellm[proxy]==1.108.7"
STAMP="$VENV/.litellm-stamp"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/litellm" ]; then
  echo "$VENV/bin/litellm"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
printf '*\n' > "$VENV/.gitignore"
"$VENV/bin/python" -m pip --disable-pip-version-check -q install "$WANT" 2> >(grep -v '^WARNING: Location' >&2)
echo "$WANT" > "$STAMP"
echo "$VENV/bin/litellm"
