#!/usr/bin/env bash
# First single-seed runs on the shipped world (docs/world.md, "First runs on the second world"):
# GRPO, StepAlignFB, RefSol and the oracle, 60 steps each, checkpoints chosen on 100 validation problems
# and scored on 300 test problems. Two runs at a time, one torch thread each (7 minutes on 2 cores).
#   bash benchmarks/world_first_runs.sh [OUT]      (default runs/world-first-runs)
set -euo pipefail
out=${1:-runs/world-first-runs}
mkdir -p "$out"
export OMP_NUM_THREADS=1
common="onpolicy.steps=60 onpolicy.eval_every=20 onpolicy.eval_problems=100 onpolicy.eval_k=4 onpolicy.test_problems=300"
run() { local name=$1; shift; "$@" --out "$out/$name" > "$out/$name.log" 2>&1; }
( run StepAlignFB mentor train $common onpolicy.method=sd-critique onpolicy.prompts_per_step=16 onpolicy.lr=1e-3
  run GRPO mentor train $common onpolicy.method=grpo onpolicy.prompts_per_step=2 onpolicy.rollouts_per_prompt=8 \
      onpolicy.lr=1e-4
  run StepAlignFB-lr3e-4 mentor train $common onpolicy.method=sd-critique onpolicy.prompts_per_step=16 onpolicy.lr=3e-4
  run RefSol-lr3e-4 mentor train $common onpolicy.method=sd-reference onpolicy.prompts_per_step=16 onpolicy.lr=3e-4 ) &
( run Oracle mentor distill mode=oracle sft.steps=60 sft.batch_size=16 sft.lr=1e-3 sft.warmup_steps=0 \
      sft.min_lr_ratio=1.0 sft.weight_decay=0 sft.group_by_length=false eval_every=20 eval_problems=100 eval_k=4 \
      test_problems=300
  run RefSol mentor train $common onpolicy.method=sd-reference onpolicy.prompts_per_step=16 onpolicy.lr=1e-3
  run StepAlignFB-to-divergence mentor train $common onpolicy.method=sd-critique onpolicy.prompts_per_step=16 \
      onpolicy.lr=1e-3 onpolicy.signal_span=to-divergence
  run StepAlignFB-clip-lr3e-4 mentor train $common onpolicy.method=sd-critique onpolicy.prompts_per_step=16 \
      onpolicy.lr=3e-4 onpolicy.divergence_clip=0.05 ) &
wait
python - "$out" <<'PY'
import json, sys
from pathlib import Path
keys = ("avg@4", "pass@4", "maj@4", "greedy", "trace_rate")
for name in ("GRPO", "StepAlignFB", "StepAlignFB-lr3e-4", "StepAlignFB-to-divergence", "StepAlignFB-clip-lr3e-4",
             "RefSol", "RefSol-lr3e-4", "Oracle"):
    summary = json.loads((Path(sys.argv[1]) / name / "summary.json").read_text())
    for which in ("best", "final"):
        score = summary["test"][which]
        cells = "  ".join(f"{k} {100 * score[k]:.2f} ± {100 * score['se'][k]:.2f}" for k in keys)
        print(f"{name:12s} {which:5s} step {score['step']:3d}  {cells}")
PY
