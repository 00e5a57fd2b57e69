"""Interleaved A/B of bench/run.py scenarios between two source trees (e.g. main vs a branch):
runs alternate, the order reversing every round, so machine load hits both sides alike.

    git archive main | tar -x -C /tmp/main
    python bench/ab.py --rounds 3 /tmp/main/src src passthrough testbed_traces

Prints, per scenario and tree, the median items/s and collector CPU seconds per million items.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="first tree's src directory (PYTHONPATH of its collector)")
    parser.add_argument("b", help="second tree's src directory")
    parser.add_argument("scenarios", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args()
    trees = [str(Path(args.a).resolve()), str(Path(args.b).resolve())]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for round_no in range(args.rounds):
        for name in args.scenarios:
            scenario = next(s for s in run.SCENARIOS if s.name == name)
            for tree in trees if round_no % 2 == 0 else trees[::-1]:
                os.environ["PYTHONPATH"] = tree
                out = run.run_scenario(scenario, args.duration, 1, False)
                results.setdefault((name, tree), []).append(
                    (out["items_per_s"], out["cpu_s_per_million"]))
                print(f"{name} {tree}: {out['items_per_s']:,.0f} items/s, "
                      f"{out['cpu_s_per_million']:.2f} CPU s/M", file=sys.stderr)
    print("| scenario | tree | items/s (median) | CPU s / M items (median) |\n|---|---|---:|---:|")
    for (name, tree), runs in results.items():
        print(f"| {name} | {tree} | {statistics.median(r for r, _ in runs):,.0f} "
              f"| {statistics.median(c for _, c in runs):.2f} |")


if __name__ == "__main__":
    main()
