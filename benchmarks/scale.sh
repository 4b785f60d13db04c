#!/usr/bin/env bash
# Scale check: generate N dragons, fit one epoch, test, for N = 1M and 10M; wall time and peak
# resident memory from /usr/bin/time -v. Usage: benchmarks/scale.sh [N ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "| dragons | wall time (s) | peak RSS (MB) | test/acc |"
echo "|---|---|---|---|"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000000 10000000)
for n in "${sizes[@]}"; do
  /usr/bin/time -v "$PYTHON" -m dragon_lightning fit --config configs/color_mlp.yaml \
      --data.n_dragons "$n" --data.batch_size 4096 --data.data_dir "$WORK/data" --trainer.max_epochs 1 \
      --trainer.default_root_dir "$WORK/runs" --trainer.enable_progress_bar false \
      > "$WORK/out.txt" 2> "$WORK/time.txt" || { tail -5 "$WORK/time.txt" >&2; exit 1; }
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {split($2, t, ":"); s = 0; for (i = 1; i <= length(t); i++) s = s * 60 + t[i]; print s}' "$WORK/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$WORK/time.txt")
  acc=$(awk '/test\/acc/ {print $2}' "$WORK/out.txt")
  echo "| $n | $wall | $rss | $acc |"
done
