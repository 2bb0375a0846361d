"""Judging: five criteria scored 1–5 by an LLM judge or by the offline graph-aware judge.

The rubric (our own behavioural anchors, following the paper's five criteria):
Task Success, Information Accuracy, Consistency, Graceful Handling, Naturalness. Graceful
Handling is capped at 3 when the customer posed no challenge (nothing to handle), and a
conversation with Task Success ≤ 3 counts as a failure.

- :class:`LLMJudge` asks a backend (Claude Sonnet 5.5 primary, GPT-5.5 as the robustness
  judge; the paper used Claude Sonnet 4.5, retired on 2026-11-30, and GPT-4.1, which shuts down on
  2027-01-14) for a JSON object with a score and a one-sentence reason per criterion, validates it
  against :data:`SCORE_SCHEMA`, retries when it is malformed, and records an error — never a
  silent default — when it stays malformed.
- :class:`OfflineJudge` scores from the conformance trace, the scenario's values and the
  workflow's catalogue by the documented rules in its methods. It is a stand-in that needs no
  key; it measures procedure adherence and value accuracy, not tone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .backends import Backend, Request, Usage
from .simulation import extract_values
from .workflow import Workflow

CRITERIA = ("task_success", "information_accuracy", "consistency", "graceful_handling", "naturalness")
TITLES = {"task_success": "Task Success", "information_accuracy": "Information Accuracy",
          "consistency": "Consistency", "graceful_handling": "Graceful Handling", "naturalness": "Naturalness"}
FAILURE_THRESHOLD = 3      # Task Success <= 3 is a failure
NO_CHALLENGE_CAP = 3       # Graceful Handling when the customer posed no challenge

RUBRIC = {
    "task_success": {
        5: "The customer's request reached the right outcome (done, handed over or closed as the situation required) "
           "and every required step happened.",
        4: "The right outcome, with a minor step skipped or done out of order.",
        3: "Partly done: the outcome is reached only in part, or only after needless detours.",
        2: "Little progress: the conversation stalled, looped or ended before the outcome.",
        1: "Wrong outcome or nothing achieved.",
    },
    "information_accuracy": {
        5: "Every value and fact the assistant states (names, dates, amounts, codes, product steps) is correct.",
        4: "One minor slip, corrected or harmless.",
        3: "One material error, or several minor ones.",
        2: "Several material errors.",
        1: "Mostly wrong or invented information.",
    },
    "consistency": {
        5: "The assistant never contradicts itself or the customer and never repeats a finished step.",
        4: "One small inconsistency or repetition.",
        3: "Noticeable contradictions or repeated steps.",
        2: "Frequent contradictions; the customer has to re-explain.",
        1: "Incoherent across turns.",
    },
    "graceful_handling": {
        5: "Every challenge (off-topic question, partial answer, correction, change of mind) is handled and the "
           "procedure resumes smoothly.",
        4: "Challenges handled with a little friction.",
        3: "Adequate: challenges acknowledged but handled clumsily — or the customer posed none (capped at 3).",
        2: "Challenges mostly mishandled.",
        1: "Challenges ignored or derail the conversation.",
    },
    "naturalness": {
        5: "Reads like a skilled human agent: clear, warm, varied, right length.",
        4: "Natural with small stiffness or verbosity.",
        3: "Understandable but robotic or repetitive.",
        2: "Awkward: artefacts, fragments or wrong register.",
        1: "Unreadable or broken text.",
    },
}

SCORE_SCHEMA = {
    "type": "object",
    "required": list(CRITERIA),
    "properties": {c: {"type": "object", "required": ["score", "reason"],
                       "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5},
                                      "reason": {"type": "string"}}} for c in CRITERIA},
}


@dataclass
class Score:
    """One judge's verdict on one conversation."""

    condition: str
    scenario_id: str
    judge: str
    scores: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    challenged: bool = False
    error: str | None = None
    usage: Usage = field(default_factory=Usage)

    @property
    def failure(self) -> bool | None:
        return None if self.error else self.scores["task_success"] <= FAILURE_THRESHOLD

    def row(self) -> dict[str, Any]:
        return {"condition": self.condition, "scenario_id": self.scenario_id, "judge": self.judge,
                **{c: self.scores.get(c) for c in CRITERIA}, "failure": self.failure,
                "challenged": self.challenged, "error": self.error,
                "reasons": json.dumps(self.reasons, ensure_ascii=False)}


def apply_caps(scores: dict[str, int], challenged: bool) -> dict[str, int]:
    """The rubric's cap: no challenge posed, no credit above 3 for handling one."""
    capped = dict(scores)
    if not challenged:
        capped["graceful_handling"] = min(capped["graceful_handling"], NO_CHALLENGE_CAP)
    return capped


def rubric_text() -> str:
    return "\n\n".join(f"{TITLES[c]}:\n" + "\n".join(f"  {s}: {RUBRIC[c][s]}" for s in range(5, 0, -1))
                       for c in CRITERIA)


# --------------------------------------------------------------------------- the LLM judge

JUDGE_SYSTEM = """You are an expert evaluator of customer-service conversations. Score the assistant's side \
of the conversation on five criteria from 1 to 5, using these anchors:

{rubric}

Reply with one JSON object and nothing else, of this form:
{{"task_success": {{"score": 4, "reason": "one sentence"}}, "information_accuracy": {{...}}, \
"consistency": {{...}}, "graceful_handling": {{...}}, "naturalness": {{...}}}}"""

JUDGE_PROMPT = """The assistant serves: {title}. What the customer wanted and knew (the scenario):
{facts}
The outcome this customer's situation called for: {expected}.
The customer {challenge}.

The conversation:
{conversation}"""


class MalformedVerdict(ValueError):
    pass


def parse_verdict(text: str) -> tuple[dict[str, int], dict[str, str]]:
    """Validate a judge's JSON reply against :data:`SCORE_SCHEMA`; raise :class:`MalformedVerdict`."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if not match:
        raise MalformedVerdict("no JSON object in the reply")
    try:
        data = json.loads(match.group())
    except json.JSONDecodeError as exc:
        raise MalformedVerdict(f"invalid JSON ({exc.msg})") from None
    scores, reasons = {}, {}
    for criterion in CRITERIA:
        item = data.get(criterion) if isinstance(data, dict) else None
        if not isinstance(item, dict):
            raise MalformedVerdict(f"missing criterion '{criterion}'")
        score = item.get("score")
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise MalformedVerdict(f"'{criterion}' score must be an integer 1-5, got {score!r}")
        reason = item.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise MalformedVerdict(f"'{criterion}' needs a one-sentence reason")
        scores[criterion], reasons[criterion] = score, reason.strip()
    return scores, reasons


class LLMJudge:
    """Scores with a model through any backend; malformed replies are retried, then recorded as errors."""

    def __init__(self, workflow: Workflow, backend: Backend, attempts: int = 3):
        from .paths import enumerate_paths

        self.workflow, self.backend, self.attempts = workflow, backend, attempts
        self.name = f"{backend.name}:{backend.model}"
        self.endings = {p.id: workflow.nodes[p.nodes[-1]].terminal for p in enumerate_paths(workflow)}
        self.system = JUDGE_SYSTEM.format(rubric=rubric_text())

    def request(self, transcript: dict, attempt: int) -> Request:
        from .synthesis import _facts

        scenario = json.loads(transcript["scenario"])
        expected = self.endings[transcript["path_id"]]
        conversation = "\n".join(f"{'Assistant' if m['role'] == 'assistant' else 'Customer'}: {m['content']}"
                                 for m in transcript["messages"])
        prompt = JUDGE_PROMPT.format(title=self.workflow.title, facts=_facts(scenario["values"]),
                                     expected=expected, conversation=conversation or "(empty)",
                                     challenge="posed a challenge" if transcript["challenged"]
                                     else "posed no challenge")
        return Request(system=self.system, messages=[{"role": "user", "content": prompt}], max_tokens=600,
                       temperature=0.0, tag="judge", sample=f"attempt-{attempt}" if attempt else "")

    def score(self, transcript: dict) -> Score:
        verdict = Score(transcript["condition"], transcript["scenario_id"], self.name,
                        challenged=transcript["challenged"])
        problem = ""
        for attempt in range(self.attempts):
            completion = self.backend.complete(self.request(transcript, attempt))
            verdict.usage = verdict.usage + completion.usage
            try:
                scores, reasons = parse_verdict(completion.text)
            except MalformedVerdict as exc:
                problem = str(exc)
                continue
            verdict.scores, verdict.reasons = apply_caps(scores, transcript["challenged"]), reasons
            return verdict
        verdict.error = f"malformed verdict after {self.attempts} attempts: {problem}"
        return verdict


# --------------------------------------------------------------------------- the offline judge

class OfflineJudge:
    """Graph-aware scoring from the conformance trace and the scenario, by fixed rules (see each method)."""

    name = "offline"

    def __init__(self, workflow: Workflow):
        from .paths import enumerate_paths

        self.workflow = workflow
        self.paths = {p.id: p for p in enumerate_paths(workflow)}

    def score(self, transcript: dict) -> Score:
        verdict = Score(transcript["condition"], transcript["scenario_id"], self.name,
                        challenged=transcript["challenged"])
        if transcript.get("error"):
            verdict.error = f"conversation failed: {transcript['error']}"
            return verdict
        values = json.loads(transcript["scenario"])["values"]
        agent = [m["content"] for m in transcript["messages"] if m["role"] == "assistant"]
        rules = {"task_success": self.task_success, "information_accuracy": self.information_accuracy,
                 "consistency": self.consistency, "graceful_handling": self.graceful_handling,
                 "naturalness": self.naturalness}
        for criterion, rule in rules.items():
            verdict.scores[criterion], verdict.reasons[criterion] = rule(transcript, values, agent)
        verdict.scores = apply_caps(verdict.scores, transcript["challenged"])
        return verdict

    def task_success(self, t: dict, values: dict, agent: list[str]) -> tuple[int, str]:
        """5 right ending on a valid path; 4 right ending with one off-graph step; 3 right ending otherwise;
        2 no ending but more than half the path's agent steps reached; 1 otherwise."""
        invalid = _invalid_steps(self.workflow, t["trace_nodes"])
        if t["right_ending"]:
            score = 5 if invalid == 0 else 4 if invalid == 1 else 3
            return score, f"reached the expected ending with {invalid} off-graph step(s)"
        path = self.paths[t["path_id"]]
        wanted = [n for n in path.nodes if self.workflow.nodes[n].role == "agent"]
        reached = len(set(wanted) & set(t["trace_nodes"]))
        if reached > len(wanted) / 2:
            return 2, f"stopped ({t['stop_reason']}) after {reached} of {len(wanted)} agent steps"
        return 1, f"stopped ({t['stop_reason']}) after {reached} of {len(wanted)} agent steps"

    def information_accuracy(self, t: dict, values: dict, agent: list[str]) -> tuple[int, str]:
        """Values the assistant states that differ from the scenario's: 0 → 5, 1 → 4, 2 → 3, 3-4 → 2, more → 1."""
        wrong = 0
        for text in agent:
            for name, said in extract_values(self.workflow, text).items():
                truth = values.get(name)
                if name in self.workflow.variables and truth is not None and str(said) != str(truth) \
                        and str(truth).lower() not in text.lower():
                    wrong += 1
                elif name in self.workflow.catalogue and truth is not None and said != truth:
                    wrong += 1
        score = 5 if wrong == 0 else 4 if wrong == 1 else 3 if wrong == 2 else 2 if wrong <= 4 else 1
        return score, f"{wrong} stated value(s) differ from the scenario"

    def consistency(self, t: dict, values: dict, agent: list[str]) -> tuple[int, str]:
        """Repeated identical assistant turns and a step re-done right after itself: 5 minus one per case."""
        repeats = len(agent) - len(set(agent))
        nodes = [n for n in t["trace_nodes"] if self.workflow.nodes[n].role == "agent"]
        stutter = sum(a == b for a, b in zip(nodes, nodes[1:]))
        problems = repeats + stutter
        return max(1, 5 - problems), f"{repeats} repeated turn(s), {stutter} step(s) redone at once"

    def graceful_handling(self, t: dict, values: dict, agent: list[str]) -> tuple[int, str]:
        """After a challenge: 5 if the conversation still ended right on a valid path, 4 right ending,
        2 otherwise. With no challenge the cap (3) applies."""
        if not t["challenged"]:
            return NO_CHALLENGE_CAP, "the customer posed no challenge"
        if t["right_ending"]:
            return (5, "recovered and finished on the procedure") if t["valid_path"] else \
                   (4, "recovered with detours")
        return 2, "the challenge derailed the conversation"

    def naturalness(self, t: dict, values: dict, agent: list[str]) -> tuple[int, str]:
        """Penalties: empty or one-word turns, turns over 120 words, template artefacts ({, <, node ids)."""
        ids = [n for n in self.workflow.nodes if "_" in n]
        bad = sum(len(x.split()) <= 1 or len(x.split()) > 120 or any(c in x for c in "{}<>")
                  or any(i in x for i in ids) for x in agent)
        if not agent:
            return 1, "the assistant said nothing"
        share = bad / len(agent)
        score = 5 if share == 0 else 4 if share <= 0.1 else 3 if share <= 0.3 else 2 if share <= 0.6 else 1
        return score, f"{bad} of {len(agent)} assistant turns empty, overlong or with artefacts"


def _invalid_steps(workflow: Workflow, nodes: list[str]) -> int:
    edges = {(e.source, e.target) for e in workflow.edges}
    return sum((a, b) not in edges for a, b in zip(nodes, nodes[1:]))


def judge_transcripts(transcripts: list[dict], judge, progress: bool = True) -> list[Score]:
    """Score every transcript with ``judge`` (an :class:`OfflineJudge` or :class:`LLMJudge`)."""
    from tqdm.auto import tqdm

    return [judge.score(t) for t in tqdm(transcripts, desc=f"judge · {judge.name}", unit="conversation",
                                         disable=not progress)]


def scores_frame(scores: list[Score]):
    import pandas as pd

    return pd.DataFrame([s.row() for s in scores])

