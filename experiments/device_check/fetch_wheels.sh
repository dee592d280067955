#!/usr/bin/env bash
# Fetches the wheels experiments/device_check.sh installs on the device machine: the packages vitjax
# imports that its image lacks (grain, ml-collections, tensorboardX, array-record, portpicker), built
# for its Python 3.12 on x86-64 Linux. Run here, where pip can reach the registry, before the device
# run; they go to .whl/ at the repo root (ignored by git, carried with the run: `carry: [".whl"]`).
#   bash experiments/device_check/fetch_wheels.sh
# The wheels are fetched, not committed: they are binaries tied to the device image's Python (4.7 MB).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
# Versions: the ones the test suite runs with here (setup.py); deps not in the image's package list
# (the device README's KINDS.md) are named too, since --no-deps fetches none.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl \
  grain==0.2.18 array-record==0.8.6 ml-collections==1.1.0 tensorboardX==2.6.5 portpicker==1.6.0
ls -la .whl
du -sh .whl
