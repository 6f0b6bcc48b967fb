#!/usr/bin/env bash
# Create .venv-unmimic/ with the peer proxy unmimic 0.1.0 (without its "ml" extras: they download a
# ~470 MB embedding model at run time, which this workplace cannot fetch), for the side-by-side
# reasoning leak matrix in benchmarks/reasoning_leaks.py. Kept apart from .venv: unmimic brings
# FastAPI and its own pins.
#
#   scripts/setup_unmimic.sh          # idempotent; prints the venv's unmimic on success
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv-unmimic
WANT="unmimic==0.1.0"
STAMP="$VENV/.unmimic-stamp"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/unmimic" ]; then
  echo "$VENV/bin/unmimic"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
printf '*\n' > "$VENV/.gitignore"
"$VENV/bin/python" -m pip --disable-pip-version-check -q install "$WANT" 2> >(grep -v '^WARNING: Location' >&2)
"$VENV/bin/unmimic" --version >/dev/null
echo "$WANT" > "$STAMP"
echo "$VENV/bin/unmimic"
