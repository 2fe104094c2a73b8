#!/usr/bin/env bash
# The whole pipeline for one task: fine-tune -> saliency -> AdapLeR -> evaluate.
# Usage: scripts/pipeline.sh TASK OUT_DIR [extra `train` flags...]
# Env: ADAPLER_DATA_DIR (data folder), FT_FLAGS / SAL_FLAGS (extra flags for those steps).
# Every step resumes or is skipped when its output exists, so re-running after an interruption
# continues where it stopped. Run folders live under OUT_DIR (keep it outside the repository).
set -euo pipefail
task=$1; out=$2; shift 2
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
mkdir -p "$out"
if [ ! -f "$out/ft/finetune_log.json" ]; then
  python -m adapler finetune --task "$task" --output-dir "$out/ft" ${FT_FLAGS:-}
fi
if [ ! -f "$out/saliency.safetensors" ]; then
  python -m adapler saliency --task "$task" --model "$out/ft" --split train --output "$out/saliency.safetensors" ${SAL_FLAGS:-}
fi
if [ ! -f "$out/adapler/train_log.json" ]; then
  python -m adapler train --task "$task" --init-model "$out/ft" --saliency "$out/saliency.safetensors" --output-dir "$out/adapler" "$@"
fi
split=test; [ "$task" = sst2 ] && split=val
python -m adapler evaluate --model "$out/adapler" --task "$task" --split "$split" --baseline "$out/ft" --sweep "${SWEEP:-0.5,0.75,1,1.25,1.5,2}" --json "$out/eval_$split.json"
