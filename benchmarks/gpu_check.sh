#!/usr/bin/env bash
# The GPU check of issue 11, in under 5 minutes on one GPU node:
#   installs the gpu extra (onnxruntime-gpu in place of onnxruntime, torchvision), generates
#   10,000 JPEGs, times each stage, runs the split plan end to end through the CLI, samples
#   nvidia-smi, prints images/s, GPU utilisation and per-stage times, and writes JSON
#   ($OUT/gpu_check.json when OUT is set, else benchmarks/results/gpu_check.json).
#
#   benchmarks/gpu_check.sh                  # on the GPU node, from any folder
#   benchmarks/gpu_check.sh --no-install     # use what is installed
#   benchmarks/gpu_check.sh --wheels DIR     # install from wheels in DIR (a node without an index)
#   benchmarks/gpu_check.sh --cpu-smoke      # 100 files on the CPU: no install, no nvidia-smi
# Other options go to benchmarks/gpu_check.py (--files, --sample, --out, --e2e-arg ...).
set -uo pipefail
cd "$(dirname "$0")/.."

TOTAL=${GPU_CHECK_SECONDS:-290}   # the whole check, install included
START=$SECONDS
PY=${PY:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

install=1
wheels=""
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-install) install=0 ;;
    --cpu-smoke) install=0; pass+=("$1") ;;
    --wheels) wheels="$2"; shift ;;
    *) pass+=("$1") ;;
  esac
  shift
done

if [ "$install" = 1 ]; then
  src=()
  if [ -n "$wheels" ]; then src=(--no-index --find-links "$wheels"); fi
  echo "installing the gpu extra (at most 120 s)"
  if timeout 120 "$PY" -m pip install -q "${src[@]}" -e '.[gpu]'; then
    # onnxruntime-gpu and onnxruntime provide the same module: keep only the GPU one (as
    # `make install-gpu` does), reinstalling it since the CPU package's removal takes its files
    if "$PY" -m pip show -q onnxruntime >/dev/null 2>&1; then
      "$PY" -m pip uninstall -q -y onnxruntime
      timeout 60 "$PY" -m pip install -q "${src[@]}" --force-reinstall --no-deps \
        'onnxruntime-gpu>=1.18' || echo "onnxruntime-gpu reinstall failed: models may run on CPU"
    fi
  else
    echo "install failed or timed out: going on with what is installed (see machine.versions)"
  fi
fi

left=$(( TOTAL - (SECONDS - START) ))
if [ "$left" -lt 60 ]; then left=60; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# the check bounds each stage itself; this is the backstop
timeout -k 10 "$left" "$PY" benchmarks/gpu_check.py --budget "$(( left - 15 ))" "${pass[@]}"
