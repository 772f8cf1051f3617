#!/usr/bin/env bash
# Installs everything the test suite needs and runs it: the pinned Python packages, and Debian's
# Chromium for the real-browser test (skipped with a reason when it cannot be installed).
#   bash scripts/test.sh            # ruff + the whole suite (what CI runs)
#   bash scripts/test.sh --fast     # ruff + the unit layer (no Chromium, no subprocesses, no TRL training)
# Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
if [ "${1:-}" = "--fast" ]; then fast=1; shift; fi
python -m pip install -q -r requirements.txt
if [ "$fast" = 0 ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || echo "note: chromium not installed; browser test will skip"
fi
python -m ruff check .
if [ "$fast" = 1 ]; then  # the slow tier: tests/conftest.py's SLOW_MODULES and @pytest.mark.slow
  python -m pytest -q -m "not slow" "$@"
else
  python -m pytest -q "$@"
fi
