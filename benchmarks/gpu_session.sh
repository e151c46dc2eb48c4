#!/usr/bin/env bash
# Every GPU figure of the product in one unattended run (issue 16), results as JSON.
#   benchmarks/gpu_session.sh RESULTS_DIR DATA_DIR [SEARCH_SECONDS]
# Steps, each writing RESULTS_DIR/<name>.json and a log: train_speed (eager and compiled,
# batch 128 against the report-style baseline, plus our batch 512), packing (1, 2, 4
# trial processes on the GPU), time_to_accuracy, then a real search of the default space
# at the 5M budget for SEARCH_SECONDS with the per-GPU packing that won, its export and
# test evaluation. A step that fails is logged and the next one runs.
set -uo pipefail
results=${1:?results dir} data=${2:?data dir} search_seconds=${3:-600}
mkdir -p "$results"
cd "$(dirname "$0")/.."
log() { echo "[$(date +%T)] $*" | tee -a "$results/session.log"; }
step() { local name=$1; shift; log "start $name"; "$@" >"$results/$name.log" 2>&1; log "end $name rc=$?"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$results/gpu.txt" 2>&1
step train_speed python benchmarks/train_speed.py --device cuda --data-dir "$data" --variants eager,compile \
  --extra-batch-sizes 512 --json "$results/train_speed_gpu.json"
step packing python benchmarks/packing.py --data-dir "$data" --per-gpu 1,2,4 --trials 12 --epochs 2 \
  --json "$results/packing_gpu.json"
step time_to_accuracy python benchmarks/time_to_accuracy.py --data-dir "$data" --json "$results/time_to_accuracy_gpu.json"
per_gpu=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['best_per_gpu'])" "$results/packing_gpu.json" 2>/dev/null || echo 2)
log "search with --per-gpu $per_gpu for $search_seconds s"
s=/tmp/gpu-search; mkdir -p $s
store="sqlite:///$s/search.db"
step search python -m search run --study gpu-5m --storage "$store" --artifacts $s/artifacts --data-dir "$data" \
  --budget 5000000 --per-gpu "$per_gpu" --timeout "$search_seconds"
step export python -m search export-best --study gpu-5m --storage "$store" --artifacts $s/artifacts \
  --data-dir "$data" --out $s/best.pt --evaluate
python -m search status --study gpu-5m --storage "$store" --json > "$results/search_status.json" 2>>"$results/session.log"
python -m search status --study gpu-5m --storage "$store" >> "$results/export.log" 2>&1
cp $s/search.db "$results/search.db"
log "done"
