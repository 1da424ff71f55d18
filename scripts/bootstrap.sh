#!/usr/bin/env bash
# Idempotent set-up for `make test` / `make demo` / `make lab` on a fresh machine: system packages,
# .venv, pinned Python packages, the project's Jupyter kernel, the notebook output filter for git.
# A second run returns in about a second: it compares a stamp holding the hash of pyproject.toml
# and of this script against what was installed last time.
#
# Output: one line per step with its time; everything the tools print goes to $LOG, which is
# printed only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.workbench-installed
LOG=${WORKBENCH_BOOTSTRAP_LOG:-$PWD/bootstrap.log}
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)

step() {  # step NAME COMMAND...: run quietly, one line with the time, the log on failure
    local name=$1; shift
    local start=$SECONDS
    printf '[bootstrap] %-8s ' "$name"
    echo "=== $name: $*" >>"$LOG"
    if "$@" >>"$LOG" 2>&1; then
        echo "ok ($((SECONDS - start)) s)"
    else
        local rc=$?
        echo "FAILED ($((SECONDS - start)) s); the log follows ($LOG)"
        tail -n 60 "$LOG" >&2
        exit "$rc"
    fi
}

# chromium: the browser tests open the HTML reports and JupyterLab headless; fortunes and
# wordnet-base: the sentences of the synthetic pretraining corpus (workbench.data.sentences)
apt_packages=(espeak-ng sox libsndfile1 chromium fortunes wordnet-base)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
install_apt() {
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}
if [ ${#missing[@]} -gt 0 ]; then
    : >"$LOG"
    step apt install_apt "${missing[@]}"
fi

install_git_filter() {
    # Saved outputs and execution counts never reach a commit (`nbstripout --install` writes the
    # filter into this clone's .git/config; .gitattributes names the notebooks it applies to).
    git rev-parse --is-inside-work-tree >/dev/null 2>&1 || return 0
    "$VENV/bin/nbstripout" --install
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
    # A new clone of a machine that already has the venv still needs its own git filter.
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1 && ! git config --get filter.nbstripout.clean >/dev/null; then
        install_git_filter >/dev/null 2>&1 || true
    fi
    exit 0
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "[bootstrap] $PYTHON not found: install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
: >"$LOG"
echo "[bootstrap] setting up (first run: a few minutes; full log in $LOG)"
[ -x "$VENV/bin/python" ] || step venv "$PYTHON" -m venv "$VENV"
step pip "$VENV/bin/python" -m pip install -q --upgrade pip
# torch first and alone, so that no other package's looser requirement pulls a different build.
step torch "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchaudio==2.11.0"
step project "$VENV/bin/python" -m pip install -q -e ".[dev]"
# Papermill runs notebooks on "python3"; JupyterLab offers the kernel named after the project.
install_kernels() {
    "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3
    "$VENV/bin/python" -m ipykernel install --sys-prefix --name workbench --display-name "workbench (Python 3.11)"
}
step kernel install_kernels
step git install_git_filter
echo "$want" > "$STAMP"
echo "[bootstrap] ready"
