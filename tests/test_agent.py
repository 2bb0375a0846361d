"""The agent and its evaluation: the fair value measure, the loop guard, a perfect and a faulty scripted agent."""

import random

import pytest
import torch

from subterra import load_domain, render
from subterra.agent import (Agent, NoRepeatInReply, check_values, evaluate_next_steps, gold_dialogues,
                            template_fills)

VALUES = {"name": "Gulnara", "surname": "Halvorsen", "airline": "Icelandair", "flight_number": "1939",
          "origin": "Doha", "destination": "Hobart", "travel_date": "May 11", "departure_time": "4:45 pm",
          "travellers": 6, "cabin": "premium economy", "price": 2700}


@pytest.fixture(scope="module")
def travel():
    return load_domain("travel")


def test_template_fills_reads_each_slot_and_allows_an_opener():
    fills = template_fills("I found {city} for {price}.", "Sure. I found Braga for 300.")
    assert fills == [("city", "Braga"), ("price", "300")]
    assert template_fills("I found {city} for {price}.", "We have nothing for you.") is None


def test_every_template_of_a_node_filled_right_is_precise_and_complete(travel):
    for template in travel.nodes["booking_summary"].examples:
        check = check_values(travel, "booking_summary", "Of course. " + render(template, VALUES), VALUES)
        assert check.precise and check.complete, (template, check)
        assert check.template == template


def test_swapped_and_invented_values_are_wrong(travel):
    template = travel.nodes["booking_summary"].examples[0]
    swapped = render(template, {**VALUES, "origin": "Hobart", "destination": "Doha"})
    check = check_values(travel, "booking_summary", swapped, VALUES)
    assert set(check.wrong) == {"Hobart", "Doha"} and check.filled == check.slots - 2
    invented = render(template, {**VALUES, "name": "Gulnrara"})
    assert check_values(travel, "booking_summary", invented, VALUES).wrong == ("Gulnrara",)


def test_a_paraphrase_naming_another_known_value_is_wrong(travel):
    reply = "Great, Icelandair 1939 from Doha to Lisbon it is. Shall I book it?"
    check = check_values(travel, "booking_summary", reply, VALUES)
    assert "Lisbon" in check.wrong and not check.complete and 0 < check.recall < 1


def test_loop_guard_bans_a_repeat_inside_the_reply_only():
    guard = NoRepeatInReply(3, prompt_length=4)
    prompt = [5, 6, 7, 5]
    generated = [6, 9, 5, 6]       # "5 6" was written in this reply, followed by 9... no: 6 9 | 5 6 -> tail (5, 6)
    scores = guard(torch.tensor([prompt + generated]), torch.zeros(1, 12))
    # the prompt has 5 6 7, but only the reply counts: 5 6 never came before inside the reply -> nothing banned
    assert torch.isfinite(scores).all()
    generated = [5, 6, 9, 5, 6]    # 5 6 9 written; 5 6 again: 9 would repeat a 3-token run
    scores = guard(torch.tensor([prompt + generated]), torch.zeros(1, 12))
    assert scores[0, 9] == float("-inf") and torch.isfinite(scores[0, :9]).all()


class ScriptedAgent(Agent):
    """Replies from the gold dialogue: another template of the gold node (``perfect``), or with two values swapped."""

    def __init__(self, workflow, n, swap=False):
        self.workflow, self.swap = workflow, swap
        self.gold = {d.messages(workflow.system_prompt)[1]["content"] + str(d.scenario.values): d
                     for d in gold_dialogues(workflow, n)}
        self.model, self.tokenizer = None, None

    def reply_batch(self, conversations, batch_size=32, progress=False):
        out = []
        for messages in conversations:
            dialogue = next(d for d in self.gold.values()
                            if d.messages(self.workflow.system_prompt)[:len(messages)] == messages)
            turn = dialogue.turns[len(messages) - 1]
            values = dict(dialogue.scenario.values)
            if self.swap and "origin" in values:
                values["origin"], values["destination"] = values["destination"], values["origin"]
            examples = self.workflow.nodes[turn.node].examples
            template = random.Random(turn.content).choice(examples)     # often not the gold's template
            out.append(render(template, values))
        return out


def test_a_perfect_agent_scores_full_marks_even_with_other_templates(travel, monkeypatch):
    monkeypatch.setattr("subterra.agent.copy_token_accuracy", lambda *a, **k: (1.0, 1))
    report = evaluate_next_steps(ScriptedAgent(travel, 12), travel, n=12)
    assert report.copy_turns > 10 and report.value_turns > 10
    assert report.copy_carrying == 1.0 and report.value_precision == 1.0 and report.value_recall == 1.0
    assert report.dialogue_permitted == 1.0


def test_an_agent_that_swaps_values_loses_precision(travel, monkeypatch):
    monkeypatch.setattr("subterra.agent.copy_token_accuracy", lambda *a, **k: (1.0, 1))
    report = evaluate_next_steps(ScriptedAgent(travel, 12, swap=True), travel, n=12)
    assert report.value_precision < 0.9 and report.copy_carrying < 0.9
    assert any("wrong values" in f and f["wrong values"] for f in report.failures)


def test_values_the_agent_brings_in_first_are_not_judged(travel):
    """The flight a search finds is a lookup the model does not have: only values said before count."""
    template = travel.nodes["booking_summary"].examples[0]
    other_flight = render(template, {**VALUES, "airline": "Iberia", "flight_number": "1811", "price": 2280})
    said = "I'd like to fly from Doha to Hobart on May 11, I'm Gulnara Halvorsen."
    check = check_values(travel, "booking_summary", other_flight, VALUES, said=said)
    assert check.precise and check.complete and check.slots == 4      # name, origin, destination, date: as said
    assert not check_values(travel, "booking_summary", other_flight, VALUES).precise    # all judged: wrong
    swapped = render(template, {**VALUES, "origin": "Hobart", "destination": "Doha"})
    assert set(check_values(travel, "booking_summary", swapped, VALUES, said=said).wrong) == {"Hobart", "Doha"}
