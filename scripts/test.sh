#!/usr/bin/env bash
# Installs everything the test suite needs and runs it: the pinned Python packages, and Debian's
# Chromium for the real-browser test (skipped with a reason when it cannot be installed).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements.txt
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || echo "note: chromium not installed; browser test will skip"
fi
python -m ruff check .
python -m pytest -q "$@"
