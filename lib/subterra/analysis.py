"""Analysis: the paper's tables regenerated from our own transcripts and scores.

- :func:`score_table` — Table 1's top: mean of each criterion per condition, and failure rates;
- :func:`comparison_table` — Table 1's comparisons: differences, Wilcoxon p (Holm-corrected across the
  family), stars, paired Cohen's d_z and 95% bootstrap CIs (see :mod:`subterra.stats`);
- :func:`cost_table` — Table 6: tokens, dollars and seconds per conversation, and the break-even number of
  conversations for the one-time compile cost;
- :func:`compile_cost` — the one-time cost of compiling: the teacher's bill and the training hours;
- :func:`write_results` — ``results.json`` and ``scores.csv`` for machines;
- :func:`full_setting_table` — Table 1 across the domains, judged now from the recorded full settings
  (``data/results/<domain>/``);
- :func:`full_cost_table` — Table 6 across the domains: every condition priced on the oracle's recorded
  conversations (:func:`priced_conversations`), with the lone customer's seconds;
- :func:`compile_runs` — a compile's learning curve, or its other training seeds, judged on the same scenarios;
- :func:`loop_table` — per loop of the workflow, whether each condition leaves it at the right time;
- plots with seaborn.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import yaml

from .backends.base import DEFAULT_MODELS, Backend, Completion, Request, Usage
from .judge import CRITERIA, FAILURE_THRESHOLD, TITLES
from .stats import compare_conditions, failure_rate, mcnemar_exact
from .workflow import data_dir, load_domain

ORDER = ("subterranean", "orchestrated", "langgraph", "in_context", "oracle")


def paper_results() -> dict:
    """The paper's published numbers, with their source (``data/paper_results.yaml``)."""
    return yaml.safe_load((data_dir() / "paper_results.yaml").read_text())


def _ordered(conditions) -> list[str]:
    return sorted(conditions, key=lambda c: (ORDER.index(c) if c in ORDER else len(ORDER), c))


def score_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean of each criterion and the failure rate (Task Success <= 3) per condition; errors excluded. Where the
    judge counted catalogue facts (the offline judge), ``product_knowledge``: the share of the facts stated that
    are the right record's (NaN where none were stated: travel has no catalogue)."""
    ok = scores[scores["error"].isna()] if "error" in scores else scores
    table = ok.groupby("condition")[list(CRITERIA)].mean()
    table["failure_rate"] = ok.groupby("condition")["task_success"].apply(
        lambda s: failure_rate(s, FAILURE_THRESHOLD))
    if "facts_stated" in ok:                 # the offline judge's product knowledge: right facts / facts stated
        facts = ok.groupby("condition")[["facts_stated", "facts_right"]].sum(min_count=1)
        table["product_knowledge"] = (facts["facts_right"] / facts["facts_stated"].where(facts["facts_stated"] > 0))
    table["n"] = ok.groupby("condition").size()
    table["errors"] = scores.groupby("condition").size() - table["n"]
    return table.loc[_ordered(table.index)].rename(columns=TITLES)


def _compare(ok: pd.DataFrame, conditions: list[str], n_resamples: int) -> pd.DataFrame:
    """Every pair of conditions, paired by scenario. Pairs are the scenarios both conditions ran (a slow
    condition may run the first few only) and, for Graceful Handling, both scored; ``n`` says how many."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="compare_conditions dropped", category=UserWarning)
        return compare_conditions(ok[["condition", "scenario_id", *CRITERIA]], criteria=list(CRITERIA),
                                  conditions=conditions, paired=True, n_resamples=n_resamples,
                                  sparse=CRITERIA)


def comparison_table(scores: pd.DataFrame, reference: str = "subterranean", n_resamples: int = 10_000) -> pd.DataFrame:
    """Paired comparisons of ``reference`` against every other condition, per criterion."""
    ok = scores[scores["error"].isna()] if "error" in scores else scores
    conditions = _ordered(ok["condition"].unique())
    table = _compare(ok, conditions, n_resamples)
    mine = table[(table["condition_a"] == reference) | (table["condition_b"] == reference)].copy()
    flip = mine["condition_b"] == reference           # always report reference minus the other
    for col in ("difference", "d", "ci_low", "ci_high"):
        mine.loc[flip, col] = -mine.loc[flip, col]
    mine.loc[flip, ["ci_low", "ci_high"]] = mine.loc[flip, ["ci_high", "ci_low"]].values
    mine.loc[flip, ["mean_a", "mean_b"]] = mine.loc[flip, ["mean_b", "mean_a"]].values
    mine["other"] = mine["condition_a"].where(flip, mine["condition_b"])
    mine["criterion"] = mine["criterion"].map(TITLES)
    return mine[["criterion", "other", "mean_a", "mean_b", "difference", "p", "p_holm", "stars", "d",
                 "ci_low", "ci_high", "n"]].rename(columns={"mean_a": reference, "mean_b": "other mean"})


def transcript_frame(transcripts: Mapping[str, list[dict]]) -> pd.DataFrame:
    """One row per conversation: tokens, dollars, seconds and turns."""
    rows = []
    for condition, items in transcripts.items():
        for t in items:
            turns = len(t["turn_seconds"])
            rows.append({"condition": condition, "scenario_id": t["scenario_id"], "agent_turns": turns,
                         "prompt_tokens": sum(t["prompt_tokens"]), "completion_tokens": sum(t["completion_tokens"]),
                         "prompt_tokens_per_turn": sum(t["prompt_tokens"]) / turns if turns else math.nan,
                         "seconds": sum(t["turn_seconds"]),
                         "seconds_per_turn": sum(t["turn_seconds"]) / turns if turns else math.nan,
                         "dollars": t["dollars"], "stop_reason": t["stop_reason"], "valid_path": t["valid_path"],
                         "right_ending": t["right_ending"]})
    return pd.DataFrame(rows)


def cost_table(transcripts: Mapping[str, list[dict]], compile_dollars: float,
               reference: str = "subterranean") -> pd.DataFrame:
    """Table 6: per-conversation tokens, dollars and seconds, and the break-even conversation count.

    Break-even for a condition = ``compile_dollars`` / (its dollars per conversation − the compiled
    model's): after that many conversations, compiling once has paid for itself.
    """
    frame = transcript_frame(transcripts)
    table = frame.groupby("condition").agg(
        conversations=("scenario_id", "size"), agent_turns=("agent_turns", "mean"),
        prompt_tokens=("prompt_tokens", "mean"), completion_tokens=("completion_tokens", "mean"),
        prompt_tokens_per_turn=("prompt_tokens_per_turn", "mean"), dollars=("dollars", "mean"),
        seconds=("seconds", "mean"), seconds_per_turn=("seconds_per_turn", "mean"),
        procedure_adherence=("valid_path", "mean"), right_ending=("right_ending", "mean"))
    table = table.loc[_ordered(table.index)]
    if reference in table.index:
        ours = table.loc[reference, "dollars"]
        saving = table["dollars"] - ours
        table["cost_ratio"] = table["dollars"] / ours if ours > 0 else math.nan
        table["break_even_conversations"] = [compile_dollars / s if s > 0 else math.nan for s in saving]
    return table


GPU_DOLLARS_PER_HOUR = 2.50     # the paper's A100 price, also used for the self-hosted model's tokens

PRICED_CONDITIONS = ("subterranean", "langgraph", "in_context")


class _Recorded(Backend):
    """The words a recorded conversation has next, given to whatever asks for the agent's turn: the speaker of
    a small-model condition (``reply_batch``) or the backend of a frontier one (``complete``; the LangGraph
    router gets ``route``). Each request to the backend is counted with ``tokenizer``, as the offline stand-in
    counts it; ``calls`` counts the model calls."""

    name = "recorded"

    def __init__(self, tokenizer, priced_as: str):
        super().__init__("recorded")
        self.tokenizer, self.priced_as = tokenizer, priced_as
        self.text, self.route, self.calls = "", "1", 0
        specials = sorted(tokenizer.all_special_tokens, key=len, reverse=True)
        self._special = re.compile("(" + "|".join(map(re.escape, specials)) + ")")
        self._pieces: dict[str, int] = {}

    def reply_batch(self, chats: list[list[dict]], batch_size: int | None = None) -> list[str]:
        self.calls += len(chats)
        return [self.text] * len(chats)

    def count(self, chat: list[dict], reply: str) -> tuple[int, int]:
        """:func:`subterra.agent.count_tokens`, fast on long prompts that repeat: the templated text is cut at the
        tokenizer's special tokens, which it never merges with their neighbours, and each piece is tokenized
        once (a frontier condition sends the same system prompt every turn)."""
        text = self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        pieces = self._special.split(text)
        prompt = sum(1 if i % 2 else self._piece(piece) for i, piece in enumerate(pieces) if piece)
        return prompt, self._piece(reply) + 1

    def _piece(self, text: str) -> int:
        if text not in self._pieces:
            self._pieces[text] = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._pieces[text]

    def complete(self, request: Request) -> Completion:
        self.calls += 1
        text = self.route if request.tag == "langgraph-router" else self.text
        system = [{"role": "system", "content": request.system}] if request.system else []
        prompt, completion = self.count(system + list(request.messages), text)
        return Completion(text, Usage(input_tokens=prompt, output_tokens=completion), model=self.model,
                          backend=self.name, priced_as=self.priced_as)


def _base_tokenizer():
    """The default base's tokenizer (SmolLM2's), which the offline stand-in counts tokens with."""
    from transformers import AutoTokenizer

    from .bases import DEFAULT_BASE, resolve_base

    return AutoTokenizer.from_pretrained(resolve_base(DEFAULT_BASE, quiet=True))


def priced_conversations(workflow, transcripts: list[dict], conditions: Sequence[str] = PRICED_CONDITIONS,
                         frontier: str = DEFAULT_MODELS["anthropic"], tokenizer=None) -> pd.DataFrame:
    """What each condition's requests would carry and cost over the same conversations: ``transcripts`` (the
    oracle's, which follow the procedure to its end) replayed turn by turn through each condition's own prompt
    building, its model answering with the recorded words (the LangGraph router with the recorded step). One
    row per condition and conversation: agent turns, model calls, prompt and completion tokens, dollars (the
    frontier conditions at ``frontier``'s list prices, the compiled model at the self-hosted rate), and for a
    condition with a controller (LangGraph) the share of turns its router put at the recorded step.

    This prices the conversation a working agent has. A frontier condition run offline has a 135M stand-in
    behind it, whose conversations go wrong and end early or late: their token counts say little of what the
    frontier model's would be. ``tokenizer``: SmolLM2's (the default base's) when not given."""
    from .conditions import InContext, Subterranean

    recorded = _Recorded(tokenizer or _base_tokenizer(), frontier)
    rows = []
    for name in conditions:
        if name == "subterranean":
            condition = Subterranean(recorded, workflow)
        elif name == "in_context":
            condition = InContext(workflow, recorded)
        elif name == "langgraph":
            from .langgraph_agent import LangGraphCondition

            condition = LangGraphCondition(workflow, recorded)
        else:
            raise ValueError(f"no condition {name!r} to price: {', '.join(PRICED_CONDITIONS)}")
        for t in transcripts:
            condition.reset(None)
            recorded.calls, turns, steps = 0, [], []
            for i, message in enumerate(t["messages"]):
                if message["role"] != "assistant":
                    continue
                history, recorded.text, step = t["messages"][:i], message["content"], t["trace_nodes"][i]
                if name == "langgraph":
                    answered, source = condition.choosing_from(history)
                    targets = [] if answered and source is None else [n for n, _ in condition.options(source)]
                    recorded.route = str(targets.index(step) + 1 if step in targets else 1)
                turns.append(condition.respond(history))
                steps.append(step)
                if name == "langgraph":
                    condition.node = step                 # the recorded step, whatever the router picked
            routed = [x.node == step for x, step in zip(turns, steps) if x.node is not None]
            rows.append({"condition": name, "scenario_id": t["scenario_id"], "agent_turns": len(turns),
                         "calls": recorded.calls, "prompt_tokens": sum(x.prompt_tokens for x in turns),
                         "completion_tokens": sum(x.completion_tokens for x in turns),
                         "dollars": sum(x.dollars for x in turns),
                         "steps_as_recorded": sum(routed) / len(routed) if routed else math.nan})
    return pd.DataFrame(rows)


def persona_table(scores: pd.DataFrame, transcripts: Mapping[str, list[dict]]) -> pd.DataFrame:
    """Per condition and customer persona (its challenge): conversations, failure rate, Task Success and
    Graceful Handling — how each system copes with half answers, asides, corrections and departures."""
    persona = {(name, t["scenario_id"]): json.loads(t["scenario"])["persona"]["challenge"]
               for name, rows in transcripts.items() for t in rows}
    ok = scores[scores["error"].isna()].copy() if "error" in scores else scores.copy()
    ok["persona"] = [persona.get((c, s), "unknown") for c, s in zip(ok["condition"], ok["scenario_id"])]
    grouped = ok.groupby(["condition", "persona"])
    table = pd.DataFrame({"n": grouped.size(),
                          "failure_rate": grouped["task_success"].apply(lambda s: failure_rate(s, FAILURE_THRESHOLD)),
                          TITLES["task_success"]: grouped["task_success"].mean(),
                          TITLES["graceful_handling"]: grouped["graceful_handling"].mean()})
    order = {c: i for i, c in enumerate(_ordered(table.index.get_level_values(0).unique()))}
    return table.sort_index(key=lambda idx: idx.map(order) if idx.name == "condition" else idx)


def compile_cost(workflow, domain_dir: str | Path, teacher_model: str | None = None) -> dict[str, float]:
    """What compiling ``workflow`` cost, once: a frontier teacher's bill plus the training hours.

    The teacher is priced at list prices for the corpus in ``domain_dir/synthesis`` as if
    ``teacher_model`` (default: the anthropic backend's default, Claude Sonnet 5.5; the paper's
    teacher was Claude Sonnet 4.5, ``"claude-sonnet-4-5"``, still priced) had written it (the
    dry-run estimate: our offline teacher is free), and the
    training time recorded in ``domain_dir/model/training.json`` is priced as GPU time at
    ``GPU_DOLLARS_PER_HOUR``. A model trained elsewhere (no record) counts one GPU-hour.
    """
    from .backends import DEFAULT_MODELS
    from .synthesis import estimate, plan_corpus, read_dialogues
    from .training import read_training_record

    teacher_model = teacher_model or DEFAULT_MODELS["anthropic"]
    domain_dir = Path(domain_dir)
    dialogues = domain_dir / "synthesis" / "dialogues.jsonl"
    size = len(read_dialogues(dialogues)) if dialogues.exists() else 0
    teacher = estimate(plan_corpus(workflow, size), teacher_model).dollars if size else 0.0
    record = read_training_record(domain_dir / "model")
    hours = record["train_seconds"] / 3600 if record else 1.0
    return {"dialogues": size, "teacher_dollars": teacher, "train_hours": hours,
            "train_dollars": GPU_DOLLARS_PER_HOUR * hours, "dollars": teacher + GPU_DOLLARS_PER_HOUR * hours}


def results(domain: str, scores: pd.DataFrame, transcripts: Mapping[str, list[dict]], compile_dollars: float,
            n_resamples: int = 10_000) -> dict[str, Any]:
    """The machine-readable summary written to ``outputs/<domain>/results.json``."""
    table = score_table(scores)
    costs = cost_table(transcripts, compile_dollars)
    ok = scores[scores["error"].isna()]
    conditions = _ordered(ok["condition"].unique())
    per_condition = {}
    for condition in conditions:
        per_condition[condition] = {
            "scores": {c: _num(table.loc[condition, TITLES[c]]) for c in CRITERIA},
            "failure_rate": _num(table.loc[condition, "failure_rate"]),
            "judged": int(table.loc[condition, "n"]), "errors": int(table.loc[condition, "errors"]),
            "prompt_tokens_per_agent_turn": _num(costs.loc[condition, "prompt_tokens_per_turn"]),
            "seconds_per_turn": _num(costs.loc[condition, "seconds_per_turn"]),
            "dollars_per_conversation": _num(costs.loc[condition, "dollars"]),
            "procedure_adherence": _num(costs.loc[condition, "procedure_adherence"]),
        }
        if "product_knowledge" in table:
            per_condition[condition]["product_knowledge"] = _num(table.loc[condition, "product_knowledge"])
    comparisons = []
    if len(conditions) > 1:
        family = _compare(ok, conditions, n_resamples)
        comparisons = [{"criterion": r.criterion, "conditions": [r.condition_a, r.condition_b], "p": _num(r.p),
                        "p_holm": _num(r.p_holm), "d": _num(r.d), "difference": _num(r.difference)}
                       for r in family.itertuples()]
    by_persona: dict[str, dict] = {}
    for (condition, persona), row in persona_table(scores, transcripts).iterrows():
        by_persona.setdefault(condition, {})[persona] = {
            "n": int(row["n"]), "failure_rate": _num(row["failure_rate"]),
            "task_success": _num(row[TITLES["task_success"]]),
            "graceful_handling": _num(row[TITLES["graceful_handling"]])}
    summary = {"domain": domain, "judge": sorted(scores["judge"].unique().tolist()),
               "compile_dollars": compile_dollars, "conditions": per_condition, "comparisons": comparisons,
               "by_persona": by_persona}
    if "oracle" in per_condition:          # the harness's own error: what a perfect agent loses
        summary["calibration"] = {"condition": "oracle", **per_condition["oracle"]}
    return summary


def _num(x) -> float | None:
    """A JSON number, or null where there is none (NaN; an infinite d when every paired difference is equal)."""
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


def write_results(out_dir: str | Path, domain: str, scores: pd.DataFrame, transcripts: Mapping[str, list[dict]],
                  compile_dollars: float, n_resamples: int = 10_000) -> tuple[Path, Path]:
    """Write ``results.json`` and ``scores.csv`` (one row per condition and scenario) into ``out_dir``."""
    from .store import write_atomic

    out_dir = Path(out_dir)
    summary = results(domain, scores, transcripts, compile_dollars, n_resamples)
    write_atomic(out_dir / "results.json", json.dumps(summary, indent=2, allow_nan=False))
    columns = ["condition", "scenario_id", *CRITERIA, "failure", "challenged", "judge", "error"]
    columns += [c for c in ("facts_stated", "facts_right") if c in scores]
    write_atomic(out_dir / "scores.csv", scores[columns].to_csv(index=False))
    return out_dir / "results.json", out_dir / "scores.csv"


def recorded_runs(domain: str, part: str = "") -> dict[str, list[dict]]:
    """The full setting's recorded transcripts, by condition: ``data/results/<domain>/<condition>.transcripts.jsonl.gz``
    (runs longer than a sitting, kept with how they were made in that folder's README). ``part``: a subfolder,
    e.g. ``lone`` (one conversation at a time: the seconds a lone customer waits)."""
    import gzip

    runs = {}
    for record in sorted((data_dir() / "results" / domain / part).glob("*.transcripts.jsonl.gz")):
        with gzip.open(record, "rt", encoding="utf-8") as f:
            runs[record.name.split(".")[0]] = [json.loads(line) for line in f]
    return {name: runs[name] for name in _ordered(runs)}


def judge_recorded(domain: str, runs: dict[str, list[dict]] | None = None, workflow=None
                   ) -> tuple[pd.DataFrame, dict[str, list[dict]]]:
    """The recorded full setting of ``domain`` (``runs``: :func:`recorded_runs`, read here when not given) judged
    now by the offline judge: (scores, transcripts). ``workflow``: the one the runs were made on, where it is
    not a shipped domain (a workflow written for the tests)."""
    from .judge import OfflineJudge, judge_transcripts, scores_frame

    runs = recorded_runs(domain) if runs is None else runs
    judge = OfflineJudge(workflow or load_domain(domain))
    scores = scores_frame(judge_transcripts([t for rows in runs.values() for t in rows], judge, progress=False))
    scores["error"] = scores["error"].where(scores["error"].notna(), None)
    return scores, runs


def compile_runs(domain: str, part: str, label: str) -> pd.DataFrame:
    """The recorded compiles in ``data/results/<domain>/<part>/`` beside the domain's own compiled run, judged now
    by the offline judge on the scenarios all of them ran. ``part``: ``curve`` (the same compile's earlier
    checkpoints: ``step-100``, ``step-200``) or ``seeds`` (the same recipe and budget from other training seeds:
    ``seed-1``, ``seed-2``); ``label`` names the domain's own run in that series (``step-300``, ``seed-0``).

    The scores' ``condition`` is the run: :func:`score_table` gives a row per run (failure rate, Task Success,
    product knowledge), and ``scores.pivot(index="scenario_id", columns="condition", values="failure")`` which
    scenarios fail in which run."""
    runs, own = recorded_runs(domain, part), recorded_runs(domain).get("subterranean")
    if not runs or not own:
        raise FileNotFoundError(f"data/results/{domain}/{part}: no recorded compiles there"
                                if not runs else f"data/results/{domain}: no subterranean record to set beside {part}")
    runs = {label: own, **runs}
    shared = set.intersection(*({t["scenario_id"] for t in rows} for rows in runs.values()))
    runs = {name: [dict(t, condition=name) for t in rows if t["scenario_id"] in shared] for name, rows in runs.items()}
    scores, _ = judge_recorded(domain, runs)
    return scores


FULL_SETTING_DOMAINS = ("travel", "zoom", "insurance", "insurance_tools")


def full_setting_table(domains=FULL_SETTING_DOMAINS, reference: str = "subterranean",
                       baseline: str = "orchestrated", n_resamples: int = 2000) -> pd.DataFrame:
    """Table 1 across the domains with a recorded full setting, judged now: per domain and condition the
    conversations, failure rate (with the paper's beside it), Task Success, product knowledge, and Task
    Success against ``baseline`` paired on the scenarios both ran (difference, Holm-corrected p over the
    domain's whole family of comparisons, d_z). A workflow that draws another's scenarios (``insurance_tools``:
    insurance with its policy look-up) gets that domain's published numbers."""
    paper = paper_results()
    rows = []
    for domain in domains:
        runs = recorded_runs(domain)
        if not runs:
            continue
        published = paper.get(load_domain(domain).family, {})
        scores, _ = judge_recorded(domain, runs)
        table = score_table(scores)
        compared = comparison_table(scores, reference, n_resamples) if len(table) > 1 else None
        for condition in table.index:
            row = {"domain": domain, "condition": condition, "n": int(table.loc[condition, "n"]),
                   "failure_rate": table.loc[condition, "failure_rate"],
                   "paper_failure_rate": published.get("failure_rate", {}).get(condition, math.nan),
                   "task_success": table.loc[condition, TITLES["task_success"]],
                   "product_knowledge": table.loc[condition, "product_knowledge"]
                   if "product_knowledge" in table else math.nan}
            if compared is not None and condition == reference:
                hit = compared[(compared["criterion"] == TITLES["task_success"]) & (compared["other"] == baseline)]
                if len(hit):
                    row.update({f"vs_{baseline}": hit["difference"].iloc[0], "p_holm": hit["p_holm"].iloc[0],
                                "d": hit["d"].iloc[0], "pairs": int(hit["n"].iloc[0])})
            rows.append(row)
    return pd.DataFrame(rows).set_index(["domain", "condition"])


def full_cost_table(domains=FULL_SETTING_DOMAINS, reference: str = "subterranean", conversations: int | None = None,
                    tokenizer=None) -> pd.DataFrame:
    """Table 6 across the domains with a recorded full setting, every condition priced on the same conversations:
    the oracle's recorded ones (the procedure followed to its end), or their first ``conversations``, replayed
    through each condition's own prompts (:func:`priced_conversations`). Per domain and condition: agent turns,
    model calls, mean prompt and completion tokens, dollars per conversation (``dollars_se``: its standard
    error) and the ratio to the compiled model's, with the paper's beside them; ``own_dollars``, what the
    condition's own recorded conversations cost where there is a record (the compiled model's differ from the
    oracle's where it errs); and the seconds a lone customer waits, from the ``lone`` records (one conversation
    at a time; NaN where there are none).

    Dollars are token counts at list prices: the frontier conditions at the frontier model's, the compiled model
    at a self-hosted GPU's (``prices_per_million_tokens`` in ``data/paper_results.yaml``). A ratio therefore
    depends on how many turns a conversation takes, how many calls a turn makes and how many tokens each call's
    prompt carries, not on who wrote the words."""
    paper = paper_results()
    tokenizer = tokenizer or _base_tokenizer()                     # once, not once a domain
    rows = []
    for domain in domains:
        runs = recorded_runs(domain)
        if "oracle" not in runs:
            continue
        workflow = load_domain(domain)
        priced = priced_conversations(workflow, runs["oracle"][:conversations], tokenizer=tokenizer)
        table = priced.groupby("condition").agg(
            conversations=("scenario_id", "size"), agent_turns=("agent_turns", "mean"), calls=("calls", "mean"),
            prompt_tokens=("prompt_tokens", "mean"), completion_tokens=("completion_tokens", "mean"),
            dollars=("dollars", "mean"), dollars_se=("dollars", "sem"))
        table = table.loc[_ordered(table.index)]
        own = transcript_frame(runs).groupby("condition")["dollars"].mean()
        lone = transcript_frame(recorded_runs(domain, "lone"))
        seconds = lone.groupby("condition")["seconds"].mean() if len(lone) else pd.Series(dtype=float)
        paper_domain = paper.get(workflow.family, {})
        published = paper_domain.get("dollars_per_conversation", {})
        paper_seconds = paper_domain.get("seconds_per_conversation", {})
        for condition, row in table.iterrows():
            rows.append({"domain": domain, "condition": condition, **row.to_dict(),
                         "cost_ratio": row["dollars"] / table.loc[reference, "dollars"],
                         "paper_dollars": published.get(condition, math.nan),
                         "paper_cost_ratio": (published[condition] / published[reference]
                                              if condition in published and reference in published else math.nan),
                         "own_dollars": own.get(condition, math.nan),
                         "lone_seconds": seconds.get(condition, math.nan),
                         "lone_conversations": int((lone["condition"] == condition).sum()) if len(lone) else 0,
                         "paper_seconds": paper_seconds.get(condition, math.nan)})
    table = pd.DataFrame(rows).set_index(["domain", "condition"])
    return table.astype({"conversations": int})


LOOP_OUTCOMES = ("right", "left early", "went round again", "left the wrong way", "ended inside", "never reached")


def loop_outcome(run: "LoopRun", expected: "LoopRun") -> str:
    """How a conversation's way through a loop compares with the expected one (the reference condition's on the
    same scenario): the same rounds and the same way out is ``right``."""
    if run.rounds == 0:
        return "never reached"
    if run.rounds != expected.rounds:
        return "left early" if run.rounds < expected.rounds else "went round again"
    if run.exit == expected.exit:
        return "right"
    return "ended inside" if run.exit is None else "left the wrong way"


def loop_table(workflow, transcripts: Mapping[str, list[dict]], reference: str = "oracle") -> pd.DataFrame:
    """Per loop and condition: does the agent leave each loop at the right time? A loop (its back edge, e.g.
    insurance's item loop ``another_item -> ask_item``) is judged on the scenarios whose ``reference`` conversation
    (the oracle: the controller speaking the workflow's own sentences, the same customer) went through it; the
    share of those conversations per outcome (:data:`LOOP_OUTCOMES`: ``right`` takes as many rounds as the
    reference and leaves the same way; ``left early`` takes fewer, ``went round again`` more; ``never reached``
    went elsewhere before the loop). Walks are the recorded traces (``trace_nodes``)."""
    from .conformance import loop_runs, loops

    expected = {t["scenario_id"]: loop_runs(workflow, t["trace_nodes"]) for t in transcripts.get(reference, [])}
    walked = {condition: [(loop_runs(workflow, t["trace_nodes"]), expected[t["scenario_id"]])
                          for t in transcripts[condition] if t["scenario_id"] in expected and not t.get("error")]
              for condition in _ordered(transcripts)}
    rows = []
    for edge in loops(workflow):
        for condition, pairs in walked.items():
            outcomes = [loop_outcome(runs[edge], wanted[edge]) for runs, wanted in pairs if wanted[edge].rounds]
            if not outcomes:
                continue
            row = {"loop": f"{edge[0]} -> {edge[1]}", "condition": condition, "conversations": len(outcomes)}
            row.update({o: outcomes.count(o) / len(outcomes) for o in LOOP_OUTCOMES})
            rows.append(row)
    columns = ["loop", "condition", "conversations", *LOOP_OUTCOMES]
    return pd.DataFrame(rows, columns=columns).set_index(["loop", "condition"])


def _stated_lookups(workflow, transcripts: list[dict]):
    """Each agent turn of ``transcripts`` that states a value only the business knows: (the scenario's values,
    the look-ups stated, what the tools had returned before that turn). Conversations that ended in an error
    are skipped."""
    from .conformance import extract_values, lookups, node_names
    from .tools import answers_before

    business = lookups(workflow)
    for t in transcripts:
        if t.get("error"):
            continue
        values = json.loads(t["scenario"])["values"]
        said, returned = answers_before(t["messages"])
        for message, node, answers in zip(said, t["trace_nodes"], returned):
            if message["role"] != "assistant":
                continue
            names = node_names(workflow, node) if node else None
            stated = {k: v for k, v in extract_values(workflow, message["content"], names).items() if k in business}
            if stated:
                yield values, stated, answers


def lookup_table(workflow, transcripts: Mapping[str, list[dict]]) -> pd.DataFrame:
    """Per condition: the agent's turns that state a value only the business knows (a flight, its price, a
    booking reference: :func:`~subterra.conformance.lookups`), and the share that state it as the business has it:
    what the tool returned before that turn where one did, else the scenario's value (which a tool would return).
    A compiled model without tools can only invent these; with tools it can copy them. ``before a call``: turns
    that state a value a tool returns before any call returned it."""
    from .conformance import spoken

    returned_names = workflow.returned()
    rows = []
    for condition in _ordered(transcripts):
        turns = right = early = 0
        for values, stated, answers in _stated_lookups(workflow, transcripts[condition]):
            turns += 1
            right += all(spoken(v) == spoken(answers.get(k, values.get(k))) for k, v in stated.items())
            early += any(k in returned_names and k not in answers for k in stated)
        row = {"condition": condition, "turns": turns, "stated as the business has it": right / turns if turns else math.nan}
        if workflow.tools:
            row["before a call"] = early / turns if turns else math.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("condition")


def budget_table(workflow, transcripts: Mapping[str, list[dict]], value: str = "price",
                 limit: str = "budget") -> pd.DataFrame:
    """Per condition: the agent's offers (turns that state the look-up ``value``) and the share on the same side
    of the customer's ``limit`` as the business's value: an offer within budget exactly when the flight found is.
    The customer's next step turns on that comparison (travel: over budget, they leave), so an invented price on
    the wrong side makes the customer's answer to the offer a non sequitur."""
    rows = []
    for condition in _ordered(transcripts):
        offers = right = 0
        for values, stated, answers in _stated_lookups(workflow, transcripts[condition]):
            if value not in stated or limit not in values:
                continue
            business = answers.get(value, values.get(value))
            try:
                said, real, most = float(stated[value]), float(business), float(values[limit])
            except (TypeError, ValueError):
                continue
            offers += 1
            right += (said <= most) == (real <= most)
        rows.append({"condition": condition, "offers": offers,
                     "on the budget's right side": right / offers if offers else math.nan})
    return pd.DataFrame(rows).set_index("condition")


def _branching(t: dict, nodes: list) -> list:
    """A conversation's steps as branches go: where the customer left, the agent's last turn is a goodbye to them,
    not a branch."""
    return nodes[:-1] if t["stop_reason"] == "gave_up" and t["messages"][-1]["role"] == "assistant" else nodes


def _passes(plan: Sequence[str], nodes: Sequence[str], hub: str) -> list[tuple[int, str, str]]:
    """A conversation's passes of ``hub`` against its path's, as ``(position, step taken, step wanted)``. A pass
    that took the path's step uses up the path's pass; one that took another step does not, so the next pass
    is held to the same step (a customer asked again after a wrong turn still wants what they wanted). Passes
    beyond the path's are left out: the conversation has left its path by then."""
    wanted = [plan[k + 1] for k in range(len(plan) - 1) if plan[k] == hub]
    out, j = [], 0
    for k in range(len(nodes) - 1):
        if nodes[k] == hub and j < len(wanted):
            out.append((k, nodes[k + 1], wanted[j]))
            j += nodes[k + 1] == wanted[j]
    return out


def branch_table(workflow, transcripts: Mapping[str, list[dict]], hubs: str | Sequence[str]) -> pd.DataFrame:
    """Per condition: after the customer's step at one of ``hubs`` (travel's ``confirm_booking``: the card;
    insurance's three policy hubs), does the agent take the step the scenario's path takes there (each pass
    against the path's pass it stands for, :func:`_passes`)? With tools the path's step is what the tool's
    answer says (the bank declined, the policy has lapsed); without, nothing in the conversation says it.
    ``visits`` counts each time a conversation passes a hub; ``conversations right``: every visit right.

    A workflow with tools also gets ``on the tools' answers``: the conversations that took one of a hub's
    branches and whose every branch taken at a hub agrees with what the tools had returned before it (the
    branch's condition, where it reads a returned value, holds for the answers; a branch taken before any call
    that returns it does not). That is the decision the tools inform, apart from others made at the same step: a
    branch that also reads what the customer said, or a pass where the agent took none of the hub's branches (a
    customer's correction read as the hub's reply, after which the agent searched again): ``conversations
    right`` counts those, this does not."""
    from .paths import enumerate_paths
    from .tools import answers_before

    hubs = {hubs} if isinstance(hubs, str) else set(hubs)
    unknown = sorted(hubs - set(workflow.nodes))
    if unknown:
        raise ValueError(f"branch_table: {workflow.name} has no node {', '.join(unknown)}")
    paths = {p.id: p for p in enumerate_paths(workflow)}
    returned = workflow.returned()
    reads = {(e.source, e.target): e.check.reading(returned) if e.check is not None else None
             for e in workflow.edges if e.source in hubs}

    def on_answers(hub: str, step: str, known: dict, answers: dict) -> bool:
        part = reads[hub, step]
        try:
            return part is None or part.evaluate({**known, **answers})
        except (KeyError, TypeError):
            return False                                            # decided before a call returned it

    rows = []
    for condition in _ordered(transcripts):
        visits = right = conversations = all_right = agreed = 0
        for t in transcripts[condition]:
            if t.get("error"):
                continue
            plan = paths[t["path_id"]].nodes
            nodes = _branching(t, t["trace_nodes"])
            pairs = sorted(p for hub in hubs for p in _passes(plan, nodes, hub))
            if not pairs:
                continue
            conversations += 1
            visits += len(pairs)
            hits = sum(taken == want for _, taken, want in pairs)
            right += hits
            all_right += hits == len(pairs)
            if returned:
                known = {k: v for k, v in json.loads(t["scenario"])["values"].items() if k not in returned}
                _, before = answers_before(t["messages"])          # a returned value counts once a tool said it
                decided = [(k, taken) for k, taken, _ in pairs if (nodes[k], taken) in reads]
                agreed += bool(decided) and all(on_answers(nodes[k], taken, known, before[k + 1])
                                                for k, taken in decided)
        row = {"condition": condition, "conversations": conversations, "visits": visits,
               "visits right": right / visits if visits else math.nan,
               "conversations right": all_right / conversations if conversations else math.nan}
        if returned:
            row["on the tools' answers"] = agreed / conversations if conversations else math.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("condition")


def fact_table(workflow, transcripts: Mapping[str, list[dict]]) -> pd.DataFrame:
    """Product knowledge per catalogue field: per condition and ``table.field`` that no customer says (an error's
    fix, a policy's limit: :func:`~subterra.conformance.knowledge_fields`), the facts stated (``stated``, once per
    assistant turn and verdict: a turn with the right fix and another's counts twice) and the share of those
    that are the record the scenario is about (``right``), as the offline judge reads them
    (:meth:`~subterra.judge.OfflineJudge.fact_checks`). Where ``product_knowledge`` is one share per condition,
    this says which facts the weights hold."""
    from collections import Counter

    from .judge import OfflineJudge
    from .tools import answers_before

    judge = OfflineJudge(workflow)
    rows = []
    for condition in _ordered(transcripts):
        stated, right = Counter(), Counter()
        for t in transcripts[condition]:
            if t.get("error"):
                continue
            said, _ = answers_before(t["messages"])
            agent = [m["content"] for m in said if m["role"] == "assistant"]
            for (table, name), verdict in judge.fact_checks(json.loads(t["scenario"])["values"], agent):
                if (table, name) in judge.knowledge:
                    stated[f"{table}.{name}"] += 1
                    right[f"{table}.{name}"] += verdict
        rows += [{"condition": condition, "fact": fact, "stated": n, "right": right[fact] / n}
                 for fact, n in sorted(stated.items())]
    return pd.DataFrame(rows, columns=["condition", "fact", "stated", "right"]).set_index(["condition", "fact"])


NO_WRONG_TURN = "(no wrong turn)"


def _wrong_turns(workflow, plan: Sequence[str], nodes: Sequence[str]) -> tuple[list[str], list[tuple[int, str]]]:
    """The hubs of the agent's choosing a conversation passed (once a pass), and its wrong turns as ``(position,
    hub)``: where the agent took another step than the path takes there (:func:`_passes`)."""
    passes, turns = [], []
    for hub in workflow.decision_hubs:
        for k, step, want in _passes(plan, nodes, hub):
            if workflow.nodes[want].role == "agent":          # not the customer's choice
                passes.append(hub)
                if step != want:
                    turns.append((k, hub))
    return passes, turns


def failure_turns(workflow, transcripts: Mapping[str, list[dict]], scores: pd.DataFrame) -> pd.DataFrame:
    """Where the failures come from. Per condition and decision hub where the agent chooses the branch:
    ``passes`` (every time a conversation passed it), ``another branch`` (the share of passes where the agent
    took another step than the scenario's path takes there) and ``failures decided`` (failed conversations
    whose *last* wrong turn was there, the one the ending followed from); the row ``(no wrong turn)`` counts
    the failures that took every branch right and stalled, looped or lost a customer who left.

    A wrong turn is not always a failure: insurance's status hub sends an active policy and one in its
    grace period the same way on, so a guess between them changes what the agent says, not where the claim
    ends. Counting the first wrong turn would put those failures at the status; the last puts them where the
    ending was decided."""
    from collections import Counter

    from .paths import enumerate_paths

    paths = {p.id: p for p in enumerate_paths(workflow)}
    failed = {(c, s) for c, s, f in scores[["condition", "scenario_id", "failure"]].itertuples(index=False) if f}
    rows = []
    for condition in _ordered(transcripts):
        passes, wrong, decided = Counter(), Counter(), Counter()
        for t in transcripts[condition]:
            if t.get("error"):
                continue
            nodes = _branching(t, [n for n in t["trace_nodes"] if n is not None])
            passed, turns = _wrong_turns(workflow, paths[t["path_id"]].nodes, nodes)
            passes.update(passed)
            wrong.update(hub for _, hub in turns)
            if (condition, t["scenario_id"]) in failed:
                decided[max(turns)[1] if turns else NO_WRONG_TURN] += 1
        for hub in [h for h in workflow.decision_hubs if h in passes]:
            rows.append({"condition": condition, "hub": hub, "passes": passes[hub],
                         "another branch": wrong[hub] / passes[hub], "failures decided": decided[hub]})
        rows.append({"condition": condition, "hub": NO_WRONG_TURN, "passes": None, "another branch": math.nan,
                     "failures decided": decided[NO_WRONG_TURN]})
    table = pd.DataFrame(rows).set_index(["condition", "hub"])
    return table.astype({"passes": "Int64"})


def tools_comparison(without: str = "travel", with_tools: str = "travel_tools", condition: str = "subterranean",
                     hubs: str | Sequence[str] | None = None, n_resamples: int = 2000,
                     runs: Mapping[str, Mapping[str, list[dict]]] | None = None) -> pd.DataFrame:
    """The compile without tools beside the compile with them on the same held-out scenarios: ``condition``'s
    records in ``data/results/<without>`` and ``data/results/<with_tools>`` (or ``runs[workflow][condition]``),
    each judged now by its own workflow's offline judge. Per workflow: conversations, failure rate, Task Success
    and Information Accuracy, look-ups stated as the business has them (:func:`lookup_table`), offers on the
    budget's right side (:func:`budget_table`), conversations whose every pass of ``hubs`` took the path's branch
    (:func:`branch_table`; by default every step whose branches read what a tool returns,
    :meth:`~subterra.workflow.Workflow.tool_hubs`: travel's card, insurance's three policy hubs) and, with
    tools, whose every branch there agreed with the tools' answers (``branch_on_tools_answers``). On the
    with-tools row, paired on the scenarios both ran: scenarios only one of them failed with the exact McNemar p
    on those (``failures_p``), and the Task Success difference with its Wilcoxon p (Holm over the five
    criteria)."""
    hubs = load_domain(with_tools).tool_hubs() if hubs is None else hubs
    rows, scored = [], []
    for name in (without, with_tools):
        workflow = load_domain(name)
        mine = {condition: (recorded_runs(name) if runs is None else runs[name])[condition]}
        scores, _ = judge_recorded(name, mine)
        scored.append(scores.assign(condition=name))
        table = score_table(scores).loc[condition]
        branches = branch_table(workflow, mine, hubs)
        rows.append({"workflow": name, "conversations": int(table["n"]), "failure_rate": table["failure_rate"],
                     "task_success": table[TITLES["task_success"]],
                     "information_accuracy": table[TITLES["information_accuracy"]],
                     "lookups_right": lookup_table(workflow, mine).loc[condition, "stated as the business has it"],
                     "offers_on_budget_side": budget_table(workflow, mine).loc[condition, "on the budget's right side"],
                     "branch_right": branches.loc[condition, "conversations right"],
                     "branch_on_tools_answers": branches.loc[condition].get("on the tools' answers", math.nan)})
    both = pd.concat(scored, ignore_index=True)
    ok = both[both["error"].isna()]
    failed = ok.pivot(index="scenario_id", columns="condition", values="failure").dropna().astype(bool)
    compared = comparison_table(both, reference=with_tools, n_resamples=n_resamples)
    success = compared[compared["criterion"] == TITLES["task_success"]].iloc[0]
    only_without = int((failed[without] & ~failed[with_tools]).sum())
    only_with = int((failed[with_tools] & ~failed[without]).sum())
    rows[1].update({"pairs": len(failed), "fails_only_without": only_without, "fails_only_with": only_with,
                    "failures_p": mcnemar_exact(only_with, only_without),
                    "task_success_difference": success["difference"], "p_holm": success["p_holm"]})
    return pd.DataFrame(rows).set_index("workflow")


def beside_paper(table: pd.DataFrame, domain: str) -> pd.DataFrame:
    """Our criterion means next to the paper's for the same domain (where it published them)."""
    published = paper_results().get(domain, {}).get("scores", {})
    rows = []
    for condition in table.index:
        for criterion in CRITERIA:
            rows.append({"condition": condition, "criterion": TITLES[criterion],
                         "ours": round(float(table.loc[condition, TITLES[criterion]]), 2),
                         "paper": published.get(condition, {}).get(criterion)})
    return pd.DataFrame(rows).pivot(index="condition", columns="criterion", values=["ours", "paper"])


# --------------------------------------------------------------------------- plots

def plot_scores(scores: pd.DataFrame, ax=None):
    """Score distribution per criterion and condition."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = scores[scores["error"].isna()].melt(id_vars=["condition"], value_vars=list(CRITERIA),
                                               var_name="criterion", value_name="score")
    long["criterion"] = long["criterion"].map(TITLES)
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4))
    sns.barplot(long, x="criterion", y="score", hue="condition", hue_order=_ordered(long["condition"].unique()),
                errorbar=("ci", 95), ax=ax)
    ax.set(ylim=(1, 5.2), ylabel="mean score (95% CI)", xlabel="", title="Scores per criterion")
    return ax


def plot_paired_differences(scores: pd.DataFrame, reference: str = "subterranean", ax=None):
    """Per-scenario differences (reference minus other) on each criterion."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    ok = scores[scores["error"].isna()]
    wide = ok.pivot_table(index="scenario_id", columns="condition", values=list(CRITERIA), dropna=False)
    rows = []
    for other in _ordered(c for c in ok["condition"].unique() if c != reference):
        for criterion in CRITERIA:
            if (criterion, reference) not in wide or (criterion, other) not in wide:
                continue                  # never scored here (Graceful Handling with no challenge posed)
            diff = (wide[(criterion, reference)] - wide[(criterion, other)]).dropna()
            rows += [{"versus": other, "criterion": TITLES[criterion], "difference": d} for d in diff]
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4))
    if rows:
        sns.stripplot(pd.DataFrame(rows), x="criterion", y="difference", hue="versus", dodge=True, alpha=0.35,
                      jitter=0.25, ax=ax)
    ax.axhline(0, color="black", lw=0.8)
    ax.set(title=f"Paired differences: {reference} minus each other condition", xlabel="")
    return ax


def plot_costs(transcripts: Mapping[str, list[dict]], axes=None):
    """Dollars per conversation (log scale) and seconds per agent turn."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = transcript_frame(transcripts)
    order = _ordered(frame["condition"].unique())
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    sns.barplot(frame, x="condition", y="dollars", order=order, ax=axes[0])
    axes[0].set(yscale="log", ylabel="$ per conversation (log)", title="Cost per conversation")
    sns.boxplot(frame, x="condition", y="seconds_per_turn", order=order, ax=axes[1])
    axes[1].set(ylabel="seconds per agent turn", title="Latency")
    return axes
