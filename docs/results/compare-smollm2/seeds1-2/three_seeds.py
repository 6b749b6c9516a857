"""The README's three-seed table of the real-model comparison: seed 0 read from ../report.md (its run folder
is not kept), seeds 1-2 from per_seed.json (written from their run folder with --runs).

    python docs/results/compare-smollm2/seeds1-2/three_seeds.py [--runs runs/compare-smollm2-seeds1-2]
"""

import argparse
import json
import math
import re
import statistics
from pathlib import Path

HERE = Path(__file__).parent
CARRY = {"t4": "terms4", "d3": "digits3"}


def seed0() -> tuple[dict, dict]:
    """Seed 0's numbers per method, and the base's, from its report."""
    report = (HERE.parent / "report.md").read_text()
    runs = {}
    for label, which, avg, se, greedy in re.findall(
            r"^\| (\w+) \| (best|final) \(step \d+\) \| ([\d.]+) \(se ([\d.]+)\) \|[^|]+\|[^|]+\| ([\d.]+) ", report, re.M):
        runs.setdefault(label, {})[which] = (float(avg), float(se), float(greedy))
    carry = {label: [(float(a), float(s)) for a, s in re.findall(r"([\d.]+) ± ([\d.]+) / [\d.]+", row)]
             for label, row in re.findall(r"^\| \S+ \| (\w+) \| (.+) \|$", report, re.M) if "±" in row}
    per = {label: dict(best=r["best"][0], se=r["best"][1], greedy=r["best"][2], final=r["final"][0],
                       t4=carry[label][0], d3=carry[label][1]) for label, r in runs.items()}
    return per, {"t4": carry["base"][0], "d3": carry["base"][1]}


def from_runs(folder: Path) -> dict:
    """Seeds 1-2 per method from their run folder (results.json and each run's carry-over files)."""
    per = {}
    for label, runs in json.loads((folder / "results.json").read_text()).items():
        for run in runs:
            test = run["test"]
            carry = {key: json.loads((folder / label / f"seed{run['seed']}" / f"carry_over-{name}.json").read_text())
                     ["summary"] for key, name in CARRY.items()}
            per.setdefault(label, []).append(dict(
                best=100 * test["best"]["avg@2"], se=100 * test["best"]["se"]["avg@2"],
                greedy=100 * test["best"]["greedy"], final=100 * test["final"]["avg@2"],
                **{key: (100 * c["avg@2"], 100 * c["se"]["avg@2"]) for key, c in carry.items()}))
    return per


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=Path, help="the seeds 1-2 run folder; writes per_seed.json from it")
    args = parser.parse_args()
    if args.runs:
        (HERE / "per_seed.json").write_text(json.dumps(from_runs(args.runs), indent=1) + "\n")
    later = json.loads((HERE / "per_seed.json").read_text())
    first, base = seed0()
    base_avg, base_se = first["RefSol"]["best"], first["RefSol"]["se"]  # RefSol's seed 0 chose step 0: the base
    for label, runs in later.items():
        per = [first[label], *runs]
        best = [p["best"] for p in per]
        gain, se = statistics.mean(best) - base_avg, math.hypot(statistics.mean(p["se"] for p in per), base_se)
        line = (f"{label}: {statistics.mean(best):.2f} ± {statistics.stdev(best):.2f} "
                f"({', '.join(f'{b:.2f}' for b in best)}; {gain:+.2f} ± {se:.2f}, {gain / se:.1f} se); "
                f"greedy {statistics.mean(p['greedy'] for p in per):.2f}; final {statistics.mean(p['final'] for p in per):.2f}"
                f" ± {statistics.stdev(p['final'] for p in per):.2f}")
        for key in CARRY:
            values = [p[key][0] for p in per]
            gain = statistics.mean(values) - base[key][0]
            se = math.hypot(statistics.mean(p[key][1] for p in per), base[key][1])
            line += f"; {CARRY[key]} {statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({gain:+.2f}, {gain / se:.1f} se)"
        print(line)


if __name__ == "__main__":
    main()
