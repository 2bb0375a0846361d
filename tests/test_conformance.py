"""subterra.conformance: nodes recognised from text, traces checked against the graph."""

import json

import pytest

from subterra import load_domain, parse_workflow
from subterra.conformance import NodeMatcher, conformance, mask_values
from subterra.synthesis import read_dialogues, synthesize
from conftest import TOY


def test_values_are_masked_before_matching():
    assert mask_values("I found Braga for 300.", {"city": "Braga", "price": 300}) == "I found <v> for <v>."
    assert mask_values("I found {city} for {price}.", None) == "I found <v> for <v>."


def test_matcher_recognises_nodes_with_unseen_values():
    toy = parse_workflow(TOY)
    matcher = NodeMatcher(toy, role="agent")
    values = {"city": "Reykjavik", "price": 999, "desk": {"name": "Harbour desk", "hours": "0-24"}}
    assert matcher.match("I found Reykjavik for 999.", values).node == "offer"
    assert matcher.match("The Harbour desk (0-24) will take over.", values).node == "handoff"
    best = matcher.match("Booked Reykjavik!", values)
    assert best.node == "done" and best.margin > 0


def test_offline_dialogues_trace_back_to_their_paths(tmp_path):
    """The teacher's labels are what the harness reads, challenges included: an aside, a slip and two answers
    at once still read as their step, half an answer reads as no answer (None) and the step is asked again.
    A customer who gives up leaves the path; the agent's goodbye reads as letting them go."""
    from subterra.judge import OfflineJudge

    workflow = load_domain("insurance")
    synthesize(workflow, 60, tmp_path, "offline", progress=False)
    matcher = NodeMatcher(workflow, role=None)
    judge = OfflineJudge(workflow)
    styles = set()
    for row in read_dialogues(tmp_path / "dialogues.jsonl"):
        values = json.loads(row["scenario"])["values"]
        style = json.loads(row["scenario"])["persona"]["challenge"]
        styles.add(style)
        expected = workflow.nodes[judge.paths[row["path_id"]].nodes[-1]].terminal
        trace = conformance(workflow, row["messages"], values, expected, matcher)
        if style == "gives_up":
            assert row["nodes"][-2:] == [None, None] and trace.nodes[:-2] == row["nodes"][:-2]
            assert judge._let_go({"messages": row["messages"][1:]}), row["messages"][-1]
            continue
        assert trace.nodes == row["nodes"], style
        assert trace.valid_path and trace.right_ending
    assert styles == {"none", "off_topic", "partial_answers", "corrects_earlier", "two_answers", "gives_up"}


def test_a_skipped_step_is_an_invalid_path():
    toy = parse_workflow(TOY)
    messages = [{"role": "assistant", "content": "Hello, which city?"},
                {"role": "user", "content": "A trip to Faro, budget 900."},
                {"role": "assistant", "content": "Booked Faro!"}]      # skipped the offer
    trace = conformance(toy, messages, {"city": "Faro", "budget": 900}, expected_end="success")
    assert trace.nodes == ["greet", "ask", "done"]
    assert not trace.valid_path and trace.invalid_steps == [(2, "ask", "done")] and trace.right_ending
    assert not trace.adherent


# --------------------------------------------------------------------------- which values training may make up

@pytest.mark.parametrize("domain, copied, kept", [
    ("travel", {"name", "surname", "origin", "destination", "travel_date", "card_last4", "other_card"},
     {"budget", "price", "special_request", "airline", "booking_ref", "personality"}),
    ("zoom", {"name", "device", "phone"}, {"error", "feature", "ticket_id", "personality"}),
    ("insurance", {"name", "policy_number", "phone", "city"},
     {"policy", "policy_status", "injuries", "damage_amount", "claim_number"}),
])
def test_copied_variables_are_what_the_agent_repeats_never_what_a_branch_reads(domain, copied, kept):
    from subterra.conformance import copied_variables, lookups

    wf = load_domain(domain)
    found = copied_variables(wf)
    assert copied <= found and not kept & found
    checked = set().union(*(e.check.names for e in wf.edges if e.check))
    assert not found & checked and not found & set(wf.catalogue) and not found & lookups(wf)
    assert found <= set(wf.variables)
