"""Notebook 03 / subterra.synthesis + scenarios: the teacher, the corpus, resuming, the budget cap."""

import hashlib
import re
import json

import pytest

from subterra import enumerate_paths, load_domain, parse_workflow
from subterra.backends import Backend, Completion, Request, Usage
from subterra.backends.cache import CachedBackend
from subterra.scenarios import UnsatisfiablePath, path_checks, sample_scenario
from subterra.synthesis import (Dialogue, clean_turn, estimate, load_corpus, plan_corpus, read_dialogues,
                                synthesize)
from conftest import TOY


class Killed(BaseException):
    """Stands in for a kill: not an Exception, so nothing on the way catches it."""


class ScriptedBackend(Backend):
    """A paid-looking backend: text from the request key, counts calls, can die at call N."""

    name = "scripted"

    def __init__(self, die_at: int | None = None):
        super().__init__("claude-sonnet-5-5")
        self.calls, self.die_at = 0, die_at

    async def acomplete(self, request: Request) -> Completion:
        if self.die_at is not None and self.calls + 1 == self.die_at:
            raise Killed()
        self.calls += 1
        digest = hashlib.sha256(request.key(self.name, self.model).encode()).hexdigest()[:10]
        return Completion(text=f"Turn {digest}.", usage=Usage(input_tokens=1000, output_tokens=100),
                          model=self.model, backend=self.name)


@pytest.fixture
def toy():
    return parse_workflow(TOY, source="toy.yaml")


def test_scenarios_satisfy_their_path_and_hold_out_values(toy):
    for path in enumerate_paths(toy):
        for i in range(20):
            scenario = sample_scenario(toy, path, seed=1, scenario_id=f"s{i}")
            assert all(check.evaluate(scenario.values) for check in path_checks(toy, path))
            assert scenario.values["city"] in toy.variables["city"]
            assert sample_scenario(toy, path, seed=1, scenario_id=f"s{i}") == scenario  # reproducible
        held = sample_scenario(toy, path, seed=1, scenario_id="e0", held_out=True)
        assert held.values["city"] == "Braga" and held.held_out
    impossible = parse_workflow(TOY.replace("check: budget < price}", "check: budget < 0}"))
    path = next(p for p in enumerate_paths(impossible) if "decline" in p.nodes)
    with pytest.raises(UnsatisfiablePath, match=f"path {path.id}"):
        sample_scenario(impossible, path, seed=0, scenario_id="x")


def test_plan_covers_every_path_and_splits(toy):
    plan = plan_corpus(toy, 40, seed=3)
    assert {p.id for _, p, _ in plan.assignments} == {p.id for p in enumerate_paths(toy)}
    assert sum(split == "eval" for *_, split in plan.assignments) == 4
    assert len({d for d, _, _ in plan.assignments}) == 40
    assert plan.calls == sum(len(p) for _, p, _ in plan.assignments)
    cost = estimate(plan, "claude-sonnet-5-5")
    assert cost.calls == plan.calls and cost.dollars > 0 and "calls to claude-sonnet-5-5" in str(cost)
    paper = estimate(plan, "claude-sonnet-4-5")          # the paper's teacher, retired: still priced, dearer
    assert paper.input_tokens == cost.input_tokens and paper.dollars == pytest.approx(cost.dollars * 1.5)
    assert estimate(plan, "offline").dollars == 0


@pytest.mark.parametrize("domain", ["travel", "zoom", "insurance"])
def test_offline_teacher_end_to_end(domain, tmp_path):
    wf = load_domain(domain)
    n = 2 * len(enumerate_paths(wf)) if domain != "insurance" else 120
    result = synthesize(wf, n, tmp_path, "offline", seed=0, progress=False)
    assert result.complete and result.dialogues == n
    corpus = load_corpus(tmp_path)
    rows = list(corpus["train"]) + list(corpus["eval"])
    assert len(rows) == n and len(corpus["eval"]) == round(n * 0.1)
    if domain != "insurance":
        assert {r["path_id"] for r in rows} == {p.id for p in enumerate_paths(wf)}
    # the training text is plain dialogue: no node ids, conditions, slots or labels in it
    banned = {n for n in wf.nodes if "_" in n} | {e.check.source for e in wf.edges if e.check}
    for row in rows:
        messages = row["messages"]
        assert messages[0] == {"role": "system", "content": wf.system_prompt}
        assert len(messages) - 1 == len(row["nodes"])
        for m, node_id in zip(messages[1:], row["nodes"]):
            if node_id is not None:              # None: a turn off the procedure (half an answer, a goodbye)
                assert m["role"] == {"agent": "assistant", "user": "user"}[wf.nodes[node_id].role]
            assert m["content"] and "{" not in m["content"] and "}" not in m["content"]
            assert not any(b in m["content"] for b in banned), m["content"]
    # an agent turn that takes its step starts with that step's own words, no filler before the decision
    # (a turn that declines an aside or asks again starts with its move's phrase instead)
    from subterra.synthesis import ASIDE_REPLIES, REASKS
    starts = {n: [re.sub(r"\\\{\w+\\\}", ".+", re.escape(e.split()[0])) for e in wf.nodes[n].examples] for n in wf.nodes}
    for row in rows:
        for m, node_id in zip(row["messages"][1:], row["nodes"]):
            if node_id is not None and m["role"] == "assistant" and not m["content"].startswith(ASIDE_REPLIES + REASKS):
                word = m["content"].split()[0]
                assert any(re.fullmatch(s, word) for s in starts[node_id]), (node_id, m["content"])
    # the agent states only what the customer has said (and what it looks up), where its step has such a sentence
    from subterra.conformance import extract_values, lookups, node_names, slot_names
    business = lookups(wf)
    for row in rows:
        told = set()
        for m, node_id in zip(row["messages"][1:], row["nodes"]):
            if m["role"] == "user":
                told |= set(extract_values(wf, m["content"]))
            elif node_id is not None and any(slot_names(e) - business <= told for e in wf.nodes[node_id].examples):
                stated = set(extract_values(wf, m["content"], node_names(wf, node_id))) - business
                assert stated <= told, (node_id, m["content"], stated - told)
    # scenario values appear in the text: the model has something to copy
    row = rows[0]
    values = json.loads(row["scenario"])["values"]
    text = " ".join(m["content"] for m in row["messages"])
    assert any(str(v) in text for v in values.values() if not isinstance(v, dict))
    # paraphrase variety: the same node is not always the same sentence
    by_node = {}
    for r in rows:
        for m, node_id in zip(r["messages"][1:], r["nodes"]):
            by_node.setdefault(node_id, set()).add(m["content"])
    assert sum(len(v) > 3 for v in by_node.values()) >= len(by_node) // 2


def test_a_value_an_edge_renews_is_the_new_one_from_that_edge_on(tmp_path):
    """After a declined card the customer offers the other card and the booking is on it; after "could you
    check February 6?" the flight is offered on February 6 (travel's ``sets``). Found: the customer gave
    the declined card again, the agent declined it again, and the compiled model learnt the loop."""
    wf = load_domain("travel")
    synthesize(wf, 3 * len(enumerate_paths(wf)), tmp_path, "offline", seed=0, progress=False)
    rows = read_dialogues(tmp_path / "dialogues.jsonl")
    declined = changed = 0
    for row in rows:
        scenario = json.loads(row["scenario"])
        values = scenario["values"]
        if scenario["persona"]["challenge"] == "corrects_earlier":       # a slip may name another value
            continue
        turns = list(zip(row["messages"][1:], row["nodes"]))
        after = [n for n, (m, node) in enumerate(turns) if node == "payment_declined"]
        for n, (m, node) in enumerate(turns):
            if after and n > after[0] and node in ("confirm_booking", "booking_confirmed"):
                assert values["card_last4"] not in m["content"], (node, m["content"])
                if node == "confirm_booking":
                    declined += 1
                    assert values["other_card"] in m["content"], m["content"]
            elif after and n < after[0] and node == "confirm_booking":
                assert values["card_last4"] in m["content"] and values["other_card"] not in m["content"]
        change = [n for n, (m, node) in enumerate(turns) if node == "change_search"]
        for n, (m, node) in enumerate(turns):
            if change and n > change[0] and node in ("offer_flights", "booking_summary", "booking_confirmed"):
                assert values["travel_date"] not in m["content"], (node, m["content"])
                changed += values["new_date"] in m["content"]
    assert declined >= 50 and changed >= 50


def test_killed_run_resumes_to_the_identical_corpus_without_repeated_calls(toy, tmp_path):
    clean = ScriptedBackend()
    synthesize(toy, 60, tmp_path / "clean", clean, progress=False)
    expected = read_dialogues(tmp_path / "clean" / "dialogues.jsonl")
    total_turns = sum(len(r["nodes"]) for r in expected)
    assert clean.calls == total_turns

    dying = ScriptedBackend(die_at=151)
    with pytest.raises(Killed):
        synthesize(toy, 60, tmp_path / "run", dying, progress=False)
    jsonl = tmp_path / "run" / "dialogues.jsonl"
    written = len(jsonl.read_text().splitlines())
    assert 0 < written < 60
    with open(jsonl, "a") as f:
        f.write('{"id": "toy-07", "messages": [{"role": "sys')  # torn last line from a kill mid-write
    again = ScriptedBackend()
    result = synthesize(toy, 60, tmp_path / "run", again, progress=False)
    assert result.complete and result.written_now == 60 - written
    assert dying.calls + again.calls == total_turns, "a backend call was repeated"
    assert read_dialogues(jsonl) == expected
    assert list(load_corpus(tmp_path / "run")["train"]) == list(load_corpus(tmp_path / "clean")["train"])
    # a finished run re-run costs nothing
    idle = ScriptedBackend()
    assert synthesize(toy, 60, tmp_path / "run", idle, progress=False).complete and idle.calls == 0


def test_budget_cap_stops_cleanly_and_a_bigger_budget_finishes(toy, tmp_path):
    backend = CachedBackend(ScriptedBackend(), tmp_path / "cache", budget=0.20)
    result = synthesize(toy, 40, tmp_path, backend, progress=False)
    assert result.stopped and "budget cap" in result.stopped and not result.complete
    assert 0 < result.dollars <= 0.20
    assert not (tmp_path / "corpus").exists()
    rows = read_dialogues(tmp_path / "dialogues.jsonl")
    assert len(rows) == result.dialogues < 40
    finish = ScriptedBackend()
    assert synthesize(toy, 40, tmp_path, CachedBackend(finish, tmp_path / "cache", budget=5.0),
                      progress=False).complete
    turns = sum(len(r["nodes"]) for r in read_dialogues(tmp_path / "dialogues.jsonl"))
    assert backend.inner.calls + finish.calls == turns      # no turn paid for twice


def test_dialogue_record_round_trip(toy, tmp_path):
    synthesize(toy, 12, tmp_path, "offline", progress=False)
    row = read_dialogues(tmp_path / "dialogues.jsonl")[0]
    assert Dialogue.from_record(row).to_record(toy.system_prompt) == row


def test_clean_turn_strips_labels_and_quotes():
    assert clean_turn('  Assistant: "Hello there."  ') == "Hello there."
    assert clean_turn("Customer: I'd like Lisbon.") == "I'd like Lisbon."
    assert clean_turn("Plain text.") == "Plain text."


def test_cli_synthesize_dry_run_and_run(tmp_path, capsys):
    from subterra.cli import main

    (tmp_path / "toy.yaml").write_text(TOY)
    assert main(["synthesize", "--domain", str(tmp_path / "toy.yaml"), "--teacher", "anthropic", "--n", "100",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "100 dialogues" in out and "calls to claude-sonnet-5-5" in out and "$" in out
    assert not (tmp_path / "out").exists()
    assert main(["synthesize", "--domain", str(tmp_path / "toy.yaml"), "--teacher", "offline", "--n", "20",
                 "--out", str(tmp_path / "out")]) == 0
    assert len(load_corpus(tmp_path / "out")["train"]) == 18


@pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")
@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_synthesis_through_a_flaky_api_produces_every_dialogue_once(api, toy, tmp_path):
    from test_backends_remote import FakeServer, anthropic_backend, openai_backend

    server = FakeServer(fail_rate=0.3, latency=0.001)
    backend = (anthropic_backend if api == "anthropic" else openai_backend)(server, max_concurrency=6)
    result = synthesize(toy, 16, tmp_path, backend, progress=False, concurrency=8)
    assert result.complete and result.written_now == 16
    rows = read_dialogues(tmp_path / "dialogues.jsonl")
    assert sorted(r["id"] for r in rows) == sorted(d for d, _, _ in plan_corpus(toy, 16).assignments)
    turns = sum(len(r["nodes"]) for r in rows)
    assert sum(server.faults.values()) > 0, "the fake server injected no fault"
    assert result.calls == turns == sum(server.served.values())
    assert all(m["content"].startswith("reply to:") for r in rows for m in r["messages"][1:])
    assert rows[0]["backend"] == api and rows[0]["input_tokens"] > 0


def test_the_personas_challenges_are_written_into_the_dialogues():
    """Each persona's challenge is in its dialogue, as the simulated customer poses it, in the teacher's own words."""
    from subterra.backends import get_backend, run_sync
    from subterra.conformance import spoken
    from subterra.customer import GIVE_UP, OFF_TOPIC, PARTIAL
    from subterra.synthesis import ASIDES, CLOSES, LEAVES, REASKS, script_dialogue, write_dialogue

    wf = load_domain("travel")
    paths = enumerate_paths(wf)
    offline = get_backend("offline")
    seen = {}
    for i in range(120):
        path = paths[i % len(paths)]
        scenario = sample_scenario(wf, path, 0, f"c{i}")
        dialogue = run_sync(write_dialogue(wf, path, scenario, offline, f"c{i}"))
        style, turns = scenario.persona.challenge, dialogue.turns
        nodes = [t.node for t in turns]
        script = script_dialogue(wf, path, scenario)
        moves = [step.move for step in script]
        path_nodes = list(path.nodes)
        text = " ".join(t.content for t in turns)
        assert not any(phrase in text for phrase in OFF_TOPIC + PARTIAL + GIVE_UP)   # new wording for the harness
        assert [step.node for step in script] == nodes
        seen[style] = seen.get(style, 0) + 1
        if style == "none":
            assert nodes == path_nodes
        elif style == "off_topic":
            k = next(k for k, t in enumerate(turns) if any(t.content.startswith(a) for a in ASIDES))
            assert nodes == path_nodes and moves[k:k + 2] == ["aside", "after_aside"]
        elif style == "gives_up":
            assert nodes[-2:] == [None, None] and nodes[:-2] == path_nodes[:len(nodes) - 2]
            assert turns[-2].content in LEAVES and turns[-1].content in CLOSES and turns[-1].role == "assistant"
        elif style == "partial_answers" and None in nodes:
            k = nodes.index(None)
            # half an answer, the same step asked again, then the whole answer: the path with two turns added
            assert turns[k].role == "user" and nodes[k + 1] == nodes[k - 1]
            assert any(turns[k + 1].content.startswith(r) for r in REASKS)
            assert nodes[:k] + nodes[k + 2:] == path_nodes
        elif style == "corrects_earlier" and "slip" in moves:
            slip, fix = moves.index("slip"), moves.index("correct")
            info = script[slip].info
            meant, wrong = spoken(info["meant"]), spoken(info["wrong"])
            assert nodes == path_nodes and slip < fix and meant == spoken(scenario.values[info["name"]])
            assert wrong in turns[slip].content and meant not in turns[slip].content
            assert meant in turns[fix].content and wrong in turns[fix].content
            # heard as said until the correction, the corrected value from there on
            assert not any(meant in t.content for t in turns[slip + 1:fix] if t.role == "assistant")
            assert not any(wrong in t.content for t in turns[fix + 1:] if t.role == "assistant")
        elif style == "two_answers" and "both" in moves:
            k, again = moves.index("both"), moves.index("again")
            assert nodes == path_nodes and script[k].info["next"] == nodes[again] and again > k + 1
    assert set(seen) == {"none", "off_topic", "partial_answers", "corrects_earlier", "two_answers", "gives_up"}


def test_a_real_teacher_is_told_each_challenge(toy, tmp_path):
    """With a model as teacher, the persona's moves reach it as instructions, one call per scripted turn."""
    from subterra.synthesis import script_dialogue, turn_request

    wf = load_domain("travel")
    path = max(enumerate_paths(wf), key=len)
    for i in range(400):
        scenario = sample_scenario(wf, path, 0, f"t{i}")
        if scenario.persona.challenge == "partial_answers":
            break
    script = script_dialogue(wf, path, scenario)
    moves = [s.move for s in script]
    assert "partial" in moves and "reask" in moves and len(script) == len(path.nodes) + 2
    prompts = [turn_request(wf, script, k, scenario, []).messages[0]["content"] for k in range(len(script))]
    assert "only part of the answer" in prompts[moves.index("partial")]
    assert "ask again for the rest" in prompts[moves.index("reask")]


def test_the_offline_teacher_has_the_customer_say_its_branch(tmp_path):
    """A dialogue whose path goes from upload_attempt back to ask_evidence has the customer name the upload's
    error (the failed branch's own words); one that goes on to item_logged never does."""
    wf = load_domain("insurance")
    synthesize(wf, 60, tmp_path, "offline", seed=3, progress=False)
    ways = {"ask_evidence": 0, "item_logged": 0}
    for row in read_dialogues(tmp_path / "dialogues.jsonl"):
        error = json.loads(row["scenario"])["values"]["upload_error"]
        turns, nodes = row["messages"][1:], row["nodes"]
        for k, node in enumerate(nodes[:-1]):
            if node == "upload_attempt":
                assert (error in turns[k]["content"]) == (nodes[k + 1] == "ask_evidence"), turns[k]["content"]
                ways[nodes[k + 1]] += 1
    assert min(ways.values()) >= 5, ways
