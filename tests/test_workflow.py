"""Notebook 01 / subterra.workflow: the format, validation, conditions, rendering."""

import pytest

from subterra import DOMAINS, Condition, WorkflowError, load_domain, load_workflow, parse_workflow, render


def error_for(text: str) -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        parse_workflow(text, source="wf.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("wf.yaml")
    return info.value


def test_toy_loads_completely(toy_file):
    wf = load_workflow(toy_file)
    assert wf.name == "toy" and wf.start == "greet" and len(wf.nodes) == 10 and len(wf.edges) == 10
    assert wf.terminals == {"done": "success", "handoff": "escalation", "goodbye": "abandonment"}
    assert wf.decision_hubs == ["offer"]
    assert wf.held_out == {"city": ("Braga",)}
    assert wf.catalogue["desk"][1] == {"name": "Night desk", "hours": "17-9"}
    assert "desk.hours" in wf.slots() and "city" in wf.slots()
    accept = next(e for e in wf.edges if e.target == "accept")
    assert accept.check.evaluate({"budget": 900, "price": 500}) is True
    assert accept.check.evaluate({"budget": 100, "price": 500}) is False


@pytest.mark.parametrize("domain", DOMAINS)
def test_shipped_domains_load(domain):
    wf = load_domain(domain)
    assert wf.name == domain
    assert "\n" not in wf.system_prompt
    # an even-length shortest path ends on the customer's turn, so a terminal may be a user node
    assert wf.nodes[wf.start].role == "agent"
    assert set(wf.terminals.values()) == {"success", "abandonment", "escalation"}
    assert wf.held_out, "every domain holds out values for evaluation"


@pytest.mark.parametrize("old, new, expect", [
    ("{from: ask, to: offer}", "{from: ask, to: ofer}", ("line 61", "node 'ofer'", "field 'edges[1].to'",
                                                          "unknown node 'ofer'")),
    ("  - id: decline", "  - id: accept", ("node 'accept'", "field 'nodes[9].id'", "duplicate node id")),
    ("start: greet", "start: hello", ("field 'start'", "start node 'hello' is not defined")),
    ("start: greet", "begin: greet", ("field 'begin'", "unknown field 'begin'")),
    ("  - {from: accept, to: done}\n", "", ("node 'done'", "cannot be reached")),
    ("  - {from: human, to: handoff}\n", "  - {from: human, to: offer}\n",
     ("node 'handoff'", "cannot be reached")),
    ("    terminal: success\n", "", ("no outgoing edge and is not marked terminal",)),
    ("prompt: Offer a trip to {city} at {price}.", "prompt: Offer a trip to {citty}.",
     ("node 'offer'", "field 'nodes[2].prompt'", "undefined slot {citty}")),
    ('examples: ["Booked {city}!"]', 'examples: ["Booked {city!"]', ("node 'done'", "field 'nodes[6].examples[0]'", "unbalanced")),
    ("check: budget >= price}", "check: budget >=}", ("field 'edges[2].check'", "does not parse")),
    ("check: budget >= price}", "check: __import__('os')}", ("is not allowed",)),
    ("check: budget >= price}", "check: wallet >= price}", ("undefined variable 'wallet'",)),
    ("check: budget >= price}", "check: budget >= 'cheap'}", ("incompatible types",)),
    ("    role: user\n    prompt: Accept.", "    role: customer\n    prompt: Accept.",
     ("node 'accept'", "field 'nodes[3].role'", "role must be one of agent, user")),
    ('examples: ["Yes please."]', "examples: []", ("node 'accept'", "at least one example")),
    ('examples: ["Yes please."]', "examples: [[1, 2]]", ("field 'nodes[3].examples[0]'", "got a list")),
    ("    prompt: Accept.\n", "", ("node 'accept'", "field 'nodes[3].prompt'", "missing required field 'prompt'")),
    ("  budget: [100, 900]", "  budget: 100", ("field 'variables.budget'", "non-empty list")),
    ("held_out:\n  city: [Braga]", "held_out:\n  city: [Faro]", ("also in the training pool",)),
    ("terminal: success", "terminal: win", ("terminal must be one of",)),
    ("  - {from: greet, to: ask}", "  - {from: greet, to: ask}\n  - {from: done, to: change}",
     ("node 'done'", "terminal node has an outgoing edge")),
    ("  - {from: greet, to: ask}", "  - {from: greet, to: offer}\n  - {from: greet, to: ask}",
     ("joins two agent nodes",)),
    ("system_prompt: You are a helpful booking assistant.", "system_prompt: [1]", ("expected a string",)),
    ("    - {name: Night desk, hours: 17-9}", "    - {name: Night desk}", ("differ from the first record",)),
    ("  - id: ask\n", "  - id: yes\n", ("got a boolean", "quote it")),
    ("  - {from: change, to: offer}", "  - {from: change, to: offer, sets: {city: town}}",
     ("node 'change'", "field 'edges[6].sets.city'", "'town' is not a variable")),
    ("  - {from: change, to: offer}", "  - {from: change, to: offer, sets: {city: city}}", ("from itself",)),
    ("  - {from: change, to: offer}", "  - {from: change, to: offer, sets: [city]}", ("expected a mapping",)),
    ("  - {from: ask, to: offer}", '  - {from: ask, to: offer, examples: ["To {town}."]}',
     ("node 'ask'", "field 'edges[1].examples[0]'", "undefined slot {town}")),
    ("  - {from: ask, to: offer}", "  - {from: ask, to: offer, examples: [3]}",
     ("field 'edges[1].examples[0]'", "non-empty strings")),
    ("  - {from: greet, to: ask}", '  - {from: greet, to: ask, examples: ["Hi."]}',
     ("node 'greet'", "field 'edges[0].examples'", "'greet' is an agent turn")),
])
def test_validation_names_file_line_node_field(toy_text, old, new, expect):
    assert old in toy_text
    message = str(error_for(toy_text.replace(old, new, 1)))
    for fragment in expect:
        fragment = fragment.replace("line ", "wf.yaml:")
        assert fragment in message, message


def test_yaml_syntax_error_has_line(toy_text):
    broken = toy_text.replace("  budget: [100, 900]", "  budget: [100, 900", 1)
    err = error_for(broken)
    assert "YAML syntax error" in str(err) and err.line is not None


def test_cycle_with_no_exit_is_named(toy_text):
    text = toy_text.replace("  - id: decline", """  - id: spin
    role: agent
    prompt: Loop.
    examples: ["again"]
  - id: spun
    role: user
    prompt: Loop.
    examples: ["again"]
  - id: decline""").replace("  - {from: greet, to: ask}", """  - {from: greet, to: ask}
  - {from: change, to: spin}
  - {from: spin, to: spun}
  - {from: spun, to: spin}""")
    err = error_for(text)
    assert err.node == "spin" and "no terminal can be reached" in str(err)


def test_irreducible_loop_is_rejected(toy_text):
    # a second way into the offer <-> change loop that bypasses its head: neither node dominates the other
    text = toy_text.replace("  - {from: greet, to: ask}", "  - {from: greet, to: ask}\n  - {from: greet, to: change}")
    err = error_for(text)
    assert "can be entered in the middle" in str(err) and err.node in ("offer", "change")


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(WorkflowError, match="no such file"):
        load_workflow(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(WorkflowError, match="must be a YAML mapping"):
        load_workflow(tmp_path / "list.yaml")


def test_conditions_evaluate_without_eval():
    cond = Condition.parse("budget >= price and city not in ['Paris', 'Rome'] or -budget > 0")
    assert cond.evaluate({"budget": 5, "price": 3, "city": "Oslo"})
    assert not cond.evaluate({"budget": 5, "price": 3, "city": "Rome"})
    assert Condition.parse("error.kind == 'network'").evaluate({"error": {"kind": "network"}})
    for bad in ("open('x')", "a.b.c == 1", "x + 1 > 2", "lambda: 1", "a if b else c", "[i for i in x]"):
        with pytest.raises(ValueError):
            Condition.parse(bad)


def test_the_part_of_a_condition_that_reads_some_names():
    cond = Condition.parse("payment == 'approved' and special_request in ['None.'] and damage <= policy.deductible")
    part = cond.reading({"payment", "policy"})
    assert part.source == "payment == 'approved' and damage <= policy.deductible"
    assert part.evaluate({"payment": "approved", "damage": 10, "policy": {"deductible": 500}})
    assert cond.reading({"payment", "special_request", "damage", "policy"}) is cond    # every term: itself
    assert cond.reading({"price"}) is None
    either = Condition.parse("payment == 'approved' or budget > 3")        # an 'or' is one term: kept whole
    assert either.reading({"payment"}) is either


def test_render_fills_variables_and_catalogue_fields():
    text = render("Go to {city} via the {desk.name}.", {"city": "Faro", "desk": {"name": "Front desk"}})
    assert text == "Go to Faro via the Front desk."


def test_an_edge_renews_a_value_from_its_target_on(toy_text):
    text = toy_text.replace("  price: [300, 500]", "  price: [300, 500]\n  other_city: [Evora, Sintra]").replace(
        "  - {from: change, to: offer}", "  - {from: change, to: offer, sets: {city: other_city}}")
    wf = parse_workflow(text, source="wf.yaml")
    assert wf.renewals() == {"other_city": "city"}
    values = {"city": "Lisbon", "other_city": "Sintra", "price": 300}
    along = wf.values_along(["greet", "ask", "offer", "change", None, "offer", "accept", "done"], values)
    assert [v["city"] for v in along] == ["Lisbon"] * 5 + ["Sintra"] * 3     # after change -> offer, not before
    assert all(v["price"] == 300 and v["other_city"] == "Sintra" for v in along) and values["city"] == "Lisbon"
    shared = text.replace("other_city: [Evora, Sintra]", "other_city: [Evora, Porto]")
    message = str(error_for(shared))
    assert "field 'edges[6].sets.city'" in message and "both can be 'Porto'" in message
    twice = text.replace("  - {from: ask, to: offer}", "  - {from: ask, to: offer, sets: {price: other_city}}")
    assert "renews one variable only" in str(error_for(twice))


def test_an_edge_says_its_branch_in_its_own_words(toy_text):
    """A customer turn's edge may carry its own examples: what the customer says when its path takes that
    branch. Elsewhere the node's examples stand; a listener hears both as the node."""
    text = toy_text.replace("  - {from: change, to: offer}",
                            '  - {from: change, to: offer, examples: ["Something cheaper than {price}?"]}')
    wf = parse_workflow(text, source="wf.yaml")
    assert wf.sayings("change", "offer") == ("Something cheaper than {price}?",)
    assert wf.sayings("change") == ("Anything else?",) and wf.sayings("accept", "done") == ("Yes please.",)
    assert wf.heard_as("change") == ("Anything else?", "Something cheaper than {price}?")
    assert parse_workflow(toy_text, source="wf.yaml").heard_as("change") == ("Anything else?",)


def test_insurance_says_a_failed_upload_and_keeps_its_shape():
    wf = load_domain("insurance")
    failed, arrived = wf.sayings("upload_attempt", "ask_evidence"), wf.sayings("upload_attempt", "item_logged")
    assert failed and all("{upload_error}" in e for e in failed)
    assert arrived and not any("{upload_error}" in e for e in arrived)
