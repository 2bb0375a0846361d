"""Print the time to synthesise the insurance corpus (3,000 dialogues) with the offline teacher.

Run: python benchmarks/bench_synthesis.py [N]
"""

import sys
import tempfile
import time

from subterra import load_domain
from subterra.synthesis import load_corpus, synthesize


def main(n: int = 3000) -> None:
    workflow = load_domain("insurance")
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = synthesize(workflow, n, out, "offline", progress=False)
        seconds = time.perf_counter() - start
        corpus = load_corpus(out)
        turns = sum(len(r) for r in corpus["train"]["nodes"]) + sum(len(r) for r in corpus["eval"]["nodes"])
    print(f"insurance offline synthesis: {result.dialogues} dialogues, {turns} turns in {seconds:.1f} s "
          f"({result.dialogues / seconds:.0f} dialogues/s, {turns / seconds:.0f} turns/s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
