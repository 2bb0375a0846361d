"""Judging: five criteria scored 1–5 by an LLM judge or by the offline graph-aware judge.

The rubric (our own behavioural anchors, following the paper's five criteria):
Task Success, Information Accuracy, Consistency, Graceful Handling, Naturalness. Graceful
Handling is scored only where the customer posed a challenge (elsewhere it is None, not a 3: the
paper's cap at 3 put a no-challenge 3 into every mean, so that a perfect agent scored below 5
whenever customers were cooperative), and a conversation with Task Success ≤ 3 counts as a failure.

- :class:`LLMJudge` asks a backend (Claude Sonnet 5.5 primary, GPT-5.5 as the robustness
  judge; the paper used Claude Sonnet 4.5, retired on 2026-11-30, and GPT-4.1, which shuts down on
  2027-01-14) for a JSON object with a score and a one-sentence reason per criterion, validates it
  against :data:`SCORE_SCHEMA`, retries when it is malformed, and records an error — never a
  silent default — when it stays malformed.
- :class:`OfflineJudge` scores from the conformance trace, what the customer said and the
  workflow's catalogue by the documented rules in its methods. It is a stand-in that needs no
  key; it measures procedure adherence and value accuracy, not tone. Values only the business
  knows (a flight, a price, a policy: :func:`~subterra.conformance.lookups`) are in no one's
  conversation before the agent states them, so they are checked for consistency across the
  agent's turns, never against the scenario; the customer's own values are checked against what
  the customer said.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .backends import Backend, Request, Usage
from .conformance import (ANSWER_SCORE, extract_values, fact_checks, invalid_steps, knowledge_fields, lookups,
                          matcher_for, node_names, scenario_records, spoken)
from .tools import MADE_UP, answers_before, conversation_line
from .workflow import Workflow

CRITERIA = ("task_success", "information_accuracy", "consistency", "graceful_handling", "naturalness")
TITLES = {"task_success": "Task Success", "information_accuracy": "Information Accuracy",
          "consistency": "Consistency", "graceful_handling": "Graceful Handling", "naturalness": "Naturalness"}
FAILURE_THRESHOLD = 3      # Task Success <= 3 is a failure
ARTEFACT = re.compile(r"[{}]|<\|?/?[a-z_]+\|?>")            # {slot}, <v>, <|im_end|>, </s>

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
        3: "Adequate: challenges acknowledged but handled clumsily.",
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
    scores: dict[str, int | None] = field(default_factory=dict)   # graceful_handling None: no challenge
    reasons: dict[str, str] = field(default_factory=dict)
    challenged: bool = False
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    facts_stated: int | None = None        # product knowledge (the offline judge): catalogue facts stated ...
    facts_right: int | None = None         # ... and of those, the right record's

    @property
    def failure(self) -> bool | None:
        return None if self.error else self.scores["task_success"] <= FAILURE_THRESHOLD

    def row(self) -> dict[str, Any]:
        return {"condition": self.condition, "scenario_id": self.scenario_id, "judge": self.judge,
                **{c: self.scores.get(c) for c in CRITERIA}, "failure": self.failure,
                "challenged": self.challenged, "error": self.error,
                "facts_stated": self.facts_stated, "facts_right": self.facts_right,
                "reasons": json.dumps(self.reasons, ensure_ascii=False)}


def apply_rules(scores: dict[str, int], challenged: bool) -> dict[str, int | None]:
    """The rubric's rule: with no challenge posed there is nothing to handle, so no Graceful Handling score."""
    return {**scores, "graceful_handling": scores["graceful_handling"] if challenged else None}


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
        conversation = "\n".join(conversation_line(m) for m in transcript["messages"])
        prompt = JUDGE_PROMPT.format(title=self.workflow.title, facts=_facts(scenario["values"]),
                                     expected=expected, conversation=conversation or "(empty)",
                                     challenge="posed a challenge" if transcript["challenged"]
                                     else "posed no challenge (score Graceful Handling 3; it is not counted)")
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
            verdict.scores, verdict.reasons = apply_rules(scores, transcript["challenged"]), reasons
            return verdict
        verdict.error = f"malformed verdict after {self.attempts} attempts: {problem}"
        return verdict


# --------------------------------------------------------------------------- the offline judge

class OfflineJudge:
    """Graph-aware scoring from the conformance trace and what was said, by fixed rules (see each method)."""

    name = "offline"

    def __init__(self, workflow: Workflow):
        from .paths import enumerate_paths

        self.workflow = workflow
        self.paths = {p.id: p for p in enumerate_paths(workflow)}
        self.lookups = lookups(workflow)
        self.returned = workflow.returned()                  # a tool's to say
        self.knowledge = knowledge_fields(workflow)          # the catalogue's facts no customer says

    def score(self, transcript: dict) -> Score:
        verdict = Score(transcript["condition"], transcript["scenario_id"], self.name,
                        challenged=transcript["challenged"])
        said, returned = answers_before(transcript["messages"])      # as said: trace_nodes' turns
        transcript = {**transcript, "messages": said, "returned": returned}
        if transcript.get("error"):
            verdict.error = f"conversation failed: {transcript['error']}"
            return verdict
        values = json.loads(transcript["scenario"])["values"]
        agent = [m["content"] for m in transcript["messages"] if m["role"] == "assistant"]
        checks = self.fact_checks(values, agent)
        facts = [right for _, right in checks]               # any record's fact: a wrong one is a wrong value
        known = [right for key, right in checks if key in self.knowledge]
        rules = {"task_success": self.task_success,
                 "information_accuracy": partial(self.information_accuracy, facts=facts),
                 "consistency": self.consistency, "graceful_handling": self.graceful_handling,
                 "naturalness": self.naturalness}
        for criterion, rule in rules.items():
            verdict.scores[criterion], verdict.reasons[criterion] = rule(transcript, values, agent)
        verdict.scores = apply_rules(verdict.scores, transcript["challenged"])
        verdict.facts_stated, verdict.facts_right = len(known), sum(known)
        return verdict

    def fact_checks(self, values: dict, agent: list[str]) -> list[tuple[tuple[str, str], bool]]:
        """Each catalogue fact an assistant turn states (an error's meaning, cause, fix, where it is fixed; a
        feature's menu path; a policy's deductible and limit), once per turn and field, with its ``(table,
        field)``: True where it is the fact of the record the scenario is about (the error the customer has),
        False where it is another record's (:func:`~subterra.conformance.fact_checks`). The score's product
        knowledge counts the fields no customer says (:func:`~subterra.conformance.knowledge_fields`): it
        lives in the weights, where an incident the agent repeats was in the conversation."""
        expected = scenario_records(self.workflow, values)
        return [check for text in agent for check in fact_checks(self.workflow, text, expected)]

    def task_success(self, t: dict, values: dict, agent: list[str]) -> tuple[int, str]:
        """:meth:`path_success`, at most 2 where the agent took a branch its tool's answer rules out (booked
        on a declined card) or took one an answer decides without asking (:meth:`against_answers`)."""
        score, reason = self.path_success(t, values, agent)
        against = self.against_answers(t, values)
        if against and score > 2:
            source, target = against[0]
            return 2, f"took {source} -> {target}, which its tool's answer rules out (or no call asked)"
        return score, reason

    def against_answers(self, t: dict, values: dict) -> list[tuple[str, str]]:
        """The agent's branches (into an agent step) the conversation took that read what a tool returns (the
        booking's outcome, a policy's status) but do not hold for the answer the tool gave before that turn, or
        were taken with no answer at all. The customer's own choices (over budget, they leave) are theirs to
        make."""
        decided = self.returned
        if not decided:
            return []
        checks = {(e.source, e.target): e.check for e in self.workflow.edges
                  if e.check is not None and e.check.names & decided and self.workflow.nodes[e.target].role == "agent"}
        nodes, returned = t["trace_nodes"], t.get("returned") or [{}] * len(t["trace_nodes"])
        taken = [(i, a, b) for i, (a, b) in enumerate(zip(nodes, nodes[1:]), start=1) if (a, b) in checks]
        wrong = []
        for i, a, b in taken:
            known = {**values, **returned[i]}
            if not checks[a, b].names & decided <= set(returned[i]) or not checks[a, b].evaluate(known):
                wrong.append((a, b))
        return wrong

    def path_success(self, t: dict, values: dict, agent: list[str]) -> tuple[int, str]:
        """5 right ending on a valid path; 4 right ending with one off-graph step; 3 right ending otherwise;
        2 no ending but more than half the path's agent steps reached; 1 otherwise. A customer who left
        half-way (``gave_up``) ends the task: 5, 4 or 3 by the off-graph steps before they left, and 3 if the
        assistant did not close but carried on with the procedure."""
        nodes = t["trace_nodes"]
        if t["stop_reason"] == "gave_up":
            before = nodes[:-1] if nodes and t["messages"][-1]["role"] == "assistant" else nodes
            invalid = len(invalid_steps(self.workflow, before))
            if not self._let_go(t):
                return 3, "the customer left and the assistant did not close the conversation"
            return 5 - min(invalid, 2), f"the customer left half-way; {invalid} off-graph step(s) before"
        invalid = len(invalid_steps(self.workflow, nodes))
        if t["right_ending"]:
            score = 5 if invalid == 0 else 4 if invalid == 1 else 3
            return score, f"reached the expected ending with {invalid} off-graph step(s)"
        path = self.paths[t["path_id"]]
        wanted = [n for n in path.nodes if self.workflow.nodes[n].role == "agent"]
        reached = len(set(wanted) & set(nodes))
        if reached > len(wanted) / 2:
            return 2, f"stopped ({t['stop_reason']}) after {reached} of {len(wanted)} agent steps"
        return 1, f"stopped ({t['stop_reason']}) after {reached} of {len(wanted)} agent steps"

    def _statements(self, t: dict, values: dict):
        """Walk the conversation: per agent turn, each value it states with what it should have been.

        Yields ``(name, stated, expected)``: for the customer's values, ``expected`` is what the
        customer last said (the scenario's value if it has not said it yet); for a look-up a tool
        returns, what it returned before this turn (:data:`~subterra.tools.MADE_UP` if none did); for
        other look-ups, the value the agent itself stated first.
        """
        said: dict[str, Any] = {}
        first: dict[str, Any] = {}
        returned = t.get("returned") or [{}] * len(t["messages"])
        for i, (message, node) in enumerate(zip(t["messages"], t["trace_nodes"] + [None] * len(t["messages"]))):
            text = message["content"]
            if message["role"] == "user":
                said.update({k: v for k, v in extract_values(self.workflow, text).items() if k not in self.lookups})
                continue
            names = node_names(self.workflow, node) if node else None
            for name, stated in extract_values(self.workflow, text, names).items():
                if name in self.returned:                     # a look-up a tool returns: what it returned
                    expected = returned[i].get(name, MADE_UP)
                elif name in self.lookups:
                    expected = first.setdefault(name, stated)
                else:
                    expected = said.get(name, values.get(name))
                    if expected is not None and spoken(expected).lower() in text.lower():
                        continue                              # the right value is there too ("not X but Y")
                if expected is not None:
                    yield name, stated, expected

    def information_accuracy(self, t: dict, values: dict, agent: list[str],
                             facts: list[bool] | None = None) -> tuple[int, str]:
        """The customer's values the assistant states wrongly (against what the customer said), and the
        product facts it gives from another record than the one the customer asked about (another code's
        fix; ``facts``: :meth:`fact_checks`' verdicts, computed here when not given): 0 → 5, 1 → 4, 2 → 3,
        3-4 → 2, more → 1. A look-up a tool returns counts here, against the tool's answer; other look-ups are
        Consistency's."""
        wrong = sum(spoken(s) != spoken(e) for name, s, e in self._statements(t, values)
                    if name not in self.lookups or name in self.returned)
        facts = [right for _, right in self.fact_checks(values, agent)] if facts is None else facts
        others = facts.count(False)
        errors = wrong + others
        score = 5 if errors == 0 else 4 if errors == 1 else 3 if errors == 2 else 2 if errors <= 4 else 1
        return score, (f"{wrong} stated value(s) differ from what the customer said, "
                       f"{others} product fact(s) belong to another record")

    def consistency(self, t: dict, values: dict, agent: list[str]) -> tuple[int, str]:
        """5 minus one per problem: a look-up value (a flight, a price) stated differently than before,
        or the same assistant turn twice in a row."""
        changed = sum(spoken(s) != spoken(e) for name, s, e in self._statements(t, values)
                      if name in self.lookups and name not in self.returned)
        repeats = sum(a == b for a, b in zip(agent, agent[1:]))
        return max(1, 5 - changed - repeats), f"{changed} looked-up value(s) changed, {repeats} turn(s) repeated"

    def graceful_handling(self, t: dict, values: dict, agent: list[str]) -> tuple[int | None, str]:
        """Only where the customer posed a challenge. A customer who left: 5 if the assistant let them go,
        2 if it carried on with the procedure. Otherwise 5 if the conversation still ended right on a
        valid path, 4 right ending with detours, 2 otherwise."""
        if not t["challenged"]:
            return None, "the customer posed no challenge"
        if t["stop_reason"] == "gave_up":
            return (5, "let the customer go politely") if self._let_go(t) else \
                   (2, "carried on with the procedure after the customer left")
        if t["right_ending"]:
            return (5, "recovered and finished on the procedure") if t["valid_path"] else \
                   (4, "recovered with detours")
        return 2, "the challenge derailed the conversation"

    def _let_go(self, t: dict) -> bool:
        """After a customer left: the assistant's last turn closes, rather than performing a procedure step —
        a goodbye that asks nothing, or a turn that reads as no step of the procedure (or as an ending)."""
        from .customer import FAREWELL

        last = t["messages"][-1] if t["messages"] else None
        if last is None or last["role"] != "assistant":
            return False
        if FAREWELL.search(last["content"]) and "?" not in last["content"]:
            return True        # whatever step its words resemble ("Nothing has been changed" reads like a payment)
        match = matcher_for(self.workflow, "agent").match(last["content"])
        return match.score < ANSWER_SCORE or self.workflow.nodes[match.node].is_terminal

    def naturalness(self, t: dict, values: dict, agent: list[str]) -> tuple[int, str]:
        """Penalties: empty or one-word turns, turns over 120 words, template artefacts (a {slot}, a special
        token such as <|im_end|>, a node id). A ">" alone is no artefact: menu paths use it."""
        ids = [n for n in self.workflow.nodes if "_" in n]
        bad = sum(len(x.split()) <= 1 or len(x.split()) > 120 or ARTEFACT.search(x) is not None
                  or any(i in x for i in ids) for x in agent)
        if not agent:
            return 1, "the assistant said nothing"
        share = bad / len(agent)
        score = 5 if share == 0 else 4 if share <= 0.1 else 3 if share <= 0.3 else 2 if share <= 0.6 else 1
        return score, f"{bad} of {len(agent)} assistant turns empty, overlong or with artefacts"


def judge_transcripts(transcripts: list[dict], judge, progress: bool = True) -> list[Score]:
    """Score every transcript with ``judge`` (an :class:`OfflineJudge` or :class:`LLMJudge`)."""
    from tqdm.auto import tqdm

    return [judge.score(t) for t in tqdm(transcripts, desc=f"judge · {judge.name}", unit="conversation",
                                         disable=not progress)]


def scores_frame(scores: list[Score]):
    import pandas as pd

    return pd.DataFrame([s.row() for s in scores])

