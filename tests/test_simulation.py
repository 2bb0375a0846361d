"""Notebook 05 / subterra.simulation: the simulated customer, the conditions, resumable paired runs."""

import json
import time
from pathlib import Path

import pytest

from subterra import enumerate_paths, load_domain, parse_workflow
from subterra.simulation import (STOP, InContext, Orchestrated, OfflineUser, Subterranean, converse,
                                 evaluation_scenarios, extract_values, load_transcripts, serialise_workflow,
                                 simulate)
from conftest import ROOT, TOY, recorded_workflow


class Killed(BaseException):
    pass


@pytest.fixture(scope="module")
def toy():
    return parse_workflow(TOY, source="toy.yaml")


@pytest.fixture(scope="module")
def tiny_agent(tmp_path_factory, toy):
    from subterra.agent import Agent
    from subterra.synthesis import load_corpus, synthesize
    from subterra.training import train
    from test_training import TINY

    data = tmp_path_factory.mktemp("corpus")
    synthesize(toy, 120, data, "offline", progress=False)
    model_dir = tmp_path_factory.mktemp("model")
    train(load_corpus(data), model_dir, None, max_steps=3, **TINY)
    return Agent(model_dir, max_new_tokens=12)


def test_evaluation_scenarios_are_held_out_and_identical_for_every_condition(toy):
    first, again = evaluation_scenarios(toy, 30, seed=4), evaluation_scenarios(toy, 30, seed=4)
    assert [s.to_json() for s in first] == [s.to_json() for s in again]
    assert len({s.id for s in first}) == 30
    assert all(s.values["city"] == "Braga" and s.held_out for s in first)
    assert {s.path_id for s in first} == {p.id for p in enumerate_paths(toy)}


def test_extract_values_hears_only_what_was_said(toy):
    heard = extract_values(toy, "A trip to Braga, budget 900. The Night desk is open.")
    assert heard["city"] == "Braga" and heard["budget"] == 900 and heard["desk"]["name"] == "Night desk"
    assert "price" not in heard


def test_offline_customer_follows_its_scenario_against_a_perfect_controller(toy):
    paths = {p.id: p for p in enumerate_paths(toy)}
    adherent = 0
    scenarios = evaluation_scenarios(toy, 24)
    for scenario in scenarios:
        path = paths[scenario.path_id]
        transcript = converse(Orchestrated(toy), OfflineUser(toy, scenario, path), toy, scenario, path)
        assert transcript.stop_reason.startswith("terminal:") or transcript.challenged, transcript
        assert transcript.messages[0]["role"] == "assistant"
        adherent += transcript.valid_path and transcript.right_ending
    assert adherent >= 0.8 * len(scenarios)


def test_offline_customer_corrects_a_wrong_value_and_stops_on_loops(toy):
    from dataclasses import replace

    from subterra.scenarios import Persona

    path = next(p for p in enumerate_paths(toy) if "accept" in p.nodes)
    scenario = evaluation_scenarios(toy, 6)[0]
    scenario = replace(scenario, persona=Persona("polite", "plain", "corrects_value"))
    user = OfflineUser(toy, scenario, path)
    reply = user.respond([{"role": "assistant", "content": "I found Lisbon for 300."}])
    assert reply.challenge and "Braga" in reply.text
    looping = OfflineUser(toy, scenario, path)
    stuck = [{"role": "assistant", "content": "Hello, which city?"}]
    reasons = [looping.respond(stuck).reason for _ in range(3)]
    assert reasons[-1] == "loop"
    assert looping.respond([{"role": "assistant", "content": "Booked Braga!"}]).text == STOP


def test_a_step_said_again_word_for_word_is_no_loop_until_it_comes_three_times_running(travel_summary):
    """A deterministic agent revisiting the booking summary (after a correction, after the options again) says it
    word for word; the customer leaves only when the same message comes three times in a row."""
    new_user, summary, offer = travel_summary
    user = new_user()
    reasons = [user.respond([{"role": "assistant", "content": text}]).reason
               for text in (summary, summary, offer, summary)]
    assert "loop" not in reasons
    stuck = new_user()
    assert [stuck.respond([{"role": "assistant", "content": summary}]).reason for _ in range(3)][-1] == "loop"


@pytest.fixture
def travel_summary():
    """(a new customer on a path through the booking summary three times, the summary, the offer) in travel."""
    from subterra import render

    travel = load_domain("travel")
    path = next(p for p in enumerate_paths(travel) if p.nodes.count("booking_summary") >= 3)
    scenario = next(s for s in evaluation_scenarios(travel, 40) if s.persona.challenge == "none")
    values = {**scenario.values, "airline": "Swiss", "flight_number": "1830", "departure_time": "10:00 am",
              "price": 2700}
    summary = render(travel.nodes["booking_summary"].examples[0], values)
    offer = render(travel.nodes["offer_flights"].examples[0], values)
    return (lambda: OfflineUser(travel, scenario, path)), summary, offer


def test_subterranean_condition_uses_only_the_one_line_prompt(toy, tiny_agent):
    seen = []
    original = tiny_agent.reply_batch

    def spy(chats, **options):
        seen.extend(chats)
        return original(chats, **options)

    tiny_agent.reply_batch = spy
    try:
        scenario = evaluation_scenarios(toy, 1)[0]
        path = {p.id: p for p in enumerate_paths(toy)}[scenario.path_id]
        transcript = converse(Subterranean(tiny_agent, toy), OfflineUser(toy, scenario, path, max_turns=8), toy,
                              scenario, path, max_turns=8)
    finally:
        tiny_agent.reply_batch = original
    assert all(chat[0] == {"role": "system", "content": toy.system_prompt} for chat in seen)
    assert all(m["role"] != "system" for chat in seen for m in chat[1:])
    assert transcript.agent_turns >= 1 and all(t > 0 for t in transcript.prompt_tokens)
    # prompt tokens count the whole templated chat, which grows every turn
    assert transcript.prompt_tokens[0] > len(toy.system_prompt.split())
    assert all(a < b for a, b in zip(transcript.prompt_tokens, transcript.prompt_tokens[1:]))
    assert transcript.dollars > 0 and transcript.stop_reason in ("turn_limit", "loop", "not_understood") or \
        transcript.stop_reason.startswith("terminal:")


def test_orchestrated_condition_injects_the_node_prompt_into_the_small_model(toy, tiny_agent):
    seen = []
    original = tiny_agent.reply_batch
    tiny_agent.reply_batch = lambda chats, **o: (seen.extend(chats), original(chats, **o))[1]
    try:
        scenario = evaluation_scenarios(toy, 1)[0]
        path = {p.id: p for p in enumerate_paths(toy)}[scenario.path_id]
        converse(Orchestrated(toy, tiny_agent), OfflineUser(toy, scenario, path, max_turns=6), toy, scenario, path,
                 max_turns=6)
    finally:
        tiny_agent.reply_batch = original
    assert seen and seen[0][0]["content"].startswith(toy.system_prompt + "\nCurrent step: Greet the customer")


def test_simulate_pairs_conditions_records_failures_and_resumes(toy, tmp_path):
    class Flaky(Orchestrated):
        name = "flaky"

        def respond(self, messages):
            if self.scenario_id.endswith("3"):
                raise ValueError("model server went away")
            return super().respond(messages)

    class Dying(Orchestrated):
        name = "dying"
        calls = 0

        def reset(self, scenario):
            Dying.calls += 1
            if Dying.calls == 7:
                raise Killed()
            super().reset(scenario)

    results = simulate(toy, [Orchestrated(toy), Flaky(toy)], tmp_path, n=12, progress=False)
    ids = [r["scenario_id"] for r in results["orchestrated"]]
    assert ids == [r["scenario_id"] for r in results["flaky"]] and len(set(ids)) == 12
    failed = [r for r in results["flaky"] if r["error"]]
    assert failed and all(r["stop_reason"] == "error" and "went away" in r["error"] for r in failed)
    assert len(load_transcripts(tmp_path, "flaky")) == 12

    with pytest.raises(Killed):
        simulate(toy, [Dying(toy)], tmp_path, n=12, progress=False)
    lines = (tmp_path / "dying" / "transcripts.jsonl").read_text().splitlines()
    assert len(lines) == 6
    resumed = simulate(toy, [Dying(toy)], tmp_path, n=12, progress=False)["dying"]
    assert [r["scenario_id"] for r in resumed] == ids
    assert len((tmp_path / "dying" / "transcripts.jsonl").read_text().splitlines()) == 12
    assert Dying.calls == 7 + 6   # the six finished conversations were not run again


@pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")
@pytest.mark.parametrize("kind", ["in_context", "langgraph"])
def test_frontier_conditions_against_a_fake_api(kind, toy):
    from test_backends_remote import FakeServer, anthropic_backend

    server = FakeServer(fail_rate=0.2, latency=0.001)
    backend = anthropic_backend(server)
    if kind == "in_context":
        condition = InContext(toy, backend)
    else:
        from subterra.langgraph_agent import LangGraphCondition

        condition = LangGraphCondition(toy, backend)
    scenario = evaluation_scenarios(toy, 1)[0]
    path = {p.id: p for p in enumerate_paths(toy)}[scenario.path_id]
    transcript = converse(condition, OfflineUser(toy, scenario, path, max_turns=8), toy, scenario, path, max_turns=8)
    assert transcript.error is None and transcript.agent_turns >= 2
    assert all(m["content"].startswith("reply to:") for m in transcript.messages if m["role"] == "assistant")
    assert transcript.dollars > 0 and all(t > 0 for t in transcript.prompt_tokens)
    systems = [body.get("system") for _, _, body in server.calls]
    if kind == "in_context":
        assert all("Follow this procedure" in s[0]["text"] for s in systems)
    else:
        assert any("Current step:" in s[0]["text"] for s in systems)


def test_a_langgraph_step_gets_the_catalogue_tables_its_prompt_names(toy):
    """A step that hands over to ``{desk.name}`` needs the desks to say which one; the in-context prompt has the
    whole catalogue, a LangGraph node the tables its own prompt reads (and no others)."""
    from test_backends_remote import FakeServer, anthropic_backend

    from subterra.backends import Usage
    from subterra.conditions import catalogue_tables
    from subterra.langgraph_agent import LangGraphCondition

    server = FakeServer(latency=0.001)
    condition = LangGraphCondition(toy, anthropic_backend(server))
    handover = next(n for n in toy.nodes.values() if "{desk.name}" in n.prompt)
    assert catalogue_tables(toy, handover.prompt) == ["desk"] and catalogue_tables(toy, "Say goodbye.") == []
    for node in (handover.id, toy.start):
        condition._speaker(node)({"messages": [], "node": node, "reply": "", "usage": Usage(), "dollars": 0.0})
    handover_system, start_system = (body["system"][0]["text"] for _, _, body in server.calls)
    assert "Reference: desk" in handover_system and "Night desk" in handover_system
    assert "Reference" not in start_system


def test_serialised_workflow_carries_every_node_and_condition(toy):
    text = serialise_workflow(toy)
    assert all(node.prompt in text for node in toy.nodes.values())
    assert all(e.when in text for e in toy.edges if e.when)
    assert "Night desk" in text


def test_orchestrated_speaker_follows_what_the_model_can_do(toy, tiny_agent, tmp_path):
    import shutil

    from subterra.simulation import build_conditions, follows_instructions

    scratch = Path(tiny_agent.model.name_or_path)
    assert not follows_instructions(scratch)            # trained from scratch: it never saw a node prompt
    (auto,), _ = build_conditions(["orchestrated"], toy, scratch)
    assert auto.agent is None
    (forced,), _ = build_conditions(["orchestrated"], toy, scratch, orchestrated_speaker="model")
    assert forced.agent is not None
    base = tmp_path / "base"                            # a model from elsewhere (no training record)
    shutil.copytree(scratch, base, ignore=shutil.ignore_patterns("training.json", "checkpoint-*"))
    assert follows_instructions(base)
    (pretrained,), _ = build_conditions(["orchestrated"], toy, base)
    assert pretrained.agent is not None                 # a base given as the model: its weights, called the base
    assert pretrained.label == f"base {base} under the controller", pretrained.label
    with pytest.raises(ValueError, match="orchestrated_speaker"):
        build_conditions(["orchestrated"], toy, None, orchestrated_speaker="gpt")


class ScriptedSpeaker:
    """A deterministic 'model': its reply depends only on the chat it is given (never on its batch-mates)."""

    def __init__(self, workflow, tokenizer, die_at: int | None = None):
        self.agent_nodes = [n for n in workflow.nodes.values() if n.role == "agent"]
        self.tokenizer, self.die_at, self.calls, self.widths = tokenizer, die_at, 0, []

    def reply_batch(self, chats, **options):
        self.calls += 1
        self.widths.append(len(chats))
        if self.die_at is not None and self.calls == self.die_at:
            raise Killed()
        out = []
        for chat in chats:
            said = sum(len(m["content"]) for m in chat)
            node = self.agent_nodes[said % len(self.agent_nodes)]
            out.append(node.examples[said % len(node.examples)].replace("{city}", "Braga").replace("{price}", "300"))
        return out


def _without_timing(rows):
    return [{k: v for k, v in r.items() if k not in ("turn_seconds", "dollars")} for r in rows]


def test_batched_and_one_at_a_time_simulation_give_the_same_transcripts(toy, tiny_agent, tmp_path):
    speaker = ScriptedSpeaker(toy, tiny_agent.tokenizer)
    alone = simulate(toy, [Subterranean(speaker, toy)], tmp_path / "alone", n=16, progress=False, batch_size=1)
    assert set(speaker.widths) == {1}
    speaker = ScriptedSpeaker(toy, tiny_agent.tokenizer)
    together = simulate(toy, [Subterranean(speaker, toy)], tmp_path / "batched", n=16, progress=False, batch_size=6)
    assert max(speaker.widths) == 6 and len(set(speaker.widths)) > 1      # conversations leave as they end
    assert _without_timing(together["subterranean"]) == _without_timing(alone["subterranean"])
    lengths = {len(r["messages"]) for r in alone["subterranean"]}
    assert len(lengths) > 1                                                # so batch membership really changed


def test_langgraph_on_a_local_model_gathers_its_calls_into_batches(toy, tiny_agent, tmp_path):
    """LangGraph makes its own calls, one per graph node; run side by side, they reach the model together
    and the transcripts are those of one conversation at a time."""
    from subterra.backends.local import LocalBackend
    from subterra.langgraph_agent import LangGraphCondition

    runs, widths = {}, {}
    for width in (1, 5):
        speaker = ScriptedSpeaker(toy, tiny_agent.tokenizer)
        speaker.max_new_tokens = 12
        backend = LocalBackend("scripted", priced_as="claude-sonnet-5-5", agent=speaker)
        runs[width] = simulate(toy, [LangGraphCondition(toy, backend)], tmp_path / str(width), n=12,
                               progress=False, batch_size=width, max_turns=10)["langgraph"]
        widths[width] = speaker.widths
    assert set(widths[1]) == {1} and max(widths[5]) == 5
    assert len(widths[5]) < len(widths[1]) / 2                 # far fewer calls to the model
    assert _without_timing(runs[5]) == _without_timing(runs[1])
    assert all(r["error"] is None for r in runs[5]), [r["error"] for r in runs[5]]


def test_a_kill_mid_round_resumes_with_no_conversation_lost_or_repeated(toy, tiny_agent, tmp_path):
    reference = simulate(toy, [Subterranean(ScriptedSpeaker(toy, tiny_agent.tokenizer), toy)], tmp_path / "ref",
                         n=16, progress=False, batch_size=5)["subterranean"]
    dying = ScriptedSpeaker(toy, tiny_agent.tokenizer, die_at=4)
    with pytest.raises(Killed):
        simulate(toy, [Subterranean(dying, toy)], tmp_path / "run", n=16, progress=False, batch_size=5)
    jsonl = tmp_path / "run" / "subterranean" / "transcripts.jsonl"
    written = len(jsonl.read_text().splitlines())
    assert 0 < written < 16
    resumed = simulate(toy, [Subterranean(ScriptedSpeaker(toy, tiny_agent.tokenizer), toy)], tmp_path / "run",
                       n=16, progress=False, batch_size=5)["subterranean"]
    ids = [json.loads(line)["scenario_id"] for line in jsonl.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 16
    assert _without_timing(resumed) == _without_timing(reference)


def test_batched_turns_record_the_wait_of_their_own_conversation(toy, tiny_agent, tmp_path):
    class Slow(ScriptedSpeaker):
        def reply_batch(self, chats, **options):
            time.sleep(0.05)
            return super().reply_batch(chats)

    rows = simulate(toy, [Subterranean(Slow(toy, tiny_agent.tokenizer), toy)], tmp_path, n=6, progress=False,
                    batch_size=6)["subterranean"]
    assert all(0.05 <= s < 1.0 for r in rows for s in r["turn_seconds"])


def test_without_a_key_the_base_model_is_orchestrated_and_stands_in_for_the_frontier(toy, tiny_agent, tmp_path):
    import shutil

    from subterra.backends.local import LocalBackend
    from subterra.simulation import base_of, build_conditions

    scratch = Path(tiny_agent.model.name_or_path)
    base = tmp_path / "base"                          # a "pretrained" model: no training record
    shutil.copytree(scratch, base, ignore=shutil.ignore_patterns("training.json", "checkpoint-*"))
    compiled = tmp_path / "compiled"                  # fine-tuned from it
    shutil.copytree(scratch, compiled, ignore=shutil.ignore_patterns("checkpoint-*"))
    record = json.loads((compiled / "training.json").read_text())
    record["recipe"]["model_name_or_path"] = str(base)
    (compiled / "training.json").write_text(json.dumps(record))
    assert base_of(compiled) == str(base) and base_of(scratch) is None and base_of(base) == str(base)

    conditions, skipped = build_conditions(["subterranean", "orchestrated", "in_context", "langgraph", "oracle"],
                                           toy, compiled)
    by_name = {c.name: c for c in conditions}
    assert not skipped and set(by_name) == {"subterranean", "orchestrated", "in_context", "langgraph", "oracle"}
    orchestrated, subterranean = by_name["orchestrated"], by_name["subterranean"]
    assert orchestrated.agent is not subterranean.agent                       # the same model before compiling
    assert orchestrated.agent.model.name_or_path == str(base) and "base" in orchestrated.label
    stand_in = by_name["in_context"].backend
    assert isinstance(stand_in, LocalBackend) and stand_in.agent is orchestrated.agent
    assert stand_in.priced_as == "claude-sonnet-5-5" and "stand-in" in by_name["langgraph"].label
    assert by_name["in_context"].speaker is orchestrated.agent                # its turns are batched

    scenario = evaluation_scenarios(toy, 1)[0]
    path = {p.id: p for p in enumerate_paths(toy)}[scenario.path_id]
    turn = by_name["in_context"].respond([])
    assert turn.dollars > 0 and turn.prompt_tokens > 100                     # the whole workflow, priced as Claude
    t = converse(by_name["langgraph"], OfflineUser(toy, scenario, path, max_turns=4), toy, scenario, path,
                 max_turns=4)
    assert t.error is None and t.agent_turns >= 1 and t.label == by_name["langgraph"].label

    _, skipped = build_conditions(["in_context"], toy, compiled, stand_in=False)
    assert skipped and "ANTHROPIC_API_KEY" in skipped[0]
    (script,), _ = build_conditions(["orchestrated"], toy, scratch)          # no base: the script, said so
    assert script.agent is None and "script" in script.label
    with pytest.raises(ValueError, match="no base model"):
        build_conditions(["orchestrated"], toy, scratch, orchestrated_speaker="base")


def test_a_customer_who_cannot_make_out_the_agent_leaves(toy):
    scenario = evaluation_scenarios(toy, 1)[0]
    path = {p.id: p for p in enumerate_paths(toy)}[scenario.path_id]
    user = OfflineUser(toy, scenario, path)
    messages = []
    for k in range(3):
        messages.append({"role": "assistant", "content": f"zzkq {k} xqwv plorb"})
        reply = user.respond(messages)
        messages.append({"role": "user", "content": reply.text})
    assert reply.stop and reply.reason == "not_understood"


RECORDS = sorted((ROOT / "data/results").glob("*/**/*.transcripts.jsonl.gz"))     # <domain>/[curve/]<run>


def _domain(record):
    return record.relative_to(ROOT / "data/results").parts[0]


def test_the_full_settings_records_are_in_place():
    """The full settings of docs/results.md pair with these; without them the replay test would collect nothing."""
    held = {(_domain(r), r.name.split(".")[0]) for r in RECORDS}
    for domain in ("travel", "zoom"):
        assert {(domain, "orchestrated"), (domain, "subterranean")} <= held, domain


@pytest.mark.parametrize("record", RECORDS, ids=[str(r.relative_to(ROOT / "data/results")).split(".")[0]
                                                 for r in RECORDS])
def test_a_recorded_run_replays_under_the_current_customer(record):
    # data/results/<domain> holds runs that the full setting pairs with instead of repeating them (travel's
    # orchestrator: 78 minutes): a record is only good while its scenarios are the ones `simulate` draws and the
    # offline customer, fed the recorded agent turns, says what it said then, word for word, and ends the
    # conversation the same way. A slow condition may hold the first N of the 200 scenarios (still paired).
    import gzip

    from subterra.scenarios import Scenario

    workflow = recorded_workflow(_domain(record))
    with gzip.open(record, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    drawn = evaluation_scenarios(workflow, 200)
    scenarios = {s.id: s for s in drawn[:len(rows)]}
    assert sorted(r["scenario_id"] for r in rows) == sorted(scenarios)      # written as each one ended
    paths = {p.id: p for p in enumerate_paths(workflow)}
    for row in rows:
        scenario, messages, reason = scenarios[row["scenario_id"]], row["messages"], row["stop_reason"]
        assert Scenario.from_json(row["scenario"]) == scenario, scenario.id
        assert reason != "error", (scenario.id, row["error"])
        user, said_last = OfflineUser(workflow, scenario, paths[scenario.path_id]), None
        for i, message in enumerate(messages):
            if message["role"] == "user":
                said_last = user.respond(messages[:i])
                assert said_last.text == message["content"], (scenario.id, i)
        if said_last is not None and said_last.stop:                 # the customer's own last word ended it
            assert said_last.reason == reason, (scenario.id, said_last)
        elif messages[-1]["role"] == "assistant":                    # the customer left after the agent spoke
            last = user.respond(messages)
            assert last.stop and last.reason == reason, (scenario.id, last)
        else:                                                        # out of turns after the customer spoke
            assert (reason, len(messages)) == ("turn_limit", user.max_turns), scenario.id


def test_the_customer_says_which_way_its_upload_went_and_the_controller_hears_it():
    """insurance's upload_attempt branches on what the customer saw (arrived, or an error on screen). Its failed
    branch has its own words, so a listener can tell the two apart: the customer names the error exactly when its
    path goes back to ask_evidence, the oracle follows it, and the orchestrator's router takes
    the branch the words name (before, both branches were said alike and no agent could know which to take)."""
    from subterra.simulation import Oracle

    wf = load_domain("insurance")
    paths = {p.id: p for p in enumerate_paths(wf)}
    scenarios = evaluation_scenarios(wf, 200)
    ways = {"ask_evidence": 0, "item_logged": 0}
    for scenario in scenarios[:40]:
        path = paths[scenario.path_id]
        transcript = converse(Oracle(wf), OfflineUser(wf, scenario, path), wf, scenario, path)
        messages, nodes = [m for m in transcript.messages if m["role"] != "system"], transcript.trace_nodes
        for k, node in enumerate(nodes[:-1]):
            if node == "upload_attempt":
                error = scenario.values["upload_error"] in messages[k]["content"]
                assert error == (nodes[k + 1] == "ask_evidence"), (scenario.id, messages[k]["content"])
                ways[nodes[k + 1]] += 1
    assert min(ways.values()) >= 3, ways
    router = Orchestrated(wf)
    router.reset(scenarios[0])
    assert router.choose("upload_attempt", {}, "Hmm, it failed. The screen says the link has expired.") == "ask_evidence"
    router.reset(scenarios[0])
    assert router.choose("upload_attempt", {}, "Alright, that should be uploaded now.") == "item_logged"


def test_a_role_played_customer_is_told_which_way_its_upload_goes():
    """The offline customer follows its path; a customer role-played by a model (LLMUser) knew its facts but not
    that its upload would fail, so it could not say so. Its instructions now say, pass by pass and in order, what
    happens on its side where its words decide the branch, with the error it sees."""
    from subterra.backends import Completion, Usage
    from subterra.customer import LLMUser

    class Stub:
        name, model = "stub", "stub"

        def __init__(self):
            self.requests = []

        def complete(self, request):
            self.requests.append(request)
            return Completion("I uploaded them.", Usage(1, 1), "stub", "stub")

    wf = load_domain("insurance")
    paths = {p.id: p for p in enumerate_paths(wf)}

    def uploads(s):
        nodes = paths[s.path_id].nodes
        return [b for a, b in zip(nodes, nodes[1:]) if a == "upload_attempt"]

    scenarios = evaluation_scenarios(wf, 200)
    failed = next(s for s in scenarios if uploads(s)[:2] == ["ask_evidence", "item_logged"])
    arrived = next(s for s in scenarios if uploads(s) == ["item_logged"])
    backend = Stub()
    LLMUser(wf, failed, paths[failed.path_id], backend).respond([{"role": "assistant", "content": "Hello."}])
    system = backend.requests[0].system
    error = str(failed.values["upload_error"])
    assert error in system and system.index("The upload fails") < system.index("The upload arrives safely")
    system = LLMUser(wf, arrived, paths[arrived.path_id], Stub()).system
    assert "The upload arrives safely" in system and "The upload fails" not in system
    travel = load_domain("travel")
    scenario = evaluation_scenarios(travel, 1)[0]
    path = {p.id: p for p in enumerate_paths(travel)}[scenario.path_id]
    assert "What happens on your side" not in LLMUser(travel, scenario, path, Stub()).system
