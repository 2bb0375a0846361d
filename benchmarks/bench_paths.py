"""Print how long path enumeration takes per domain (target: insurance well under 0.1 s).

Run: python benchmarks/bench_paths.py   (or `make benchmark`)
"""

import time

from subterra import DOMAINS, enumerate_paths, load_domain


def best_of(fn, repeat=7):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main():
    print(f"{'domain':<10} {'paths':>6} {'load ms':>8} {'enumerate ms':>13}")
    for domain in DOMAINS:
        load_s, workflow = best_of(lambda: load_domain(domain))
        enum_s, paths = best_of(lambda: enumerate_paths(workflow))
        print(f"{domain:<10} {len(paths):>6} {1000 * load_s:>8.1f} {1000 * enum_s:>13.2f}")


if __name__ == "__main__":
    main()
