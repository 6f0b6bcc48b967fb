#!/usr/bin/env bash
# The two commands of the README:
#   ./run.sh serve [antidistill serve options]   install everything, start the gateway (embedded model, SQLite)
#   ./run.sh test  [pytest options]              install everything, run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cmd=${1:-}
shift || true
case "$cmd" in
  serve) exec .venv/bin/antidistill serve "$@" ;;
  test)  exec .venv/bin/python -m pytest -q "$@" ;;
  *) echo "usage: ./run.sh serve|test [options]" >&2; exit 2 ;;
esac
