"""The seconds a lone customer waits, replayed from a recorded run's token counts.

A record in ``data/results/`` holds, for every agent turn, how many tokens its prompt had and how many the reply
took. A compiled model has its base's shapes, so what one customer waits for a conversation depends on those
lengths and the machine, not on what the weights learnt. This script runs the compiled condition as the
simulation does (its one-line prompt, the agent's chat template, prefix cache and greedy decoding, one customer
at a time) on the base (``--model``, default the SmolLM2 base every full setting compiled), each step computed
in full and then answered with the recorded reply's next token, and prints seconds per conversation and per
agent turn, as the condition itself times them. It is how a compile
that is no longer on disk is timed from its record; ``--record zoom/lone/subterranean`` checks the method
against a lone run that was measured (its turns' own seconds are printed beside).

    python benchmarks/bench_lone_wait.py [--record insurance/subterranean] [--n 16] [--model smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics

import torch


def load(record: str, n: int) -> list[dict]:
    from subterra.workflow import data_dir

    path = data_dir() / "results" / f"{record}.transcripts.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    order = {s: i for i, s in enumerate(sorted({r["scenario_id"] for r in rows}))}
    return sorted((r for r in rows if not r.get("error")), key=lambda r: order[r["scenario_id"]])[:n]


class Forced(torch.nn.Module):
    """A causal LM that computes every step as usual and then answers with the next recorded token: the agent
    around it runs its own path (chat template, prefix cache, guard, stop) and spends what the compiled
    model would, and writes the recorded reply."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config, self.generation_config = inner, inner.config, inner.generation_config
        self.queue: list[int] = []

    def forward(self, *args, logits_to_keep=None, **kwargs):
        out = self.inner(*args, logits_to_keep=logits_to_keep, **kwargs)
        if self.queue:
            out.logits[:, -1, :] = float("-inf")
            out.logits[:, -1, self.queue.pop(0)] = 0.0
        return out


def replay(condition, forced, row: dict) -> tuple[list[float], int]:
    """Seconds per agent turn for one recorded conversation, the condition answering with the recorded words,
    and how many of its replies came out as recorded (all of them, or the seconds are for other lengths)."""
    tokenizer, stop = condition.agent.tokenizer, condition.agent.stop_ids[0]
    condition.reset(None)
    seconds, same = [], 0
    messages = [m for m in row["messages"] if m["role"] in ("user", "assistant")]
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            forced.queue = tokenizer(message["content"], add_special_tokens=False)["input_ids"] + [stop]
            turn = condition.respond(messages[:i])
            seconds.append(turn.seconds)
            same += turn.text == message["content"].strip()
    return seconds, same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", default="insurance/subterranean",
                        help="data/results/<this>.transcripts.jsonl.gz (default: insurance/subterranean)")
    parser.add_argument("--n", type=int, default=16, help="conversations, the first by scenario (default 16)")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a base name or model folder")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from subterra.agent import Agent
    from subterra.bases import resolve_base
    from subterra.conditions import Subterranean
    from subterra.workflow import load_domain

    source = resolve_base(args.model)
    forced = Forced(AutoModelForCausalLM.from_pretrained(source).eval())
    agent = Agent.from_model(forced, AutoTokenizer.from_pretrained(source), cache_gib=4.0)
    condition = Subterranean(agent, load_domain(args.record.split("/")[0]))
    rows = load(args.record, args.n)
    replay(condition, forced, {**rows[0], "messages": rows[0]["messages"][:2]})        # warm up: the greeting
    replayed, recorded, same = [], [], 0
    for row in rows:
        seconds, alike = replay(condition, forced, row)
        replayed.append(seconds)
        recorded.append(row.get("turn_seconds") or [])
        same += alike
    turns = sum(len(s) for s in replayed)
    per_conversation = [sum(s) for s in replayed]
    print(f"{args.record}: {len(rows)} conversations, {turns} agent turns, {args.model} "
          f"({torch.get_num_threads()} threads)")
    print(f"replayed one customer at a time: {statistics.mean(per_conversation):.1f} s a conversation "
          f"(median {statistics.median(per_conversation):.1f}), {sum(per_conversation) / turns:.2f} s an agent turn; "
          f"{same} of {turns} replies as recorded")
    if all(recorded):
        total = [sum(s) for s in recorded]
        print(f"the record's own turn seconds: {statistics.mean(total):.1f} s a conversation, "
              f"{sum(total) / turns:.2f} s an agent turn (batched runs wait on their batch: compare lone records)")


if __name__ == "__main__":
    main()
