"""subterra.conformance: nodes recognised from text, traces checked against the graph."""

import json

import pytest

from subterra import load_domain, parse_workflow
from subterra.conformance import LoopRun, NodeMatcher, conformance, loop_runs, loops, mask_values
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


@pytest.mark.parametrize("domain", ["travel", "zoom", "insurance"])
def test_the_readme_lists_each_workflows_copied_variables(domain):
    from pathlib import Path

    from subterra.conformance import copied_variables

    page = Path(__file__).resolve().parents[1] / "docs" / "compiling.md"
    lines = [line.strip() for line in page.read_text().splitlines()]
    table = lines[lines.index("| workflow | made up (copied) | kept (checked, catalogue, look-up, never repeated) |"):]
    row = next(line for line in table if line.startswith(f"| {domain} |"))
    listed = {name.strip() for name in row.split("|")[2].split(",")}
    assert listed == set(copied_variables(load_domain(domain)))


def checked_facts(workflow, text, expected):
    """One verdict per fact ``text`` states, as the judge counts them."""
    from subterra.conformance import fact_checks

    return [right for _, right in fact_checks(workflow, text, expected)]


def test_a_fact_inside_a_right_fact_is_not_another_records_fact():
    from subterra.conformance import stated_facts

    zoom = load_domain("zoom")
    errors, features = zoom.catalogue["error"], zoom.catalogue["feature"]
    update = next(i for i, e in enumerate(errors) if e["code"] == "10004")
    inside = next(i for i, f in enumerate(features) if f["where"].split("> ", 1)[-1] in errors[update]["where"])
    other = next(i for i, f in enumerate(features) if i != inside and f["where"] not in errors[update]["where"])
    text = f"The fix: {errors[update]['fix']}. You'll find it here: {errors[update]['where']}."
    assert inside in stated_facts(zoom, text)[("feature", "where")]         # heard: the where names a menu path
    assert checked_facts(zoom, text, {"error": update, "feature": other}) == [True, True]
    wrong = text + f" And for the other thing: {features[inside]['where']}... no, {errors[0]['fix']}."
    assert sorted(checked_facts(zoom, wrong, {"error": update, "feature": other})) == [False, True, True]


def test_an_amount_said_as_a_policys_deductible_or_limit_is_that_policys_or_wrong():
    """A number is a policy's fact where the field's name stands by it: "your $500 deductible", "a limit of
    $45,000". Another policy's amount, or one no policy has, is wrong; the business's own thresholds are none."""
    from subterra.conformance import stated_amounts

    insurance = load_domain("insurance")
    policies = insurance.catalogue["policy"]
    bike = next(i for i, p in enumerate(policies) if "bike" in p["incident"])       # deductible 250, limit 45,000
    assert (policies[bike]["deductible"], policies[bike]["limit"]) == (250, 45000)
    expected = {"policy": bike}
    assert checked_facts(insurance, "With a $250 deductible, a loss of $140 wouldn't pay out.", expected) == [True]
    assert checked_facts(insurance, "Your policy limit is $45,000, so you're within coverage.", expected) == [True]
    assert checked_facts(insurance, "Since $138000 is within your $250000 limit, we pay the rest.", expected) == [False]
    assert checked_facts(insurance, "Your deductible is $730.", expected) == [False]                # no policy's
    assert sorted(checked_facts(insurance, "After the $250 deductible, and a $500 deductible...", expected)) \
        == [False, True]
    express = "$1150 is under our $2,500 express limit, so no inspection is needed."
    assert stated_amounts(insurance, express) == {} and checked_facts(insurance, express, expected) == []
    assert stated_amounts(load_domain("zoom"), "error 5003: wait 30 seconds") == {}   # no numeric field
    for count in ("Claims have a limit of 30 days.", "The limit is 2 months.", "a deductible of 10%",
                  "a limit of 3 times a year"):
        assert stated_amounts(insurance, count) == {}, count                         # a count, not an amount
    assert stated_amounts(insurance, "Your limit is $45,000. Your limit is 45000.") == {("policy", "limit"): {45000.0}}


ITEM, DOCUMENT = ("another_item", "ask_item"), ("upload_attempt", "ask_evidence")
ONE_ITEM = ["ask_item", "item_description", "ask_evidence", "evidence_photos", "upload_link", "upload_attempt",
            "item_logged", "no_more_items", "ask_total"]


def test_insurance_has_the_document_loop_inside_the_item_loop():
    found = loops(load_domain("insurance"))
    assert set(found) == {ITEM, DOCUMENT}
    assert found[DOCUMENT] < found[ITEM]                       # nested
    assert "item_logged" in found[ITEM] and "item_logged" not in found[DOCUMENT]
    assert "no_more_items" not in found[ITEM]                  # the way out is not in the loop


def test_loop_runs_count_the_rounds_and_the_way_out():
    wf = load_domain("insurance")
    assert loop_runs(wf, ["greet", None, *ONE_ITEM]) == {ITEM: LoopRun(1, "no_more_items"),
                                                         DOCUMENT: LoopRun(1, "item_logged")}
    failed_upload = ONE_ITEM[:6] + ["ask_evidence", "evidence_receipt", "upload_link", "upload_attempt"] + ONE_ITEM[6:]
    two_items = ONE_ITEM[:7] + ["another_item"] + ONE_ITEM
    assert loop_runs(wf, failed_upload)[DOCUMENT] == LoopRun(2, "item_logged")
    assert loop_runs(wf, two_items) == {ITEM: LoopRun(2, "no_more_items"),
                                        DOCUMENT: LoopRun(1, "item_logged")}    # each item enters it afresh
    assert loop_runs(wf, ONE_ITEM[:5]) == {ITEM: LoopRun(1, None), DOCUMENT: LoopRun(1, None)}     # ended inside
    assert loop_runs(wf, ["greet", "report_claim"])[ITEM] == LoopRun(0, None)
