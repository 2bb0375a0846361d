"""subterra.tools and the workflow format's tools: declared, validated, answered for a scenario."""

import json

import pytest

from subterra import WorkflowError, enumerate_paths, load_domain, parse_workflow
from subterra.scenarios import sample_scenario
from subterra.tools import Environment, ToolCall, ToolError, call_in, read_call
from subterra.workflow import workflow_file

TOOLS = workflow_file("travel_tools").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def wf():
    return load_domain("travel_tools")


def test_travel_with_tools_keeps_travels_shape_and_every_path_has_a_scenario(wf):
    travel = load_domain("travel")
    paths = enumerate_paths(wf)
    assert (len(wf.nodes), len(wf.decision_hubs), len(paths)) == (15, 3, 86) == (
        len(travel.nodes) + 1, len(travel.decision_hubs), len(enumerate_paths(travel)))
    assert {n.id: n.call for n in wf.nodes.values() if n.call} == {
        "offer_flights": "search_flights", "payment_declined": "charge_card", "booking_confirmed": "charge_card",
        "specialist_handoff": "charge_card"}
    assert wf.tools["charge_card"].returns == ("booking_ref", "booking")
    assert wf.values_of("booking") == ("confirmed", "declined", "referred")
    for path in paths:                                   # an outcome's check never makes a path unsatisfiable
        sample_scenario(wf, path, 0, f"s-{path.id}")
    assert travel.tools == {} and not any(n.call for n in travel.nodes.values())


@pytest.mark.parametrize("old, new, expect", [
    ("    call: search_flights\n", "    call: search_flight\n",
     ("node 'offer_flights'", "field 'nodes[2].call'", "unknown tool 'search_flight'", "tools: charge_card")),
    ("  - id: trip_request\n    role: user\n", "  - id: trip_request\n    role: user\n    call: search_flights\n",
     ("node 'trip_request'", "only an agent turn calls a tool")),
    ("    arguments: [card_last4, special_request]\n", "    arguments: [card_number, special_request]\n",
     ("field 'tools.charge_card.arguments[0]'", "'card_number' in arguments is not a variable")),
    ("    results: [booking_ref]\n    outcome: {booking: [confirmed, declined, referred]}\n", "",
     ("field 'tools.charge_card'", "returns nothing")),
    ("    outcome: {booking: [confirmed, declined, referred]}\n", "    outcome: booking\n",
     ("field 'tools.charge_card.outcome'", "expected a mapping")),
    ("    outcome: {booking: [confirmed, declined, referred]}\n", "    outcome: {booking: [confirmed]}\n",
     ("outcome 'booking' needs a list of two or more values",)),
    ("    outcome: {booking: [confirmed, declined, referred]}\n", "    outcome: {price: [confirmed, declined]}\n",
     ("outcome 'price' has the name of a variable",)),
    ("    results: [airline, flight_number, departure_time, price]\n",
     "    results: [airline, flight_number, departure_time, price, booking_ref]\n",
     ("tool 'charge_card' returns 'booking_ref', which tool 'search_flights' returns too",)),
    ("  - id: payment_declined\n    role: agent\n    call: charge_card\n", "  - id: payment_declined\n    role: agent\n",
     ("node 'confirm_booking'", "edge confirm_booking -> payment_declined reads 'booking'",
      "neither 'confirm_booking' nor 'payment_declined' calls it")),
    ("    call: search_flights\n", "",
     ("field 'tools.search_flights'", "tool 'search_flights' is called by no node")),
    ("    check: booking == 'declined'\n", "    check: bookng == 'declined'\n", ("undefined variable 'bookng'",)),
    ("scenarios_from: travel ", "scenarios_from: Travel ", ("field 'scenarios_from'", "must name a workflow")),
    ("    check: booking == 'declined'\n", "    check: booking > 3\n", ("incompatible types",)),
])
def test_tool_errors_name_file_line_node_field(old, new, expect):
    assert old in TOOLS
    with pytest.raises(WorkflowError) as info:
        parse_workflow(TOOLS.replace(old, new, 1), source="tools.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("tools.yaml:"), message
    for fragment in expect:
        assert fragment in message, message


def scenario_on(wf, *steps):
    """A held-out scenario on the first path that walks through ``steps`` in this order."""
    for path in enumerate_paths(wf):
        at = [path.nodes.index(s) if s in path.nodes else -1 for s in steps]
        if min(at) >= 0 and at == sorted(at):
            return sample_scenario(wf, path, 0, f"t-{path.id}", held_out=True), path
    raise AssertionError(steps)


def test_the_environment_answers_from_the_scenario_and_the_path(wf):
    scenario, path = scenario_on(wf, "payment_declined", "booking_confirmed")
    env = Environment(wf, scenario, path)
    v = scenario.values
    found = env.answer({"name": "search_flights", "arguments": {k: v[k] for k in wf.tools["search_flights"].arguments}})
    assert found == {k: v[k] for k in ("airline", "flight_number", "departure_time", "price")}
    card = {"card_last4": v["card_last4"], "special_request": v["special_request"]}
    assert env.answer(ToolCall("charge_card", card)) == {"booking_ref": v["booking_ref"], "booking": "declined"}
    assert env.answer(json.dumps({"name": "charge_card", "arguments": {**card, "card_last4": v["other_card"]}})) == {
        "booking_ref": v["booking_ref"], "booking": "confirmed"}
    assert env.answer(ToolCall("charge_card", card))["booking"] == "confirmed"       # past the path: its last answer
    assert [a.failed for a in env.log] == [False] * 4
    booked, path = scenario_on(wf, "booking_confirmed")
    assert "payment_declined" not in path.nodes
    assert Environment(wf, booked, path).answer(ToolCall("charge_card", card))["booking"] == "confirmed"
    walked, path = scenario_on(wf, "walk_away")                 # a path that never pays: the first outcome
    assert Environment(wf, walked, path).answer(ToolCall("charge_card", card))["booking"] == "confirmed"


@pytest.mark.parametrize("call, reason", [
    ('{"name": "search_flights", "arguments": {', "not valid JSON"),
    ('["search_flights"]', "a call is a JSON object"),
    ({"name": "book_hotel", "arguments": {}}, "unknown tool 'book_hotel' (tools: charge_card, search_flights)"),
    ({"arguments": {}}, "unknown tool None"),
    ({"name": "charge_card", "arguments": {}}, "charge_card: missing arguments card_last4, special_request"),
    ({"name": "charge_card", "arguments": {"card_last4": "1234"}}, "charge_card: missing argument special_request"),
    ({"name": "charge_card", "arguments": {"card_last4": "1234", "special_request": "None.", "cvv": "999"}},
     "charge_card: unexpected argument cvv (it takes card_last4, special_request)"),
    ({"name": "charge_card", "arguments": "{not json"}, "arguments are not valid JSON"),
    ({"name": "charge_card", "arguments": [1]}, "the arguments must be a JSON object"),
])
def test_a_call_that_cannot_be_answered_is_an_error_the_agent_sees(wf, call, reason):
    with pytest.raises(ToolError) as info:
        read_call(wf, call)
    assert reason in str(info.value)
    scenario, path = scenario_on(wf, "booking_confirmed")
    env = Environment(wf, scenario, path)
    answer = env.answer(call)                                  # never raises
    assert answer == {"error": str(info.value)} and env.log[-1].failed
    assert env.answer({"name": "charge_card", "arguments": '{"card_last4": "1234", "special_request": "None."}'})[
        "booking"] == "confirmed"


def test_a_handler_stands_in_for_the_scenario_and_its_failure_is_an_answer(wf):
    scenario, path = scenario_on(wf, "booking_confirmed")

    def search(**arguments):
        return {"airline": "Test Air", "flight_number": 1, "departure_time": "noon", "price": 10}

    def charge(card_last4, special_request):
        raise ConnectionError("the bank did not answer")

    env = Environment(wf, scenario, path, handlers={"search_flights": search, "charge_card": charge})
    v = scenario.values
    assert env.answer(ToolCall("search_flights", {k: v[k] for k in wf.tools["search_flights"].arguments}))[
        "airline"] == "Test Air"
    assert env.answer(ToolCall("charge_card", {"card_last4": "1", "special_request": "None."})) == {
        "error": "charge_card failed: ConnectionError: the bank did not answer"}


def test_call_text_round_trips_and_tool_turns_are_told_apart(wf):
    from subterra.tools import call_in, call_text, is_tool_turn, without_tools

    call = ToolCall("charge_card", {"card_last4": "0443", "special_request": "None."})
    assert read_call(wf, call_in(call_text(call))) == call
    assert call_in("<tool_call>\n{\"name\": \"charge_card\"") == '{"name": "charge_card"'      # cut off: still a call
    assert call_in("I'll book that now.") is None
    turns = [{"role": "user", "content": "Book it."}, {"role": "assistant", "content": call_text(call)},
             {"role": "tool", "content": '{"booking": "confirmed"}'}, {"role": "assistant", "content": "Booked!"}]
    assert [is_tool_turn(m) for m in turns] == [False, True, True, False]
    assert without_tools(turns) == [turns[0], turns[3]]


@pytest.fixture(scope="module")
def dialogues(wf, tmp_path_factory):
    from subterra.synthesis import read_dialogues, synthesize

    out = tmp_path_factory.mktemp("tools-corpus")
    synthesize(wf, 120, out, "offline", progress=False)
    return read_dialogues(out / "dialogues.jsonl")


def test_the_teacher_writes_each_call_its_answer_and_a_turn_that_uses_it(wf, dialogues):
    """Before an agent step that calls a tool: the call (the customer's values as said, a slip included) and the
    environment's answer; the step's words then state what the answer holds. The booking: declined where the
    path goes to payment_declined, confirmed where it goes on to a booking, referred where the specialists
    take a special request."""
    from subterra.tools import call_in, without_tools

    outcomes = []
    for row in dialogues:
        values = json.loads(row["scenario"])["values"]
        turns, nodes = row["messages"][1:], row["nodes"]
        for k, (m, node) in enumerate(zip(turns, nodes)):
            if m["role"] == "assistant" and call_in(m["content"]):
                call = read_call(wf, call_in(m["content"]))
                assert wf.nodes[node].call == call.name and nodes[k + 1] == nodes[k + 2] == node
                answer = json.loads(turns[k + 1]["content"])
                assert turns[k + 1]["role"] == "tool" and turns[k + 2]["role"] == "assistant"
                slipped = json.loads(row["scenario"])["persona"]["challenge"] == "corrects_earlier"
                if call.name == "search_flights":
                    assert slipped or call.arguments["destination"] == values["destination"]
                    assert answer == {k: values[k] for k in ("airline", "flight_number", "departure_time", "price")}
                    assert str(answer["flight_number"]) in turns[k + 2]["content"] or \
                        str(answer["price"]) in turns[k + 2]["content"]
                else:
                    outcomes.append((node, answer["booking"]))
        assert not any(call_in(m["content"]) for m in without_tools(row["messages"]) if m["role"] == "assistant")
    assert set(outcomes) == {("payment_declined", "declined"), ("booking_confirmed", "confirmed"),
                             ("specialist_handoff", "referred")}


def test_the_loss_counts_the_agents_calls_never_the_tools_answers(dialogues):
    from subterra.encoding import IGNORE, encode_dialogue, fit_tokenizer

    row = next(r for r in dialogues if "payment_declined" in r["nodes"])
    tokenizer = fit_tokenizer([m["content"] for r in dialogues[:40] for m in r["messages"]], 600)
    ids, labels = encode_dialogue(tokenizer, row["messages"])
    trained = tokenizer.decode([t for t in labels if t != IGNORE])
    for m in row["messages"][1:]:
        assert (m["content"] in trained) == (m["role"] == "assistant"), m
    assert trained.count("<tool_call>") == sum("<tool_call>" in m["content"] for m in row["messages"]) >= 3


def test_the_controllers_call_their_tools_and_the_answer_decides_the_card_branch(wf):
    """The oracle and the script controller call each step's tool themselves and speak with its answer; at the
    card, the charge's outcome picks the branch. Judged as a perfect agent is: 5 on every criterion."""
    from dataclasses import asdict

    from subterra.judge import CRITERIA, OfflineJudge, judge_transcripts
    from subterra.simulation import OfflineUser, Oracle, Orchestrated, converse, evaluation_scenarios
    from subterra.tools import call_in

    paths = {p.id: p for p in enumerate_paths(wf)}
    scenarios = evaluation_scenarios(wf, 24)
    for condition in (Oracle(wf), Orchestrated(wf)):
        transcripts = [asdict(converse(condition, OfflineUser(wf, s, paths[s.path_id]), wf, s, paths[s.path_id]))
                       for s in scenarios]
        declined = 0
        for t in transcripts:
            messages = t["messages"]
            for k, m in enumerate(messages):
                if m["role"] == "tool":
                    answer = json.loads(m["content"])
                    assert "error" not in answer and call_in(messages[k - 1]["content"])
                    if answer.get("booking") == "declined":
                        declined += 1
                        assert "declined" in messages[k + 1]["content"], messages[k + 1]
        assert declined >= 2, condition.name
        scores = judge_transcripts(transcripts, OfflineJudge(wf), progress=False)
        assert all(s.scores[c] in (5, None) for s in scores for c in CRITERIA), condition.name   # None: no challenge
        assert not any(s.failure for s in scores), condition.name


class Scripted:
    """A condition that says what it is given, one reply a turn (a model making mistakes)."""

    name, label, batched, speaker, needs_frontier = "scripted", "", False, None, False

    def __init__(self, replies):
        self.replies = list(replies)

    def reset(self, scenario):
        self.left = list(self.replies)

    def respond(self, messages):
        from subterra.conditions import AgentTurn

        return AgentTurn(self.left.pop(0) if self.left else "Goodbye.", 1, 1, 0.0, 0.0)


@pytest.mark.parametrize("bad, reason", [
    ("<tool_call>\n{\"name\": \"search_flights\", \"arguments\": {\n</tool_call>", "not valid JSON"),
    ('<tool_call>\n{"name": "find_hotel", "arguments": {}}\n</tool_call>', "unknown tool 'find_hotel'"),
    ('<tool_call>\n{"name": "search_flights", "arguments": {"origin": "Oslo"}}\n</tool_call>', "missing arguments"),
    ('<tool_call>{"name": "charge_card", "arguments": {"card_last4": "1"', None),       # cut off: still a call
])
def test_a_bad_call_is_an_error_the_agent_sees_and_the_conversation_goes_on(wf, bad, reason):
    from subterra.simulation import OfflineUser, converse, evaluation_scenarios

    scenario = evaluation_scenarios(wf, 1)[0]
    path = next(p for p in enumerate_paths(wf) if p.id == scenario.path_id)
    greeting = "Hi there! I can find and book flights for you. Where are you hoping to go, and when?"
    t = converse(Scripted([bad, greeting]), OfflineUser(wf, scenario, path), wf, scenario, path)
    assert t.error is None and t.messages[0]["content"] == bad and t.messages[1]["role"] == "tool"
    answer = json.loads(t.messages[1]["content"])
    if reason is None:
        assert "error" in answer or "booking" in answer
    else:
        assert reason in answer["error"]
    assert t.messages[2]["content"] == greeting and t.messages[3]["role"] == "user"     # the customer answers
    assert t.trace_nodes[0] == "greet"                          # the listener hears the conversation as said


def test_an_agent_that_only_calls_is_told_then_stopped(wf):
    from subterra.simulation import MAX_CALLS, OfflineUser, converse, evaluation_scenarios

    scenario = evaluation_scenarios(wf, 1)[0]
    path = next(p for p in enumerate_paths(wf) if p.id == scenario.path_id)
    call = '<tool_call>\n{"name": "charge_card", "arguments": {"card_last4": "1", "special_request": "None."}}\n</tool_call>'
    t = converse(Scripted([call] * 10), OfflineUser(wf, scenario, path), wf, scenario, path)
    answers = [json.loads(m["content"]) for m in t.messages if m["role"] == "tool"]
    assert len(answers) == MAX_CALLS + 2 and t.stop_reason == "tool_loop" and t.error is None
    assert all("error" not in a for a in answers[:MAX_CALLS]) and "answer the customer" in answers[MAX_CALLS]["error"]
    assert not any(m["role"] == "user" for m in t.messages) and not t.valid_path


@pytest.fixture(scope="module")
def oracle_runs(wf):
    from dataclasses import asdict

    from subterra.simulation import OfflineUser, Oracle, converse, evaluation_scenarios

    paths = {p.id: p for p in enumerate_paths(wf)}
    return [asdict(converse(Oracle(wf), OfflineUser(wf, s, paths[s.path_id]), wf, s, paths[s.path_id]))
            for s in evaluation_scenarios(wf, 24)]


def _judge(wf, transcript):
    from subterra.judge import OfflineJudge

    return OfflineJudge(wf).score(transcript)


def test_a_look_up_is_judged_against_what_the_tool_returned(wf, oracle_runs):
    """The flight's price stated otherwise than the search returned it, or a flight stated before any search,
    is a wrong value (Information Accuracy); the oracle's own turns score 5."""
    t = next(t for t in oracle_runs if any(m["role"] == "tool" and '"price"' in m["content"] for m in t["messages"]))
    assert _judge(wf, t).scores["information_accuracy"] == 5
    k = next(i for i, m in enumerate(t["messages"]) if m["role"] == "tool" and '"price"' in m["content"])
    price = json.loads(t["messages"][k]["content"])["price"]
    other = next(p for p in wf.values_of("price") if p != price and str(p) not in str(price))
    assert f"${price}" in t["messages"][k + 1]["content"], t["messages"][k + 1]
    wrong = [dict(m) for m in t["messages"]]
    wrong[k + 1]["content"] = wrong[k + 1]["content"].replace(f"${price}", f"${other}")
    assert _judge(wf, {**t, "messages": wrong}).scores["information_accuracy"] < 5
    unsearched = wrong[:k - 1] + [dict(t["messages"][k + 1])] + t["messages"][k + 2:]     # no call, no answer
    assert _judge(wf, {**t, "messages": unsearched}).scores["information_accuracy"] < 5


def test_booking_on_a_declined_card_fails_the_task(wf, oracle_runs):
    """The branch after the charge is right or wrong by the charge's outcome: saying 'booked' where the bank
    declined (or without charging at all) is a failure, even where the conversation then ends as its path does."""
    t = next(t for t in oracle_runs if any('"declined"' in m["content"] for m in t["messages"] if m["role"] == "tool"))
    assert not _judge(wf, t).failure
    k = next(i for i, m in enumerate(t["messages"]) if m["role"] == "tool" and '"declined"' in m["content"])
    booked = next(m for m in reversed(t["messages"]) if m["role"] == "assistant")     # the booking's own words
    lied = t["messages"][:k + 1] + [dict(booked)]
    trace = list(t["trace_nodes"])
    said_before = sum(1 for m in t["messages"][:k + 1] if m["role"] in ("user", "assistant")
                      and not m["content"].startswith("<tool_call>"))
    lied_t = {**t, "messages": lied, "trace_nodes": trace[:said_before] + [trace[-1]], "right_ending": True,
              "valid_path": True, "stop_reason": "terminal:" + (wf.nodes[trace[-1]].terminal or "")}
    verdict = _judge(wf, lied_t)
    assert verdict.failure and "rules out" in verdict.reasons["task_success"]
    uncharged = t["messages"][:k - 1] + [dict(booked)]
    verdict = _judge(wf, {**lied_t, "messages": uncharged})
    assert verdict.failure


def test_travel_with_tools_draws_travels_scenarios(wf):
    """scenarios_from: the same held-out scenarios (values, personas, the same walk but for the paid
    specialist handoff) and the same training plan as travel, so the two compiles compare pairwise."""
    from subterra.simulation import evaluation_scenarios
    from subterra.synthesis import plan_corpus

    travel = load_domain("travel")
    assert (wf.family, travel.family) == ("travel", "travel")
    ours, theirs = evaluation_scenarios(wf, 200), evaluation_scenarios(travel, 200)
    paths, travel_paths = {p.id: p for p in enumerate_paths(wf)}, {p.id: p for p in enumerate_paths(travel)}
    for a, b in zip(ours, theirs):
        assert (a.id, a.values, a.persona, a.path_id) == (b.id, b.values, b.persona, b.path_id)
        walk = [n for n in travel_paths[b.path_id].nodes]
        if walk[-2:] == ["confirm_booking", "handoff"]:
            walk[-1] = "specialist_handoff"
        assert list(paths[a.path_id].nodes) == walk
    assert [(i, p.nodes[:3]) for i, p, _ in plan_corpus(wf, 300).assignments] == \
        [(i, p.nodes[:3]) for i, p, _ in plan_corpus(travel, 300).assignments]


# The tool part of a Qwen2.5-style (Hermes) chat template: a "tool" turn goes to the model as a user turn
# holding <tool_response>; an assistant's call is its content. The text form renders under it unchanged.
HERMES = (
    "{%- for message in messages %}"
    "{%- if message.role == 'tool' %}"
    "{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def test_the_text_form_is_what_a_hermes_style_template_expects(dialogues):
    from subterra.encoding import IGNORE, encode_dialogue, fit_tokenizer

    row = next(r for r in dialogues if "payment_declined" in r["nodes"])
    tokenizer = fit_tokenizer([m["content"] for r in dialogues[:40] for m in r["messages"]], 600)
    tokenizer.chat_template = HERMES
    text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
    assert "<|im_start|>user\n<tool_response>\n{\"booking_ref\"" in text and "<|im_start|>tool" not in text
    ids, labels = encode_dialogue(tokenizer, row["messages"])
    trained = tokenizer.decode([t for t in labels if t != IGNORE])
    assert "<tool_call>" in trained and "tool_response" not in trained and '"booking"' not in trained


# --------------------------------------------------------------------------- frontier models: native tool use

PAID = {"card_last4": "0443", "special_request": "None."}       # the arguments of every call the fake APIs make
CHARGE = {"name": "charge_card", "description": "Charge a card.",
          "parameters": {"type": "object", "properties": {a: {"type": "string"} for a in PAID}, "required": list(PAID)}}


def _native_server():
    """The fake Claude and OpenAI APIs of test_backends_remote, calling a tool when given tools and a customer's
    words, and answering in words after a tool's answer."""
    from test_backends_remote import FakeServer

    class ToolServer(FakeServer):
        @staticmethod
        def message_json(params):
            last = params["messages"][-1]["content"]
            answered = isinstance(last, list) and last[0].get("type") == "tool_result"
            if params.get("tools") and not answered:
                content = [{"type": "tool_use", "id": "toolu_1", "name": params["tools"][0]["name"],
                            "input": PAID}]
            else:
                content = [{"type": "text", "text": "Booked." if answered else "Hello."}]
            return {"id": "msg_fake", "type": "message", "role": "assistant", "model": params["model"],
                    "content": content, "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 2}}

        def route(self, req, body):
            from test_backends_remote import http

            if req.url.path == "/v1/messages":
                return http.Response(200, json=self.message_json(body))
            if req.url.path.endswith("/chat/completions"):
                last = body["messages"][-1]
                if body.get("tools") and last["role"] != "tool":
                    message = {"role": "assistant", "content": None, "tool_calls": [
                        {"id": "c1", "type": "function", "function": {
                            "name": body["tools"][0]["function"]["name"], "arguments": json.dumps(PAID)}}]}
                else:
                    message = {"role": "assistant", "content": "Booked." if last["role"] == "tool" else "Hello."}
                return http.Response(200, json={"id": "x", "object": "chat.completion", "created": 0,
                                                "model": body["model"], "choices": [
                                                    {"index": 0, "finish_reason": "stop", "message": message}]})
            return super().route(req, body)

    return ToolServer()


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_frontier_model_calls_natively_and_the_call_comes_back_in_the_text_form(wf, api):
    import asyncio

    from subterra.backends import Request
    from subterra.tools import call_in, call_text
    from test_backends_remote import anthropic_backend, openai_backend, run_all

    server = _native_server()
    backend = (anthropic_backend if api == "anthropic" else openai_backend)(server)
    call = call_text(ToolCall("charge_card", PAID))
    first = Request(system="s", messages=[{"role": "user", "content": "Book it, card 0443."}], tools=(CHARGE,))
    then = Request(system="s", messages=first.messages + [{"role": "assistant", "content": call},
                                                           {"role": "tool", "content": '{"booking": "confirmed"}'}],
                   tools=(CHARGE,))
    made, spoke = asyncio.run(run_all(backend, [first, then]))
    assert read_call(wf, call_in(made.text)) == ToolCall("charge_card", PAID)
    assert spoke.text == "Booked."
    body = [b for _, _, b in server.calls if b.get("messages") and len(b["messages"]) >= 3][-1]
    if api == "anthropic":
        assert body["tools"] == [{"name": "charge_card", "description": "Charge a card.",
                                  "input_schema": CHARGE["parameters"]}]
        use, result = body["messages"][1]["content"][0], body["messages"][2]["content"][0]
        assert (use["type"], use["name"], use["input"]) == ("tool_use", "charge_card", PAID)
        assert (result["type"], result["tool_use_id"], result["content"]) == (
            "tool_result", use["id"], '{"booking": "confirmed"}')
    else:
        assert body["tools"] == [{"type": "function", "function": CHARGE}]
        assistant, tool = body["messages"][-2], body["messages"][-1]
        assert assistant["tool_calls"][0]["function"] == {"name": "charge_card", "arguments": json.dumps(PAID)}
        assert (tool["role"], tool["tool_call_id"]) == ("tool", assistant["tool_calls"][0]["id"])
    assert Request(system="s", messages=first.messages).key("b", "m") != first.key("b", "m")


def test_the_in_context_frontier_condition_gets_the_tools_and_its_calls_are_answered(wf):
    from subterra.simulation import InContext, OfflineUser, converse, evaluation_scenarios
    from test_backends_remote import anthropic_backend

    server = _native_server()
    scenario = evaluation_scenarios(wf, 1)[0]
    path = next(p for p in enumerate_paths(wf) if p.id == scenario.path_id)
    condition = InContext(wf, anthropic_backend(server))
    assert "[first call the tool search_flights" in condition.system
    t = converse(condition, OfflineUser(wf, scenario, path), wf, scenario, path, max_turns=4)
    assert t.error is None and t.messages[1]["role"] == "tool"
    assert [m["role"] for m in t.messages[:3]] == ["assistant", "tool", "assistant"]
    sent = [b for _, _, b in server.calls if b.get("tools")]
    assert sent and {x["name"] for x in sent[0]["tools"]} == {"search_flights", "charge_card"}


def test_the_langgraph_stand_in_calls_a_steps_tool_natively_before_it_speaks(wf):
    pytest.importorskip("langgraph")
    from subterra.langgraph_agent import LangGraphCondition
    from subterra.simulation import OfflineUser, converse, evaluation_scenarios
    from test_backends_remote import anthropic_backend

    server = _native_server()
    scenario = evaluation_scenarios(wf, 1)[0]
    path = next(p for p in enumerate_paths(wf) if p.id == scenario.path_id)
    t = converse(LangGraphCondition(wf, anthropic_backend(server)), OfflineUser(wf, scenario, path), wf, scenario,
                 path, max_turns=6)
    roles = [m["role"] for m in t.messages]
    assert t.error is None and "tool" in roles
    k = roles.index("tool")
    assert roles[k - 1] == "assistant" and roles[k + 1] == "assistant"       # the call, its answer, the words
    with_tools = [b for _, _, b in server.calls if b.get("tools")]
    assert [x["name"] for x in with_tools[0]["tools"]] == ["search_flights"]
    assert "First call the tool search_flights" in with_tools[0]["system"][0]["text"]


def test_the_langgraph_router_goes_through_the_charge_and_routes_again_with_its_answer(wf):
    """At the card the router cannot know the bank's answer: the step it picks calls charge_card first, and the
    router picks again with the answer in the conversation (here: declined)."""
    pytest.importorskip("langgraph")
    from subterra.backends import Completion, Usage
    from subterra.langgraph_agent import LangGraphCondition
    from subterra.tools import call_text

    class Stub:
        name, model = "stub", "stub"

        def __init__(self):
            self.requests, self.picks = [], iter(["1", "2"])

        def complete(self, request):
            self.requests.append(request)
            if request.tag == "langgraph-router":
                text = next(self.picks)
            elif request.tools:
                text = call_text(ToolCall("charge_card", {"card_last4": "0378", "special_request": "None."}))
            else:
                text = "Sorry, the card was declined. Another card?"
            return Completion(text, Usage(1, 1), "stub", "stub")

    backend = Stub()
    condition = LangGraphCondition(wf, backend)
    condition.reset(None)
    condition.node = "booking_summary"
    messages = [{"role": "assistant", "content": "Shall I book it?"},
                {"role": "user", "content": "Yes, book it. Card ending 0378."}]
    turn = condition.respond(messages)
    assert call_in(turn.text) and condition.node == "booking_confirmed"          # provisional: it calls first
    messages += [{"role": "assistant", "content": turn.text}, {"role": "tool", "content": '{"booking": "declined"}'}]
    turn = condition.respond(messages)
    assert condition.node == "payment_declined" and "declined" in turn.text
    routers = [r for r in backend.requests if r.tag == "langgraph-router"]
    assert len(routers) == 2 and routers[1].messages[-1]["role"] == "tool"


def test_the_lookup_and_branch_tables_see_what_a_compiled_model_without_tools_cannot(wf, oracle_runs):
    """The oracle with tools states every look-up as the search returned it and takes the card's branch as the
    bank answered; a made-up flight (what a compile without tools offers) and 'booked' on a declined card are
    counted against a condition."""
    from subterra.analysis import branch_table, lookup_table

    lookups = lookup_table(wf, {"oracle": oracle_runs})
    assert lookups.loc["oracle", "turns"] > 24 and lookups.loc["oracle", "stated as the business has it"] == 1.0
    assert lookups.loc["oracle", "before a call"] == 0.0
    branches = branch_table(wf, {"oracle": oracle_runs}, "confirm_booking")
    assert branches.loc["oracle", "visits right"] == 1.0 and branches.loc["oracle", "conversations"] >= 5

    invented = []
    for t in oracle_runs:
        messages = [dict(m) for m in t["messages"]]
        for m in messages:
            if m["role"] == "assistant" and "$" in m["content"]:
                price = json.loads(t["scenario"])["values"]["price"]
                m["content"] = m["content"].replace(f"${price}", "$2250" if price != 2250 else "$980")
        invented.append({**t, "messages": messages})
    worse = lookup_table(wf, {"invented": invented})
    assert worse.loc["invented", "stated as the business has it"] < 0.9

    declined = next(t for t in oracle_runs if any(
        pair == ("confirm_booking", "payment_declined") for pair in zip(t["trace_nodes"], t["trace_nodes"][1:])))
    k = declined["trace_nodes"].index("payment_declined")
    wrong = {**declined, "trace_nodes": declined["trace_nodes"][:k] + ["booking_confirmed"]}
    table = branch_table(wf, {"oracle": oracle_runs, "wrong": [wrong]}, "confirm_booking")
    assert table.loc["wrong", "visits right"] == 0.0 and table.loc["wrong", "conversations right"] == 0.0
    assert table.loc["oracle", "on the tools' answers"] == 1.0 and table.loc["wrong", "on the tools' answers"] == 0.0

    # the booking system's answer also says whether the specialists take a special request: handing over a
    # booking it confirmed is a wrong branch, and one against its answer
    approved = next(t for t in oracle_runs if any(
        pair == ("confirm_booking", "booking_confirmed") for pair in zip(t["trace_nodes"], t["trace_nodes"][1:])))
    k_ok = approved["trace_nodes"].index("booking_confirmed")
    handed = {**approved, "trace_nodes": approved["trace_nodes"][:k_ok] + ["specialist_handoff"]}
    table = branch_table(wf, {"handed": [handed]}, "confirm_booking")
    assert table.loc["handed", "conversations right"] == 0.0 and table.loc["handed", "on the tools' answers"] == 0.0

    # a pass where the agent took none of the card's branches (the customer's correction read as the card's
    # reply, then a new search) is a wrong turn, but not a decision against the bank: the later passes decide
    searched = {**declined, "trace_nodes": declined["trace_nodes"][:k] + ["offer_flights"]
                + declined["trace_nodes"][k + 1:]}
    never = {**approved, "trace_nodes": approved["trace_nodes"][:k_ok] + ["offer_flights"]}
    table = branch_table(wf, {"searched": [searched], "never": [never]}, "confirm_booking")
    assert table.loc["searched", "conversations right"] == 0.0 and table.loc["searched", "on the tools' answers"] == 1.0
    assert table.loc["never", "on the tools' answers"] == 0.0              # reached the card, never decided there


def _with_price(transcript, price=3590):
    """``transcript`` with every price the agent states replaced by ``price`` (what a compile without tools does:
    one invented flight, whatever the search would find; 3590 is the dearest of the workflow's prices)."""
    real = json.loads(transcript["scenario"])["values"]["price"]
    price = price if price != real else 260
    messages = [{**m, "content": m["content"].replace(f"${real}", f"${price}")} if m["role"] == "assistant" else m
                for m in transcript["messages"]]
    return {**transcript, "messages": messages}


def test_an_offer_on_the_wrong_side_of_the_budget_is_counted(wf, oracle_runs):
    """The customer's answer to an offer turns on its price against their budget: the oracle's offers are always
    on the side the found flight is; an invented price above a customer's budget is on the wrong side for each
    customer whose flight fits."""
    from subterra.analysis import budget_table

    table = budget_table(wf, {"oracle": oracle_runs})
    assert table.loc["oracle", "offers"] > 20 and table.loc["oracle", "on the budget's right side"] == 1.0
    fits = [t for t in oracle_runs if (lambda v: v["price"] <= v["budget"] < 3590)(json.loads(t["scenario"])["values"])]
    assert fits
    invented = budget_table(wf, {"invented": [_with_price(t) for t in fits]})
    assert invented.loc["invented", "offers"] > 0 and invented.loc["invented", "on the budget's right side"] == 0.0


def test_the_tools_comparison_pairs_the_two_compiles_on_their_scenarios(wf, oracle_runs):
    """tools_comparison judges each workflow's run by its own judge and pairs them by scenario: the oracle with
    and without tools are alike; a run whose offers are invented loses look-ups and accuracy, and one that stops
    short fails where the other did not."""
    from subterra.analysis import recorded_runs, tools_comparison

    ids = {t["scenario_id"] for t in oracle_runs}
    travel = [t for t in recorded_runs("travel")["oracle"] if t["scenario_id"] in ids]
    assert len(travel) == len(oracle_runs)                      # travel_tools draws travel's scenarios
    table = tools_comparison(runs={"travel": {"oracle": travel}, "travel_tools": {"oracle": oracle_runs}},
                             condition="oracle", n_resamples=100)
    assert list(table.index) == ["travel", "travel_tools"]
    assert (table["failure_rate"] == 0).all() and (table["lookups_right"] == 1).all()
    assert (table["branch_right"] == 1).all() and table.loc["travel_tools", "pairs"] == len(ids)
    assert table.loc["travel_tools", "fails_only_with"] == table.loc["travel_tools", "fails_only_without"] == 0
    assert table.loc["travel_tools", "failures_p"] == 1.0

    worse = [_with_price(t) for t in oracle_runs]
    table = tools_comparison(runs={"travel": {"oracle": travel}, "travel_tools": {"oracle": worse}},
                             condition="oracle", n_resamples=100)
    row = table.loc["travel_tools"]
    assert row["lookups_right"] < 0.5 and row["information_accuracy"] < table.loc["travel", "information_accuracy"]
    booked = [t["scenario_id"] for t in oracle_runs if t["stop_reason"] == "terminal:success"][:3]
    assert len(booked) == 3
    short = [{**t, "messages": t["messages"][:3], "trace_nodes": t["trace_nodes"][:3], "right_ending": False,
              "stop_reason": "turn_limit"}
             if t["scenario_id"] in booked else t for t in oracle_runs]
    table = tools_comparison(runs={"travel": {"oracle": travel}, "travel_tools": {"oracle": short}},
                             condition="oracle", n_resamples=100)
    row = table.loc["travel_tools"]
    assert (row["fails_only_with"], row["fails_only_without"]) == (3, 0) and row["task_success_difference"] < 0
    assert row["failures_p"] == 0.25                          # 3 against 0: twice 1/8, too few to tell


def test_insurance_with_a_policy_look_up_keeps_insurances_shape_and_scenarios():
    """insurance_tools is insurance where the agent looks the policy up (its status, cover, deductible, dates)
    before it says where the customer stands: the same graph and paths, the same 200 held-out scenarios, so the
    two compiles pair by scenario."""
    from subterra.simulation import evaluation_scenarios

    insurance, with_tools = load_domain("insurance"), load_domain("insurance_tools")
    assert (len(with_tools.nodes), len(with_tools.decision_hubs), len(enumerate_paths(with_tools))) == (
        len(insurance.nodes), len(insurance.decision_hubs), len(enumerate_paths(insurance))) == (55, 6, 2381)
    assert {n.id for n in with_tools.nodes.values() if n.call == "lookup_policy"} == {
        "policy_active", "policy_grace", "policy_lapsed"}
    assert {"policy", "policy_status"} <= with_tools.returned() and not with_tools.outcomes()
    ours, theirs = evaluation_scenarios(with_tools, 200), evaluation_scenarios(insurance, 200)
    assert [(s.id, s.path_id, s.values, s.persona) for s in ours] == [
        (s.id, s.path_id, s.values, s.persona) for s in theirs]


def test_a_branch_on_a_looked_up_value_waits_for_the_look_up():
    """After verification the branch turns on the policy's status, which a tool returns: the oracle and the
    script controller call lookup_policy first and take the branch its answer names (5 on every criterion); an
    agent that says the policy is active when the look-up said otherwise, or says where the customer stands
    without looking, takes a branch the judge caps at Task Success 2."""
    from dataclasses import asdict

    from subterra.judge import CRITERIA, OfflineJudge, judge_transcripts
    from subterra.simulation import OfflineUser, Oracle, Orchestrated, converse, evaluation_scenarios

    wf = load_domain("insurance_tools")
    paths = {p.id: p for p in enumerate_paths(wf)}
    scenarios = evaluation_scenarios(wf, 24)
    status_node = {"active": "policy_active", "grace_period": "policy_grace", "lapsed": "policy_lapsed"}
    judge = OfflineJudge(wf)
    for condition in (Oracle(wf), Orchestrated(wf)):
        transcripts = [asdict(converse(condition, OfflineUser(wf, s, paths[s.path_id]), wf, s, paths[s.path_id]))
                       for s in scenarios]
        statuses = set()
        for t in transcripts:
            nodes = t["trace_nodes"]
            if "give_verification" not in nodes or t["stop_reason"] == "gave_up" and "ask_what_happened" not in nodes:
                continue                                        # not reached, or the customer left before it
            answer = json.loads(next(m["content"] for m in t["messages"] if m["role"] == "tool"))
            statuses.add(answer["policy_status"])
            assert nodes[nodes.index("give_verification") + 1] == status_node[answer["policy_status"]], t["scenario_id"]
        assert len(statuses) >= 2, condition.name
        scores = judge_transcripts(transcripts, judge, progress=False)
        assert all(s.scores[c] in (5, None) for s in scores for c in CRITERIA), condition.name

    grace = next(t for t in transcripts if "policy_grace" in t["trace_nodes"])
    k = grace["trace_nodes"].index("policy_grace")
    wrong = {**grace, "trace_nodes": grace["trace_nodes"][:k] + ["policy_active"] + grace["trace_nodes"][k + 1:]}
    assert judge.score(wrong).scores["task_success"] <= 2
    unasked = {**grace, "messages": [m for m in grace["messages"] if m["role"] != "tool" and "<tool_call>"
                                     not in m["content"]]}
    assert judge.score(unasked).scores["task_success"] <= 2


def test_the_branch_table_reads_insurances_three_policy_hubs_together():
    """Insurance branches three times on its policy (status, cover, deductible): the oracle takes the path's
    step at each; one wrong step at any of them makes its conversation wrong, counted per visit too; a hub the
    workflow lacks is named."""
    from dataclasses import asdict

    from subterra.analysis import branch_table
    from subterra.simulation import OfflineUser, Oracle, converse, evaluation_scenarios

    wf = load_domain("insurance_tools")
    paths = {p.id: p for p in enumerate_paths(wf)}
    runs = [asdict(converse(Oracle(wf), OfflineUser(wf, s, paths[s.path_id]), wf, s, paths[s.path_id]))
            for s in evaluation_scenarios(wf, 16)]
    assert wf.tool_hubs() == {"give_verification", "describe_incident", "total_estimate"}
    assert load_domain("travel_tools").tool_hubs() == {"confirm_booking"}     # not the customer's leaving
    assert not load_domain("insurance").tool_hubs()
    table = branch_table(wf, {"oracle": runs}, wf.tool_hubs())
    assert table.loc["oracle", "visits right"] == table.loc["oracle", "conversations right"] == 1.0
    assert table.loc["oracle", "visits"] > table.loc["oracle", "conversations"] >= 10   # several hubs a conversation
    one_hub = branch_table(wf, {"oracle": runs}, "give_verification")
    assert one_hub.loc["oracle", "visits"] < table.loc["oracle", "visits"]

    wrong = []
    for t in runs:
        nodes = list(t["trace_nodes"])
        if "total_estimate" in nodes[:-1]:
            k = nodes.index("total_estimate") + 1
            nodes[k] = "below_deductible" if nodes[k] != "below_deductible" else "over_limit"
        wrong.append({**t, "trace_nodes": nodes})
    table = branch_table(wf, {"oracle": runs, "wrong": wrong}, wf.tool_hubs())
    changed = sum(a["trace_nodes"] != b["trace_nodes"] for a, b in zip(runs, wrong))
    assert changed and table.loc["wrong", "conversations right"] == 1 - changed / table.loc["wrong", "conversations"]
    assert table.loc["oracle", "on the tools' answers"] == 1.0                 # every branch read the look-up
    assert table.loc["wrong", "on the tools' answers"] == table.loc["wrong", "conversations right"]  # against it
    unasked = [{**t, "messages": [m for m in t["messages"] if m["role"] != "tool"]} for t in runs]
    table = branch_table(wf, {"unasked": unasked}, wf.tool_hubs())           # no answer came: every branch a guess
    assert table.loc["unasked", "on the tools' answers"] == 0.0
    with pytest.raises(ValueError, match="no node give_verfication"):
        branch_table(wf, {"oracle": runs}, ("give_verfication",))
