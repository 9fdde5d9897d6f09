#!/usr/bin/env bash
# The test suite: sets up .venv and the Debian packages the tests need if missing, then runs pytest.
# Extra arguments go to pytest.
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh tests/bird -k iou
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh

# Java runs pycocoevalcap's PTB tokenizer and METEOR; Chromium is the browser of the web-page test
# (tests/serving/test_serve_browser.py, driven by Playwright; it never downloads a browser).
missing=()
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
# (the test takes either name Debian and Ubuntu give the binary)
{ command -v chromium || command -v chromium-browser; } >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "test.sh: installing ${missing[*]} (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q "${missing[@]}"
fi

ROOT=$(pwd)
. scripts/python.sh
exec "$PYTHON" -m pytest -q "${@:-tests}"
