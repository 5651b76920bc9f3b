#!/usr/bin/env bash
# The benchmark suite on a GPU in one call, five minutes or so by estimate (it has not run on a GPU yet):
# what the GPU goals of the speed issue ask (the DGN-AM step's share of the device's ceiling at batch 64
# and 128, 1000 fc8 units x 200 DGN-AM steps, the inverse-set seeds), with eager PyTorch on the same GPU
# beside the steps.
#
# Run from anywhere on the GPU machine, with a Python that has JAX for the GPU, flax, optax, chex,
# orbax-checkpoint, Pillow, tqdm, matplotlib and PyTorch; jaxviz itself is imported from this tree, nothing
# is installed. Writes $OUT/gpu-<date>.json, .md, .png and .log (OUT: benchmarks/results by default).
# Overrides: PY, PIECES, BATCHES, UNITS, UNIT_STEPS, EXTRA (more suite flags), TORCH_COMPILE=1 (torch.compile
# beside the steps at batch 8: about a minute a workload to warm up).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
PY=${PY:-python3}
prefix="$OUT/gpu-$(date +%F)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: none"
  "$PY" -c "import sys, jax; print('python', sys.version.split()[0], 'jax', jax.__version__, jax.devices())"
  "$PY" -m benchmarks.suite --out "$prefix" \
    --only "${PIECES:-ceiling,pixel,dgn_am,units,inverse_set}" --batches "${BATCHES:-1,8,64,128}" \
    $([ "${TORCH_COMPILE:-0}" = 1 ] && echo --compile-batches 8 || echo --no-torch-compile) \
    --no-loop --repeats 7 --repeats-large 5 \
    --units "${UNITS:-1000}" --unit-steps "${UNIT_STEPS:-200}" ${EXTRA:-}
} 2>&1 | tee "$prefix.log"
