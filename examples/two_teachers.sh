#!/usr/bin/env bash
# Two specialist teachers and the student they teach together (issue 22, part 3), from the repository root:
#   bash examples/two_teachers.sh            # about 30 minutes on 2 CPU cores
# 1. each teacher: the world's base solver fine-tuned on the correct traces of one kind of problem;
# 2. what each teacher scores on each kind (validation, 100 problems x 4 samples);
# 3. the comparison: src/mentor/assets/compare_world_teachers.yaml (finished runs are reused).
set -euo pipefail
OUT=runs/two-teachers
mkdir -p "$OUT"
build() {  # name task
  [ -f "$OUT/$1/summary.json" ] || mentor distill --out "$OUT/$1" mode=oracle task="$2" sft.steps=200 \
      sft.lr=3e-4 eval_problems=50 eval_k=4 max_new_tokens=256
}
build short "world:steps=2"
build long "world:steps=4,inputs=2"
for teacher in base short long; do
  model=$([ "$teacher" = base ] && echo world || echo "$OUT/$teacher/best")
  for task in "world:steps=2" "world:steps=4,inputs=2"; do
    echo "== $teacher on $task"
    mentor eval --model "$model" --task "$task" --split validation -n 100 -k 4 --max-new-tokens 256 | tail -3
  done
done
mentor compare --out "$OUT/compare" src/mentor/assets/compare_world_teachers.yaml
