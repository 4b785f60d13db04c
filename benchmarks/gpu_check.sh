#!/usr/bin/env bash
# The GPU check: the main job and the throughput benchmark on a CUDA GPU, CPU figures beside them.
# Needs the package installed with a CUDA build of PyTorch (e.g. `make setup TORCH=torch`). About 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"

"$PYTHON" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA GPU visible to PyTorch"
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY

echo "== main job on the GPU"
/usr/bin/time -v "$PYTHON" -m dragon_lightning fit --config configs/color_mlp.yaml --trainer.accelerator gpu \
    --trainer.default_root_dir "$OUT" --trainer.enable_progress_bar false 2> "$OUT/main_job.time" | tail -12
grep -E "Elapsed|Maximum resident" "$OUT/main_job.time"

echo "== throughput, GPU"
"$PYTHON" benchmarks/throughput.py --accelerator gpu --skip-sklearn --tutorial-rows 500 --json "$OUT/throughput_gpu.json"
echo "== throughput, CPU (same machine)"
"$PYTHON" benchmarks/throughput.py --accelerator cpu --n 200000 --skip-sklearn --tutorial-rows 500 --json "$OUT/throughput_cpu.json"
