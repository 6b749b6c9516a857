"""A single run's record beside the comparison (stepalignfb_position_clip_lr1e-5.json, stepalignfb_60steps_lr1e-5.json):
the command, every validation evaluation, the test scores, and what the README quotes from the run's metrics:
the rollouts' reward, the teacher's mean A_t and the share of clipped positions, by ten steps.

    python docs/results/compare-smollm2/run_record.py RUN_FOLDER OUT.json "COMMAND"
"""

import json
import statistics
import sys
from pathlib import Path


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def main() -> None:
    run, out, command = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    metrics = lines(run / "metrics.jsonl")
    tens = [metrics[i:i + 10] for i in range(0, len(metrics), 10)]
    record = {"command": command, "validation": lines(run / "evals.jsonl"),
              "test": json.loads((run / "summary.json").read_text())["test"],
              "train_reward_by_10_steps": [round(statistics.mean(m["reward"] for m in t), 4) for t in tens],
              "sd_adv_t_mean_by_10_steps": [round(statistics.mean(m["sd_adv_t_mean"] for m in t), 4) for t in tens],
              "sd_clip_frac_mean": round(statistics.mean(m.get("sd_clip_frac", 0.0) for m in metrics), 4)}
    out.write_text(json.dumps(record, indent=1))
    print({key: value for key, value in record.items() if key.startswith(("train_", "sd_"))})


if __name__ == "__main__":
    main()
