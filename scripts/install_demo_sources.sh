#!/usr/bin/env bash
# Install the packages whose real images and masks paddlemix.tools.build_demo_data converts.
# Idempotent: apt-get update runs only when a Debian package is missing; pip keeps exact pins.
#   bash scripts/install_demo_sources.sh            (into the Python of scripts/python.sh)
#   PYTHON=/path/to/python bash scripts/install_demo_sources.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=$(pwd)
. scripts/python.sh
DEBIAN_PACKAGES=(mricron-data invesalius-examples)   # Colin27 MR + AAL atlas; head CT + masks

missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: $PYTHON not found; create the virtual environment first or set PYTHON" >&2
  exit 1
fi
# nibabel reads the NIfTI volumes; stardist only ships the nuclei images and is never imported,
# so its heavy dependencies (tensorflow via csbdeep, numba) are not installed.
"$PYTHON" -m pip install -q nibabel==5.4.2
"$PYTHON" -m pip install -q --no-deps stardist==0.9.2
