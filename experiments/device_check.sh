#!/usr/bin/env bash
# One command for a lent GPU: install the carried wheels, check vitjax works on the machine's jax
# (import, two train steps, each Pallas kernel vs its reference in fp32/bf16), then run each benchmark
# in its own guarded step and write one JSON and one markdown table. <= 8 minutes on one GPU for
# issue 20's steps, then <= 2 for issue 21's attention step.
#
#   bash experiments/device_check/fetch_wheels.sh            # here, once: the wheels the image lacks -> .whl/
#   device run, carry [".whl"]:  bash experiments/device_check.sh "$OUT"
#   bash experiments/device_check.sh /tmp/dc --cpu-smoke     # here: every step at toy sizes, on CPU
#
# Results: OUTDIR/device_check.json, OUTDIR/device_check.md, one OUTDIR/<step>.log per step.
# Record the table in docs/benchmarks.md with the date and device. Steps and their time limits:
# experiments/device_check/run.py.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-/tmp/vitjax_device_check}
shift || true
mkdir -p "$OUTDIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export VITJAX_COMPILE_CACHE=""                    # a fresh machine: nothing to reuse, nothing to keep
export XLA_PYTHON_CLIENT_PREALLOCATE=false        # jax and torch share the GPU in the timm comparison
if compgen -G ".whl/*.whl" > /dev/null; then
  echo "== installing $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "error: the carried wheels did not install; rerun experiments/device_check/fetch_wheels.sh"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/== GPU: /'
"$PY" experiments/device_check/run.py --out "$OUTDIR" "$@"
