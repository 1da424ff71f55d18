#!/usr/bin/env bash
# Idempotent set-up for `make test` / `make demo` on a fresh machine: system packages, .venv,
# pinned Python packages. A second run returns in seconds: it compares a stamp holding the hash of
# pyproject.toml and of this script against what was installed last time.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.workbench-installed
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)

# chromium: the browser test opens the HTML reports headless (tests/test_reports.py)
apt_packages=(espeak-ng sox libsndfile1 chromium)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "[bootstrap] installing system packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
    exit 0
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "[bootstrap] $PYTHON not found: install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
[ -x "$VENV/bin/python" ] || { echo "[bootstrap] creating $VENV"; "$PYTHON" -m venv "$VENV"; }
echo "[bootstrap] installing Python packages into $VENV (first run: a few minutes)"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first and alone, so that no other package's looser requirement pulls a different build.
"$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchaudio==2.11.0"
"$VENV/bin/python" -m pip install -q -e ".[dev]"
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "$want" > "$STAMP"
echo "[bootstrap] ready"
