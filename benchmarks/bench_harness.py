"""Calibrate the evaluation harness: the oracle and the script through the offline customer and judge.

The oracle always takes a right next step with the values the customer gave (and the business's
look-ups), so whatever it loses is the harness's error: the customer's, the controller's or the
judge's. The script is the controller speaking the workflow's own sentences without the business's
hidden outcomes. Prints, per workflow and condition: failure rate (Task Success <= 3), the mean of
each criterion (Graceful Handling over challenged conversations) and failures per persona.

    python benchmarks/bench_harness.py                 # 200 scenarios on every shipped workflow
    python benchmarks/bench_harness.py --n 50 --workflow travel tests/workflows/restaurant.yaml
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from subterra.judge import CRITERIA, TITLES, OfflineJudge
from subterra.simulation import Oracle, Orchestrated, simulate
from subterra.workflow import DOMAINS, load_domain

ROOT = Path(__file__).resolve().parents[1]


def calibrate(workflow, condition, n: int) -> dict:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        rows = simulate(workflow, [condition], out, n=n, progress=False)[condition.name]
    seconds = time.perf_counter() - start
    judge = OfflineJudge(workflow)
    verdicts = [judge.score(r) for r in rows]
    personas = [json.loads(r["scenario"])["persona"]["challenge"] for r in rows]
    means = {}
    for c in CRITERIA:
        scored = [v.scores[c] for v in verdicts if v.scores.get(c) is not None]
        means[c] = sum(scored) / len(scored) if scored else float("nan")
    failed = Counter(p for p, v in zip(personas, verdicts) if v.failure)
    return {"n": len(rows), "failures": sum(failed.values()), "means": means, "by_persona": failed,
            "personas": Counter(personas), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="scenarios per workflow and condition")
    parser.add_argument("--workflow", nargs="*", default=[*DOMAINS, str(ROOT / "tests/workflows/restaurant.yaml")],
                        help="shipped domain names or workflow files")
    args = parser.parse_args()
    header = f"{'workflow':<12} {'condition':<13} {'n':>4} {'failure':>8} " + " ".join(
        f"{TITLES[c][:12]:>12}" for c in CRITERIA) + f" {'s':>6}  failures by persona"
    print(header)
    for name in args.workflow:
        workflow = load_domain(name)
        for condition in (Oracle(workflow), Orchestrated(workflow)):
            r = calibrate(workflow, condition, args.n)
            label = "oracle" if condition.name == "oracle" else "script"
            persona = ", ".join(f"{p} {r['by_persona'][p]}/{r['personas'][p]}" for p in sorted(r["personas"])
                                if r["by_persona"][p]) or "none"
            print(f"{workflow.name:<12} {label:<13} {r['n']:>4} {r['failures'] / r['n']:>8.1%} "
                  + " ".join(f"{r['means'][c]:>12.2f}" for c in CRITERIA) + f" {r['seconds']:>6.0f}  {persona}",
                  flush=True)


if __name__ == "__main__":
    main()
