#!/usr/bin/env bash
# The GPU check, prepared for the day a GPU machine is lent (runs in well under 8 minutes on one large GPU):
#   1. the model alone on CUDA at batch 1-256 (benchmarks.model_bench), and
#   2. the service on CUDA (DAA_DEVICE=cuda, batching across requests) at 1, 16 and 64 clients
#      (benchmarks.service_bench), 200x200 and 1080p photos,
# each writing its table and JSON to $OUT (default benchmarks/results/gpu). Usage:
#   bash benchmarks/gpu_check.sh                 # on a GPU machine
#   DEVICE=cpu DRY_RUN=1 bash benchmarks/gpu_check.sh   # the CPU dry run CI runs (tiny sizes, same code path)
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-benchmarks/results/gpu}
PY=${PYTHON:-python}
mkdir -p "$OUT"
if [ "${DRY_RUN:-0}" = 1 ]; then
  BATCHES=1,4; REQUESTS=4; CONC=1,2; SIZES=200x200; MIN_S=0.05; REPEATS=1
else
  BATCHES=1,8,32,64,128,256; REQUESTS=256; CONC=1,16,64; SIZES=200x200,1920x1080; MIN_S=1; REPEATS=5
fi
"$PY" - <<PYEOF
import torch
print("device:", "$DEVICE", torch.cuda.get_device_name(0) if "$DEVICE" == "cuda" else "cpu (dry run)",
      "torch", torch.__version__)
PYEOF
"$PY" -m benchmarks.model_bench --device "$DEVICE" --batches "$BATCHES" --encoders dlib_resnet,resnet18 \
  --min-seconds "$MIN_S" --repeats "$REPEATS" --out "$OUT/model_bench.json"
DAA_DEVICE="$DEVICE" DAA_MAX_BATCH_SIZE=128 DAA_MAX_PENDING=256 "$PY" -m benchmarks.service_bench \
  --requests "$REQUESTS" --concurrency "$CONC" --sizes "$SIZES" --out "$OUT/service_bench.json"
echo "wrote $OUT"
