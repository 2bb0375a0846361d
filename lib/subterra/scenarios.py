"""Scenarios: one customer's situation, consistent with the path their conversation takes.

A scenario draws one value from each variable pool, one record from each catalogue table
and a persona. Sampling for a path keeps drawing until every ``check`` on the path's
edges holds (a path that declines an offer gets a budget below the price). Training
scenarios draw from the training pools only; evaluation scenarios (``held_out=True``)
take the workflow's held-out values wherever it has them, so later stages can measure
whether the compiled model carries values it has never seen.
"""

from __future__ import annotations

import hashlib
import json
import random
from itertools import product
from dataclasses import asdict, dataclass, field
from typing import Any

from .paths import Path
from .workflow import Workflow

VERBOSITY = ("terse", "plain", "chatty")
# How a customer stresses the agent (see subterra.customer): none, a question off the procedure, half an answer
# first, a slip corrected in the next message, the next answer in the same message, leaving half-way.
CHALLENGES = ("none", "off_topic", "partial_answers", "corrects_earlier", "two_answers", "gives_up")
PERSONALITIES = ("friendly", "impatient", "indecisive", "sceptical", "chatty", "terse", "anxious", "polite")


class UnsatisfiablePath(ValueError):
    """No scenario from the pools makes every check on a path true."""


@dataclass(frozen=True)
class Persona:
    personality: str
    verbosity: str
    challenge: str

    def describe(self) -> str:
        challenge = {"none": "", "off_topic": ", and asks a question off the subject once",
                     "partial_answers": ", and gives only part of an answer at first",
                     "corrects_earlier": ", and once gives a wrong detail and corrects it in the next message",
                     "two_answers": ", and answers the next question before it is asked",
                     "gives_up": ", and gives up half-way through"}.get(self.challenge, "")
        return f"a {self.personality} customer who is {self.verbosity}{challenge}"


@dataclass(frozen=True)
class Scenario:
    id: str
    domain: str
    path_id: str
    values: dict[str, Any] = field(hash=False)       # variable -> value, catalogue table -> record
    persona: Persona = field(hash=False)
    held_out: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Scenario":
        data = json.loads(text)
        return cls(**{**data, "persona": Persona(**data["persona"])})


def _rng(*parts: Any) -> random.Random:
    return random.Random(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest())


def path_checks(workflow: Workflow, path: Path) -> list:
    """The conditions a scenario must satisfy to take ``path``."""
    checks = {(e.source, e.target): e.check for e in workflow.edges if e.check is not None}
    return [checks[edge] for edge in path.edges if edge in checks]


def holds(workflow: Workflow, check, values: dict[str, Any]) -> bool:
    """Does ``check`` hold for these values? An outcome a tool returns (a payment declined) is the path's at
    each call, not the scenario's: a check on one holds when some value of its pool makes it true."""
    decided = sorted(check.names & set(workflow.outcomes()))
    return any(check.evaluate({**values, **dict(zip(decided, chosen))})
               for chosen in product(*(workflow.values_of(name) for name in decided)))


def draw_values(workflow: Workflow, rng: random.Random, held_out: bool = False) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, pool in workflow.variables.items():
        if held_out and name in workflow.held_out:
            pool = workflow.held_out[name]
        values[name] = rng.choice(pool)
    for table, records in workflow.catalogue.items():
        values[table] = dict(rng.choice(records))
    return values


def draw_persona(workflow: Workflow, rng: random.Random, values: dict[str, Any]) -> Persona:
    personality = values.get("personality") or rng.choice(PERSONALITIES)
    return Persona(personality=str(personality), verbosity=rng.choice(VERBOSITY), challenge=rng.choice(CHALLENGES))


def sample_scenario(workflow: Workflow, path: Path, seed: int | str, scenario_id: str,
                    held_out: bool = False, max_tries: int = 2000) -> Scenario:
    """A scenario for ``path``, reproducible from (seed, scenario_id)."""
    rng = _rng(workflow.family, seed, scenario_id, held_out)
    checks = path_checks(workflow, path)
    for _ in range(max_tries):
        values = draw_values(workflow, rng, held_out)
        if all(holds(workflow, check, values) for check in checks):
            break
    else:
        raise UnsatisfiablePath(f"{workflow.source or workflow.name}: path {path.id} "
                                f"({' > '.join(path.nodes)}): no scenario satisfies "
                                f"{' and '.join(c.source for c in checks)}")
    return Scenario(id=scenario_id, domain=workflow.name, path_id=path.id, values=values,
                    persona=draw_persona(workflow, rng, values), held_out=held_out)
