#!/usr/bin/env bash
# The GPU session's one prepared script: fp32 vs bf16 step figures, then the tuning-split sweep.
# Writes under $OUT: env.txt, gpu_step.txt, sweep.txt, sweep.tgz.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PY:-python3}
T0=$(date +%s)
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c "import torch,timm,sklearn,skimage;print(torch.__version__,timm.__version__,sklearn.__version__,skimage.__version__)"; nproc; } >"$OUT/env.txt" 2>&1
timeout 120 $PY benchmarks/gpu_step.py --preset paper --repeats 5 >"$OUT/gpu_step.txt" 2>&1
echo "gpu_step rc $? at $(( $(date +%s) - T0 )) s" >>"$OUT/gpu_step.txt"
timeout $(( ${SWEEP_S:-460} - ($(date +%s) - T0) )) $PY benchmarks/recipe_sweep.py --variants benchmarks/variants-tuning.json \
  --device cuda --jobs ${JOBS:-14} --deadline ${DEADLINE:-300} --cache /tmp/cache --out /tmp/sweep >"$OUT/sweep.txt" 2>&1
echo "sweep rc $? at $(( $(date +%s) - T0 )) s" >>"$OUT/sweep.txt"
nvidia-smi >>"$OUT/env.txt" 2>&1
(cd /tmp && find sweep cache -name '*.json' -o -name '*.log' -o -name '*.jsonl' | tar czf "$OUT/sweep.tgz" -T -)
echo "done at $(( $(date +%s) - T0 )) s"
