#!/usr/bin/env bash
# Train on every host of a Cloud TPU pod slice; jax.distributed.initialize() auto-detects the slice.
#   bash experiments/launch/tpu_pod.sh my-v4-32 us-central2-b configs/vit_b16_imagenet.py /mnt/shared/vit_b16_i1k [--config.key=value ...]
# Assumes the repo is checked out at ~/vitjax on every worker (gcloud ... --worker=all --command="git clone ...")
# and WORKDIR is a folder all workers share (e.g. a GCS bucket mounted with gcsfuse).
set -euo pipefail
TPU=${1:?tpu name}; ZONE=${2:?zone}; CONFIG=${3:?config}; WORKDIR=${4:?workdir}
shift 4
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command="
  cd ~/vitjax && (test -d .venv || (python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]')) &&
  .venv/bin/python -m vitjax.train --distributed --config $CONFIG --workdir $WORKDIR $*"
