"""Simulation benchmark: batched against one-at-a-time, and what each condition reads and costs per turn.

1. **Batching.** The same model (``--model``: a compiled model folder, default the SmolLM2 base) as the
   ``subterranean`` condition on the same scenarios: one conversation at a time reading each prompt whole
   (the simulator before batching), one at a time with the prefix cache (each turn reads only what is new
   since its last), and every conversation advancing together with the prefix cache (one batched
   ``generate`` per round): seconds of wall time per agent turn, and the ratios, from one run.
2. **Per condition** (every condition on the same scenarios, offline: the orchestrated base model, the base
   standing in for the frontier model in ``in_context`` and ``langgraph``, the oracle): prompt tokens per
   agent turn and dollars per conversation — a stand-in priced at its frontier model's list price from its
   own token counts, the small models at the paper's GPU-hour rate — and the in-context/compiled cost ratio
   beside the paper's (128x travel, 462x insurance).
3. **One decode step** (``--decode-step ROWSxTOKENS``, e.g. ``32x600``): milliseconds per step of greedy
   decoding for a batch of that many rows after that many tokens of context, with the key/value cache the
   agent uses (each step's column written into room reserved for the reply) and with transformers' own
   (concatenated again at every step); the same tokens either way.

    python benchmarks/bench_simulation.py [--domain travel] [--n 8] [--model outputs/travel/model]
        [--skip-cached-one-at-a-time] [--skip-conditions | --skip-batching] [--decode-step 32x600]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

PAPER_RATIO = {"travel": 128, "insurance": 462}


def per_turn(rows: list[dict]) -> tuple[int, float]:
    turns = sum(len(r["turn_seconds"]) for r in rows)
    return turns, sum(sum(r["turn_seconds"]) for r in rows) / max(turns, 1)


def report_batching(args, wf, timings: dict, texts: dict) -> None:
    print(f"{wf.name}, {args.n} scenarios, {args.model} as the subterranean condition:")
    print(f"{'':<24}{'agent turns':>12}{'wall s/turn':>13}{'waited s/turn':>15}")
    for label, (wall, turns, waited) in timings.items():
        print(f"{label:<24}{turns:>12}{wall:>13.2f}{waited:>15.2f}")
    first = timings["one at a time"][0]
    cache_alone = (f" ({first / timings['one at a time, cached'][0]:.1f}x from the cache alone)"
                   if "one at a time, cached" in timings else "")
    print(f"batched and cached is {first / timings['batched, cached'][0]:.1f}x faster per agent turn than one at "
          f"a time reading each prompt whole{cache_alone}; wall time; 'waited' is what one conversation's "
          "customer waited per turn")
    same = sum(a == b for a, b in zip(texts["one at a time"], texts["batched, cached"]))
    print(f"transcripts identical to one at a time: {same} of {args.n} (a padded batch computes in another "
          "order, so a greedy choice between two near-equal tokens can differ)")


def decode_step(agent, rows: int, context: int, steps: int = 24) -> None:
    """Milliseconds per greedy decode step, reserved cache against concatenation, twice each (interleaved)."""
    import torch
    from transformers import DynamicCache

    from subterra.agent import reserve

    model = agent.model
    prompt = torch.randint(100, model.config.vocab_size - 100, (rows, context), generator=torch.Generator().manual_seed(0))
    written = {}
    print(f"\none decode step, {rows} rows after {context} tokens of context ({steps} steps timed):")
    for kind in ("concatenated", "reserved") * 2:
        past = DynamicCache(config=model.config)
        if kind == "reserved":
            reserve(past, context + steps + 1)
        mask = torch.ones(rows, context, dtype=torch.long)
        with torch.no_grad():
            token = model(input_ids=prompt, attention_mask=mask, cache=past, use_cache=True,
                          logits_to_keep=1).logits[:, -1].argmax(-1)[:, None]
            tokens, start = [], time.perf_counter()
            for step in range(steps):
                mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
                token = model(input_ids=token, attention_mask=mask, position_ids=torch.full((rows, 1), context + step),
                              cache=past, use_cache=True, logits_to_keep=1).logits[:, -1].argmax(-1)[:, None]
                tokens.append(token)
            seconds = (time.perf_counter() - start) / steps
        written.setdefault(kind, torch.cat(tokens, dim=1))
        print(f"  {kind:<14}{seconds * 1000:>8.0f} ms/step {rows / seconds:>8.0f} tokens/s")
    print(f"  the same tokens: {torch.equal(written['concatenated'], written['reserved'])}")


def main() -> None:
    import datasets
    import transformers

    from subterra import load_domain
    from subterra.agent import Agent
    from subterra.simulation import Subterranean, build_conditions, simulate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="travel")
    parser.add_argument("--n", type=int, default=8, help="scenarios (the same for every run)")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model folder or named base")
    parser.add_argument("--max-turns", type=int, default=16, help="messages per conversation at most")
    parser.add_argument("--skip-conditions", action="store_true", help="only the batching comparison")
    parser.add_argument("--skip-cached-one-at-a-time", action="store_true",
                        help="leave out the middle run (one at a time with the prefix cache): the longest one")
    parser.add_argument("--skip-batching", action="store_true", help="only the per-condition table")
    parser.add_argument("--decode-step", metavar="ROWSxTOKENS",
                        help="only one decode step's time, reserved cache against concatenation (e.g. 32x600)")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()

    agent = Agent(args.model)
    if args.decode_step:
        rows, context = (int(x) for x in args.decode_step.lower().split("x"))
        decode_step(agent, rows, context)
        return
    wf = load_domain(args.domain)
    with tempfile.TemporaryDirectory() as out:
        timings, texts, cache = {}, {}, agent.prefix_cache
        runs = (("one at a time", 1, None), ("one at a time, cached", 1, cache), ("batched, cached", args.n, cache))
        if args.skip_cached_one_at_a_time:
            runs = runs[::2]
        for label, width, prefix_cache in runs if not args.skip_batching else ():
            agent.prefix_cache = prefix_cache
            if prefix_cache is not None:
                prefix_cache.clear()
            start = time.perf_counter()
            rows = simulate(wf, [Subterranean(agent, wf)], Path(out) / label, n=args.n, progress=False,
                            batch_size=width, max_turns=args.max_turns)["subterranean"]
            wall = time.perf_counter() - start
            turns = sum(len(r["turn_seconds"]) for r in rows)
            timings[label] = (wall / max(turns, 1), turns, per_turn(rows)[1])
            texts[label] = [r["messages"] for r in rows]
        if not args.skip_batching:
            report_batching(args, wf, timings, texts)
        if args.skip_conditions:
            return

        names = ["subterranean", "orchestrated", "in_context", "langgraph", "oracle"]
        conditions, skipped = build_conditions(names, wf, args.model)
        for line in skipped:
            print("skipped", line)
        runs = simulate(wf, conditions, Path(out) / "conditions", n=args.n, progress=False,
                        max_turns=args.max_turns)
    print(f"\n{'condition':<14}{'speaker':<58}{'prompt tok/turn':>16}{'$/conversation':>16}")
    dollars = {}
    for condition in conditions:
        rows = runs[condition.name]
        tokens = statistics.mean(p for r in rows for p in r["prompt_tokens"]) if rows else float("nan")
        dollars[condition.name] = statistics.mean(r["dollars"] for r in rows)
        print(f"{condition.name:<14}{condition.label[:56]:<58}{tokens:>16,.0f}{dollars[condition.name]:>16.6f}")
    if dollars.get("subterranean") and "in_context" in dollars:
        paper = PAPER_RATIO.get(wf.name)
        print(f"in-context / compiled, per conversation: {dollars['in_context'] / dollars['subterranean']:,.0f}x"
              + (f" (the paper: {paper}x)" if paper else ""))


if __name__ == "__main__":
    main()
