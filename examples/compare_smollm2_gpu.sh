#!/usr/bin/env bash
# The real-model comparison of src/mentor/assets/compare_smollm2.yaml (warm start, GRPO, RefSol,
# StepAlignFB, RFT; README "Real models") on one GPU with a larger budget than the CPU run: 60 steps of 16
# rollouts instead of 30, 500 test problems at k=4 instead of 200 at k=2, 3 seeds, 4 runs at a time on the
# one GPU. Sized for about 10 minutes on an H100 (SmolLM2-135M trains in float32 and samples in bf16;
# not yet timed on a GPU: none has been lent to this project).
#   bash examples/compare_smollm2_gpu.sh [OUT]                      # on the GPU machine
#   TINY=1 DEVICE=cpu bash examples/compare_smollm2_gpu.sh OUT      # the same path with a tiny budget, on a CPU
# Extra KEY=VALUE arguments after OUT override the budget (e.g. dtype=bfloat16 to train in bf16 too).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/compare-smollm2-gpu}
shift || true
device=${DEVICE:-cuda}
if [ -n "${TINY:-}" ]; then
  budget=(seeds=[0] workers=1 'search.lr=[1.0e-5]' analysis_problems=2 carry_over_problems=2 carry_over_k=1
          warm_start.sft.steps=2 warm_start.oracle_problems=4 warm_start.eval_problems=2 warm_start.eval_k=1
          shared.steps=2 shared.eval_every=2 shared.eval_problems=2 shared.eval_k=1 shared.test_problems=2
          shared.max_new_tokens=24 generate.n_problems=2 generate.group_size=2 generate.max_new_tokens=24
          distill.sft.steps=2 distill.eval_every=2 distill.eval_problems=2 distill.eval_k=1
          distill.test_problems=2 distill.max_new_tokens=24)
else
  budget=(seeds=[0,1,2] workers=4 shared.steps=60 shared.eval_every=20 shared.eval_problems=200 shared.eval_k=4
          shared.test_problems=500 generate.n_problems=120 distill.sft.steps=60 distill.eval_every=20
          distill.eval_problems=200 distill.eval_k=4 distill.test_problems=500 carry_over_problems=300
          carry_over_k=4 analysis_problems=200)
fi
exec mentor compare --out "$out" src/mentor/assets/compare_smollm2.yaml device="$device" "${budget[@]}" "$@"
