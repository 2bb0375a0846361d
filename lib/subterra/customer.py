"""The simulated customer: it knows its scenario and persona, never the flowchart's state.

:class:`OfflineUser` is the offline stand-in: it recognises what the agent just did from the
workflow's agent examples and answers as its scenario's customer would, in the workflow's own
customer sentences. It behaves like a person, not a script:

- it chooses from what it was *offered*: the flight, price or policy the agent stated (values
  only the business knows, :func:`~subterra.conformance.lookups`), never the scenario's own copy;
- it answers the question it was asked, and asks again when it cannot tell what the agent wants
  (three times in a row, and it leaves: ``not_understood``);
- it corrects the agent when the agent gets one of its values wrong (twice at most per value);
- past an edge that renews one of its values (``sets``: after a declined card) it gives the new one,
  the other card, never the declined one again; a value it renews itself (another date) it holds from
  the moment it asks for it, and corrects an agent that goes on with the old one;
- it leaves (``loop``) when the agent says the same message three times in a row: a step the
  procedure revisits (the booking summary again after a loyalty number was added) may be said
  again word for word, and a deterministic agent that does so is not stuck;
- its persona's challenge comes once, *before* the answer it owes, never instead of it.

Personas (:data:`~subterra.scenarios.CHALLENGES`) stress an agent the way real customers do:
``off_topic`` (a question off the procedure, then the answer), ``partial_answers`` (half an answer
first), ``corrects_earlier`` (a slip in a value, corrected in the next message), ``two_answers``
(the next answer too, in the same message) and ``gives_up`` (leaves half-way). :class:`LLMUser`
role-plays the same scenario and persona on a real backend.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .backends import Backend, Request, Usage
from .conformance import extract_values, lookups, matcher_for, node_names, required_values, slot_names, spoken
from .paths import Path
from .scenarios import Scenario
from .synthesis import offline_turn
from .workflow import Workflow

STOP = "<<END>>"           # what a simulated customer says to end the conversation

NOT_UNDERSTOOD = "Sorry, I'm not sure what you mean. Could you say that again?"
OFF_TOPIC = ("By the way, is your office open on weekends?", "Quick question first: do you have an app for this?",
             "Sorry, unrelated, but can I get this in writing later?", "Before we go on, is this call recorded?")
PARTIAL = ("Let me check my notes, I only have part of it here.", "Hmm, I'm not sure about all of that yet.")
GIVE_UP = ("Actually, never mind. I'll sort this out another time. Bye.",
           "Forget it, this is taking too long. Bye.", "You know what, I'll leave it for now. Goodbye.")
AGAIN = ("As I said, ", "Like I mentioned, ", "Again: ")
PATIENCE = 3               # agent messages in a row the customer cannot make out before it leaves
# how a router recognises a customer leaving mid-procedure (the offline stand-in for an intent classifier)
LEAVING = re.compile(r"\b(never mind|forget it|leave it for now|another time|goodbye)\b", re.I)
FAREWELL = re.compile(r"\b(goodbye|bye|take care)\b", re.I)     # an agent closing the conversation


@dataclass
class UserTurn:
    text: str
    stop: bool = False
    reason: str = ""
    challenge: bool = False
    usage: Usage = field(default_factory=Usage)


class OfflineUser:
    """A customer played from its scenario, its path's plan and its persona (see the module's rules)."""

    min_score = 0.2           # an agent message nearer than this to no agent example is not understood
    end_score = 0.35          # and one that seems to end the conversation must be nearer still to count as ending it

    def __init__(self, workflow: Workflow, scenario: Scenario, path: Path, seed: int = 0, max_turns: int = 60):
        self.workflow, self.scenario, self.path = workflow, scenario, path
        self.matcher = matcher_for(workflow, "agent")
        self.lookups = lookups(workflow)
        self.plan_at = [k for k, n in enumerate(path.nodes) if workflow.nodes[n].role == "user"]
        self.plan = [path.nodes[k] for k in self.plan_at]
        self.step = 0                          # how far along its plan the customer is
        self.rng = random.Random(f"user:{seed}:{scenario.id}")
        self.max_turns = max_turns
        self.seen: list[str] = []
        self.offered: dict[str, Any] = {}     # look-up values as the agent stated them
        self.said: dict[str, Any] = {}        # the customer's own values as it last stated them
        self.corrections: Counter = Counter()
        self.last: tuple[str, str] | None = None          # (agent node, reply node) of the last answer
        self.style = scenario.persona.challenge
        self.challenge_due = self.rng.randint(0, max(0, min(3, len(self.plan) - 2)))
        self.slip: tuple[str, Any, Any] | None = None      # (variable, said by mistake, meant)
        self.ahead: str | None = None         # a plan step already answered in an earlier message
        self.leaving = False
        self.puzzled = 0                      # agent messages in a row it could not make out

    # ----------------------------------------------------------------- one turn

    def respond(self, messages: list[dict]) -> UserTurn:
        if self.leaving:
            return UserTurn(STOP, stop=True, reason="gave_up")
        if len(messages) >= self.max_turns:
            return UserTurn(STOP, stop=True, reason="turn_limit")
        if not messages:                                   # the customer opens the conversation
            return self._answer(None, self.plan[0]) if self.plan else UserTurn(NOT_UNDERSTOOD)
        agent_text = messages[-1]["content"]
        self.seen.append(agent_text)
        if len(self.seen) >= 3 and len(set(self.seen[-3:])) == 1:       # stuck: the same message three times running
            return UserTurn(STOP, stop=True, reason="loop")
        match = self.matcher.match(agent_text, {**self.scenario.values, **self.offered})
        terminal = self.workflow.nodes[match.node].is_terminal
        if match.score < (self.end_score if terminal else self.min_score):
            self.puzzled += 1
            if self.puzzled >= PATIENCE:                      # a person does not ask a fourth time
                return UserTurn(STOP, stop=True, reason="not_understood")
            return UserTurn(NOT_UNDERSTOOD)
        self.puzzled = 0
        node = match.node
        if self.last is not None:
            self._renew(self.last[1], node)
        if terminal:
            return UserTurn(STOP, stop=True, reason=f"terminal:{self.workflow.nodes[node].terminal}")
        if FAREWELL.search(agent_text):                     # the agent said goodbye off the procedure
            return UserTurn(STOP, stop=True, reason="agent_ended")
        heard = extract_values(self.workflow, agent_text, node_names(self.workflow, node))
        self.offered.update({k: v for k, v in heard.items() if k in self.lookups})
        wrong = self._wrong_value(heard, agent_text)
        if wrong is not None:
            name, value = wrong
            self.corrections[name] += 1
            return UserTurn(f"Sorry, that's not right: the {name.replace('_', ' ')} is {spoken(value)}.",
                            challenge=True)
        reply = self._next_user_node(node)
        if reply is None:
            return UserTurn(NOT_UNDERSTOOD)
        return self._answer(node, reply)

    def _answer(self, agent_node: str | None, reply: str) -> UserTurn:
        self._renew(agent_node, reply)
        prefix, challenge = "", False
        if self.slip is not None:                              # put right the slip of the last message
            name, wrong, meant = self.slip
            self.said[name], self.slip, challenge = meant, None, True
            prefix = f"Sorry, I said {spoken(wrong)} by mistake, it's {spoken(meant)}. "
        terminal = self.workflow.nodes[reply].terminal
        if self.style != "none" and not challenge and not terminal and self.challenge_due is not None:
            if self.challenge_due > 0:
                self.challenge_due -= 1
            else:
                turn = self._challenge(agent_node, reply)
                if turn is not None:
                    self.challenge_due = None
                    return turn
        text = self._say(reply)
        if reply == self.ahead:
            text, self.ahead = self.rng.choice(AGAIN) + text[:1].lower() + text[1:], None
        self.last = (agent_node, reply)
        if terminal:                                            # the customer's own last word
            return UserTurn(prefix + text, stop=True, reason=f"terminal:{terminal}", challenge=challenge)
        return UserTurn(prefix + text, challenge=challenge)

    def _challenge(self, agent_node: str | None, reply: str) -> UserTurn | None:
        """The persona's one challenge, on this reply; None when the reply gives it no opening."""
        style, rng = self.style, self.rng
        if style == "off_topic":
            self.last = (agent_node, reply)
            return UserTurn(rng.choice(OFF_TOPIC) + " " + self._say(reply), challenge=True)
        if style == "gives_up":
            self.leaving = True
            return UserTurn(rng.choice(GIVE_UP), challenge=True)
        needed = sorted(required_values(self.workflow, reply))
        if style == "partial_answers" and len(needed) >= 2:    # half an answer; the rest when asked again
            self._unadvance(reply)
            name = needed[0]
            return UserTurn(f"{rng.choice(PARTIAL)} The {name.replace('_', ' ')} is "
                            f"{spoken(self._value(name))}.", challenge=True)
        decisive = set().union(*(e.check.names for e in self.workflow.edges if e.check is not None))
        slips = [n for n in needed if n not in decisive]      # a slip that changes the route is no slip
        if style == "corrects_earlier" and slips:             # a slip now, put right in the next message
            name = rng.choice(slips)
            meant = self._value(name)
            others = [v for v in self.workflow.values_of(name) if str(v) != str(meant)]
            if others:
                wrong = rng.choice(others)
                self.slip = (name, wrong, meant)
                self.last = (agent_node, reply)
                return UserTurn(self._say(reply, {name: wrong}))
        if style == "two_answers" and self.step < len(self.plan):
            following = self.plan[self.step]
            if not self.workflow.nodes[following].terminal and slot_names(" ".join(
                    self.workflow.heard_as(following))) - self.lookups:
                self.ahead, self.last = following, (agent_node, reply)
                return UserTurn(self._say(reply) + " " + self._say(following), challenge=True)
        return None

    # ----------------------------------------------------------------- choosing and saying

    def _next_user_node(self, agent_node: str) -> str | None:
        targets = [e.target for e in self.workflow.successors(agent_node)]
        if self.step < len(self.plan) and self.plan[self.step] in targets:
            self.step += 1
            return self.plan[self.step - 1]
        if self.last is not None and self.last[0] == agent_node and self.last[1] in targets:
            return self.last[1]                                 # asked again: answer again
        for k in range(self.step, len(self.plan)):             # the agent skipped ahead: follow it
            if self.plan[k] in targets:
                self.step = k + 1
                return self.plan[k]
        for k in range(self.step - 1, -1, -1):                  # a way the plan does not go: the customer's
            if self.plan[k] in targets:                         # situation is what it last said (the error is
                return self.plan[k]                             # still there), never what its path rules out
        allowed = [e.target for e in self.workflow.successors(agent_node)
                   if e.check is None or e.check.evaluate(self.scenario.values)]
        return allowed[0] if allowed else None

    def _renew(self, source: str | None, target: str) -> None:
        """The edge ``source -> target`` was taken: its ``sets`` give this customer's values anew (another card)."""
        edge = next((e for e in self.workflow.successors(source) if e.target == target), None) if source else None
        self._hold(edge.sets if edge is not None else ())

    def _renew_said(self, node_id: str) -> None:
        """A step of the customer's whose every way on renews the same values (asking for another date) renews
        them as it is said: the customer holds the new date from asking for it, whatever the agent does next."""
        ways = {e.sets for e in self.workflow.successors(node_id)}
        if len(ways) == 1:
            self._hold(ways.pop())

    def _hold(self, sets: tuple[tuple[str, str], ...]) -> None:
        for name, renewing in sets:
            self.said[name] = self.scenario.values.get(renewing, self._value(name))

    def _unadvance(self, reply: str) -> None:
        if self.step > 0 and self.plan[self.step - 1] == reply:
            self.step -= 1

    def _value(self, name: str) -> Any:
        return self.said.get(name, self.scenario.values.get(name))

    def _say(self, node_id: str, override: dict[str, Any] | None = None) -> str:
        """The node's sentence with what this customer knows: its own values, and look-ups as offered.

        Sentences that name a look-up value the agent never stated are avoided while others remain.
        """
        sayings = self.workflow.sayings(node_id, self._way_on(node_id))
        values = {**self.scenario.values, **self.said, **self.offered, **(override or {})}
        usable = [e for e in sayings if not (slot_names(e) & self.lookups) - set(self.offered)]
        template = self.rng.choice(usable or list(sayings))
        self.said.update({name: values[name] for name in slot_names(template) - self.lookups if name in values})
        text = offline_turn(self.workflow, node_id, self.scenario, self.rng, [template], values)
        self._renew_said(node_id)
        return text

    def _way_on(self, node_id: str) -> str | None:
        """Where this customer's path goes after its step ``node_id`` (the one just taken, else the next, else
        the latest before): its words must tell that branch (a failed upload names the error)."""
        for k in (self.step - 1, self.step, *range(self.step - 2, -1, -1)):
            if 0 <= k < len(self.plan) and self.plan[k] == node_id:
                following = self.plan_at[k] + 1
                return self.path.nodes[following] if following < len(self.path.nodes) else None
        return None

    def _wrong_value(self, heard: dict[str, Any], text: str) -> tuple[str, Any] | None:
        """A value of the customer's that the agent just stated wrongly (given, or not yet given)."""
        for name, value in heard.items():
            if name in self.lookups or self.corrections[name] >= 2:
                continue
            truth = self._value(name)
            if truth is None or spoken(value) == spoken(truth) or spoken(truth).lower() in text.lower():
                continue
            return name, truth
        return None




ROLE_PLAY = """You are role-playing a customer talking to {title} assistant. Stay in character; never \
mention that you are simulated. Your situation (use these facts exactly, reveal them naturally when asked):
{facts}{events}
You are {persona}. Your goal in this conversation: {goal}
Anything the assistant looks up for you (a flight, a price, a reference), take as the assistant states it.
Reply with only your next message. When the conversation has reached its end (your request is done, \
handed over or abandoned), reply with exactly {stop}."""


def customer_events(workflow: Workflow, path: Path, values: dict[str, Any]) -> list[str]:
    """What happens on the customer's side where its own words decide the branch (a customer step with an edge
    that carries its own examples: insurance's upload, which arrives or fails): one line per pass of such a step,
    in the path's order, with what the customer may say. The offline customer follows its path; a role-played one
    learns it from these lines."""
    from .workflow import render

    lines = []
    for here, there in zip(path.nodes, path.nodes[1:]):
        node, ways = workflow.nodes[here], workflow.successors(here)
        if node.role != "user" or not any(e.examples for e in ways):
            continue
        edge = next(e for e in ways if e.target == there)
        line = f"\n- {node.label}: {edge.when or 'as usual.'}"
        if edge.examples:
            line += f' For example: "{render(edge.examples[0], values)}"'
        lines.append(line)
    return lines


class LLMUser:
    """A customer role-played by a model from the scenario and persona only (never the flowchart)."""

    def __init__(self, workflow: Workflow, scenario: Scenario, path: Path, backend: Backend, max_turns: int = 60):
        from .synthesis import _facts

        end = workflow.nodes[path.nodes[-1]]
        goal = {"success": "get your request completed", "abandonment": "you will end up not going ahead",
                "escalation": "you will end up wanting a human colleague"}[end.terminal]
        own = {k: v for k, v in scenario.values.items() if k not in lookups(workflow)}
        events = customer_events(workflow, path, scenario.values)
        events = "".join(["\nWhat happens on your side, in this order (say so when it happens):", *events]) if events else ""
        title = workflow.title.lower()
        title = ("an " if title[:1] in "aeiou" else "a ") + title
        self.system = ROLE_PLAY.format(title=title, facts=_facts(own), events=events,
                                       persona=scenario.persona.describe(), goal=goal, stop=STOP)
        self.backend, self.max_turns, self.scenario = backend, max_turns, scenario

    def respond(self, messages: list[dict]) -> UserTurn:
        if len(messages) >= self.max_turns:
            return UserTurn(STOP, stop=True, reason="turn_limit")
        # the customer's view: the agent's turns are "user" messages to the role-playing model
        flipped = [{"role": "user" if m["role"] == "assistant" else "assistant", "content": m["content"]}
                   for m in messages] or [{"role": "user", "content": "(the assistant is waiting for you)"}]
        completion = self.backend.complete(Request(system=self.system, messages=flipped, max_tokens=200,
                                                   temperature=0.7, tag="simulator", sample=self.scenario.id))
        text = completion.text.strip()
        if STOP in text:
            return UserTurn(STOP, stop=True, reason="user_ended", usage=completion.usage)
        return UserTurn(text, usage=completion.usage)
