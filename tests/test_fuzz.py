"""Mutated workflow files must give one clear line each, never a traceback or a half-loaded workflow."""

import copy
import random

import pytest
import yaml

from subterra import DOMAINS, Workflow, WorkflowError, parse_workflow, workflow_file
from conftest import TOY

WRONG_VALUES = [None, 7, 3.5, True, "", "text", [], [1, "a"], {}, {"k": "v"}, "2024-01-01"]


def _paths_into(data, prefix=()):
    """Every (container path, key) in the parsed YAML tree."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield prefix, key
            yield from _paths_into(value, prefix + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield prefix, i
            yield from _paths_into(value, prefix + (i,))


def _container(data, path):
    for part in path:
        data = data[part]
    return data


def drop_field(data, rng):
    path, key = rng.choice(list(_paths_into(data)))
    container = _container(data, path)
    if isinstance(container, dict):
        del container[key]
    else:
        container.pop(key)


def wrong_type(data, rng):
    path, key = rng.choice(list(_paths_into(data)))
    _container(data, path)[key] = copy.deepcopy(rng.choice(WRONG_VALUES))


def dangling_edge(data, rng):
    edge = rng.choice(data["edges"])
    edge[rng.choice(["from", "to"])] = rng.choice(["nowhere", "greet_", "Offer", "terminal"])


def duplicate_node(data, rng):
    node = copy.deepcopy(rng.choice(data["nodes"]))
    data["nodes"].insert(rng.randrange(len(data["nodes"]) + 1), node)


def cycle_without_exit(data, rng):
    edge = rng.choice(data["edges"])
    roles = {n["id"]: n["role"] for n in data["nodes"]}
    other = {"agent": "user", "user": "agent"}
    first, second = other[roles[edge["from"]]], roles[edge["from"]]
    data["nodes"] += [{"id": "trap_a", "role": first, "prompt": "p", "examples": ["e"]},
                      {"id": "trap_b", "role": second, "prompt": "p", "examples": ["e"]}]
    data["edges"] += [{"from": edge["from"], "to": "trap_a"}, {"from": "trap_a", "to": "trap_b"},
                      {"from": "trap_b", "to": "trap_a"}]


def bad_slot(data, rng):
    node = rng.choice(data["nodes"])
    node["examples"][0] += rng.choice([" {undefined_slot}", " {", " {a.b.c}", " }{"])


def bad_condition(data, rng):
    edge = rng.choice(data["edges"])
    edge["when"] = "sometimes"
    edge["check"] = rng.choice(["budget >=", "import os", "x ==== 1", "f(1)", "nope > 1", "(", "a.b.c == 1"])


def terminal_with_exit(data, rng):
    terminal = rng.choice([n for n in data["nodes"] if n.get("terminal")])
    target = rng.choice([n for n in data["nodes"] if n["role"] != terminal["role"]])
    data["edges"].append({"from": terminal["id"], "to": target["id"]})


STRUCTURAL = [drop_field, wrong_type, dangling_edge, duplicate_node, cycle_without_exit, bad_slot, bad_condition,
              terminal_with_exit]


def break_text(text, rng):
    lines = text.splitlines()
    i = rng.randrange(len(lines))
    choice = rng.randrange(5)
    if choice == 0:
        lines[i] = lines[i] + rng.choice([" [", " {", ": :", " ]", "\t", " &a", " *b", " '"])
    elif choice == 1:
        lines[i] = " " * rng.randrange(1, 5) + lines[i]
    elif choice == 2:
        del lines[i:i + rng.randrange(1, 4)]
    elif choice == 3:
        return text[: rng.randrange(len(text))]
    else:
        lines.insert(i, rng.choice(["---", "- x", "!!python/object:os.system {}", "key: [unclosed", "%YAML 9"]))
    return "\n".join(lines)


def mutants(n=320, seed=2605):
    rng = random.Random(seed)
    sources = [TOY] + [workflow_file(d).read_text() for d in DOMAINS if workflow_file(d).exists()]
    parsed = [yaml.safe_load(s) for s in sources]
    for i in range(n):
        k = rng.randrange(len(sources))
        if i % 4 == 3:
            yield "text", break_text(sources[k], rng)
        else:
            mutate = STRUCTURAL[i % len(STRUCTURAL)]
            data = copy.deepcopy(parsed[k])
            mutate(data, rng)
            yield mutate.__name__, yaml.safe_dump(data, sort_keys=False)


def test_every_mutant_gives_one_line_or_a_whole_workflow():
    outcomes = {"error": 0, "loaded": 0}
    for kind, text in mutants():
        try:
            result = parse_workflow(text, source="mutant.yaml")
        except WorkflowError as exc:
            message = str(exc)
            assert "\n" not in message and message.startswith("mutant.yaml"), message
            assert "Traceback" not in message and len(message) < 600
            outcomes["error"] += 1
        else:
            # a mutation that leaves a valid workflow (e.g. dropping an optional label) must load whole
            assert isinstance(result, Workflow) and result.nodes and result.edges
            assert kind in ("drop_field", "wrong_type", "text", "duplicate_node"), kind
            outcomes["loaded"] += 1
    assert outcomes["error"] >= 200, outcomes


@pytest.mark.parametrize("mutate", [dangling_edge, cycle_without_exit, bad_slot, bad_condition, terminal_with_exit])
def test_breaking_mutations_always_fail(mutate):
    rng = random.Random(7)
    for _ in range(15):
        data = yaml.safe_load(TOY)
        mutate(data, rng)
        with pytest.raises(WorkflowError):
            parse_workflow(yaml.safe_dump(data), source="mutant.yaml")
