#!/usr/bin/env bash
# The test suite: sets up .venv if needed, then runs pytest. Extra arguments go to pytest.
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh tests/bird -k iou
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest -q "${@:-tests}"
