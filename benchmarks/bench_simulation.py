"""Simulation benchmark: prompt tokens and seconds per agent turn, per condition, on the insurance domain.

What runs for real, offline:

- ``subterranean`` and ``orchestrated`` with a compiled tiny model (``--model DIR``, else one is trained
  here for a few hundred steps on an offline insurance corpus: enough to talk, not to be good);
- ``in_context`` and ``langgraph`` run their own code (system prompt built from the whole workflow; the
  LangGraph router and node prompts) against a *replay* stand-in for the frontier model that answers with
  the turns of reference conversations. Their prompt tokens are what they would send (counted at ~1.3
  tokens per word); their latency offline is only our own overhead, so it is printed as n/a.

With ``ANTHROPIC_API_KEY`` set, ``--live`` runs the frontier conditions on Claude instead (paid calls;
keep ``--n`` small). Token counts of the small model are its own tokenizer's.

    python benchmarks/bench_simulation.py [--n 20] [--model DIR] [--live]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from subterra.backends import DEFAULT_MODELS, Backend, Completion, Usage, approx_tokens


class Replay(Backend):
    """A frontier stand-in that says what a reference conversation says next (and routes where it went)."""

    name = "replay"

    def __init__(self):
        super().__init__(DEFAULT_MODELS["anthropic"])   # priced as the frontier model it stands in for
        self.reply, self.target, self.options = "", None, []

    async def acomplete(self, request) -> Completion:
        if request.tag == "langgraph-router":
            pick = next((i for i, (node, _) in enumerate(self.options) if node == self.target), 0)
            text = str(pick + 1)
        else:
            text = self.reply
        words = len(request.system.split()) + sum(len(m["content"].split()) for m in request.messages)
        return Completion(text, Usage(approx_tokens(words), approx_tokens(len(text.split()))), self.model, self.name)


def replay(condition, backend: Replay, reference: list[dict], workflow) -> list[dict]:
    """Drive ``condition`` through the reference conversations turn by turn; one row per agent turn."""
    from subterra.scenarios import Scenario

    rows = []
    for transcript in reference:
        condition.reset(Scenario.from_json(transcript["scenario"]))
        messages, nodes = transcript["messages"], transcript["trace_nodes"]
        for k, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            backend.reply, backend.target = message["content"], nodes[k]
            if hasattr(condition, "options"):
                backend.options = condition.options(condition.node)
            turn = condition.respond(messages[:k])
            rows.append({"prompt_tokens": turn.prompt_tokens, "seconds": None, "dollars": turn.dollars})
    return rows


def compiled_model(out: Path, steps: int) -> Path:
    from subterra import load_domain
    from subterra.synthesis import load_corpus, synthesize
    from subterra.training import train

    model = out / "model"
    if not (model / "config.json").exists():
        synthesize(load_domain("insurance"), 600, out / "synthesis", "offline", progress=False)
        result = train(load_corpus(out / "synthesis"), model, "tiny-cpu", max_steps=steps, eval_strategy="steps",
                       eval_steps=steps)
        print(f"compiled a tiny insurance model in {result.train_seconds / 60:.1f} min ({steps} steps)")
    return model


def main() -> None:
    import datasets
    import transformers

    from subterra import load_domain
    from subterra.backends import get_backend
    from subterra.simulation import Orchestrated, build_conditions, simulate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="evaluation scenarios per condition")
    parser.add_argument("--model", help="a compiled insurance model (default: train a tiny one here)")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--live", action="store_true", help="run the frontier conditions on Claude (paid)")
    parser.add_argument("--out", default="outputs/bench/simulation")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()

    wf = load_domain("insurance")
    out = Path(args.out) / wf.name
    model = Path(args.model) if args.model else compiled_model(out, args.train_steps)
    frontier = get_backend("anthropic") if args.live else None
    names = ["subterranean", "orchestrated"] + (["in_context", "langgraph"] if args.live else [])
    conditions, skipped = build_conditions(names, wf, model, frontier)
    for line in skipped:
        print("skipped", line)
    runs = simulate(wf, conditions, out / ("live" if args.live else "offline"), n=args.n, progress=False)
    table = {name: [{"prompt_tokens": p, "seconds": s, "dollars": t["dollars"] / max(len(t["prompt_tokens"]), 1)}
                    for t in rows for p, s in zip(t["prompt_tokens"], t["turn_seconds"])]
             for name, rows in runs.items()}
    if not args.live:      # the frontier conditions on the reference conversations of a scripted orchestrator
        from subterra.langgraph_agent import LangGraphCondition
        from subterra.simulation import InContext

        reference = simulate(wf, [Orchestrated(wf)], out / "reference", n=args.n, progress=False)["orchestrated"]
        backend = Replay()
        table["in_context"] = replay(InContext(wf, backend), backend, reference, wf)
        table["langgraph"] = replay(LangGraphCondition(wf, backend), backend, reference, wf)

    print(f"\ninsurance, {args.n} scenarios per condition ({'live' if args.live else 'offline'}):")
    print(f"{'condition':<14}{'agent turns':>12}{'prompt tokens/turn':>20}{'s/turn':>10}{'$/turn':>12}")
    for name, rows in table.items():
        tokens = statistics.mean(r["prompt_tokens"] for r in rows)
        secs = [r["seconds"] for r in rows if r["seconds"] is not None]
        latency = f"{statistics.mean(secs):.3f}" if secs else "n/a"
        dollars = statistics.mean(r["dollars"] for r in rows)
        print(f"{name:<14}{len(rows):>12}{tokens:>20,.0f}{latency:>10}{dollars:>12.6f}")
    print("tokens: the small model's own tokenizer; frontier conditions ~1.3 tokens/word offline, the API's live")


if __name__ == "__main__":
    main()
