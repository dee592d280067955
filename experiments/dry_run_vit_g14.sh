#!/usr/bin/env bash
# Per-device memory of ViT-g/14 training (224 px, batch 256, bf16 compute, AdamW) on 8 simulated
# devices: data parallel vs FSDP vs FSDP x tensor parallel. Compiles only; allocates nothing.
#   bash experiments/dry_run_vit_g14.sh
set -euo pipefail
PY=${PYTHON:-python}
common=(--config configs/vit_b16_imagenet.py --workdir /tmp/vitjax_dry_run --dry_run --simulate_devices 8
        --config.model.variant=g/14 --config.input.batch_size=256 --config.model.remat=full)
for mesh in "--config.mesh.data=8" "--config.mesh.data=1 --config.mesh.fsdp=8" \
            "--config.mesh.data=1 --config.mesh.fsdp=4 --config.mesh.tensor=2"; do
  echo "== $mesh"
  $PY -m vitjax.train "${common[@]}" $mesh
done
