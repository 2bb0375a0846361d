"""Notebooks 05-06: the evaluation harness — customer, controller, judge — each fault found in a transcript,
and the oracle that calibrates them all (whatever it loses is the harness's error, not an agent's)."""

from dataclasses import replace
from pathlib import Path

import pytest

from subterra import enumerate_paths, load_domain, parse_workflow
from subterra.conformance import conformance, extract_values, lookups, matcher_for
from subterra.customer import OFF_TOPIC, STOP, OfflineUser
from subterra.judge import CRITERIA, FAILURE_THRESHOLD, OfflineJudge
from subterra.scenarios import CHALLENGES, Persona
from subterra.simulation import Oracle, Orchestrated, converse, evaluation_scenarios, simulate
from subterra.workflow import DOMAINS, render

HERE = Path(__file__).parent
OWN_WORKFLOW = HERE / "workflows" / "restaurant.yaml"      # written for this test, not shipped in data/


@pytest.fixture(scope="module")
def travel():
    return load_domain("travel")


def scenario_for(workflow, challenge: str, path_nodes: tuple[str, ...] | None = None, k: int = 0):
    paths = {p.id: p for p in enumerate_paths(workflow)}
    for s in evaluation_scenarios(workflow, 200):
        if path_nodes is None or paths[s.path_id].nodes[:len(path_nodes)] == path_nodes:
            if k == 0:
                return replace(s, persona=Persona("polite", "plain", challenge)), paths[s.path_id]
            k -= 1
    raise AssertionError("no such scenario")


def greet(text="Hi there! I can find and book flights for you. Where are you hoping to go, and when?"):
    return [{"role": "assistant", "content": text}]


# --------------------------------------------------------------------------- what a listener hears

def test_a_value_inside_a_longer_value_or_a_word_is_not_heard(travel):
    heard = extract_values(travel, "Let's look at February 6, please. So nice of you! It's $1,010 in total.")
    assert heard == {"new_date": "February 6", "travel_date": "February 6"}   # no party of 6, no trip to Nice, no 1 traveller
    assert extract_values(travel, "A trip to Nice for 6 of us, about $1010.")["destination"] == "Nice"
    said = extract_values(travel, "I said Porto by mistake, it's Lisbon.")
    assert said["destination"] == "Lisbon"                      # the later mention counts
    offer = "Top result is Emirates flight 1045 at 9:40 am, $2700 in total."
    assert "budget" in extract_values(travel, offer)            # 2700 is in both pools...
    assert "budget" not in extract_values(travel, offer, names={"airline", "price", "flight_number"})


def test_a_renewing_value_is_heard_as_the_value_it_renews_wherever_it_stands(travel):
    # travel's edges renew travel_date from new_date and card_last4 from other_card (``sets``)
    change = extract_values(travel, "What if I left on February 6 instead of January 3?")
    assert change["travel_date"] == "February 6" and change["new_date"] == "February 6"
    assert extract_values(travel, "On January 3, then.")["travel_date"] == "January 3"    # the old value alone
    card = extract_values(travel, "Use the card ending 2323, not 7768.", names={"card_last4"})
    assert card == {"card_last4": "2323"}                       # heard under the listened-for name
    assert extract_values(travel, "The card ending 7768, please.") == {"card_last4": "7768"}


def test_a_record_is_heard_by_its_first_field_only_where_that_names_it_alone():
    """Zoom's error 5003 names one record; insurance's policy type "auto" names ten. A listener that took "your
    auto policy" for one of them (the customer, who then described that policy's incident, not its own) was
    guessing: the compile of insurance_tools followed those words into another policy's branch."""
    zoom, insurance = load_domain("zoom"), load_domain("insurance_tools")
    assert extract_values(zoom, "Error 5003 means the connection to Zoom's servers failed.")["error"]["code"] == "5003"
    assert "policy" not in extract_values(insurance, "That's confirmed. Your auto policy is current.")

    paths = {p.id: p for p in enumerate_paths(insurance)}
    scenario = next(s for s in evaluation_scenarios(insurance, 200) if s.values["policy"]["type"] == "auto"
                    and "policy_active" in paths[s.path_id].nodes and "describe_incident" in paths[s.path_id].nodes)
    path = paths[scenario.path_id]
    k = path.nodes.index("describe_incident")
    user, messages = OfflineUser(insurance, replace(scenario, persona=Persona("polite", "plain", "none")), path), []
    for node in path.nodes[:k]:                    # the oracle's words, but "your auto policy" where it can
        if insurance.nodes[node].role == "agent":
            said = next((x for x in insurance.nodes[node].examples if "{policy.type} policy is current" in x),
                        insurance.nodes[node].examples[0])
            messages.append({"role": "assistant", "content": render(said, scenario.values)})
        else:
            messages.append({"role": "user", "content": user.respond(messages).text})
    described = user.respond(messages).text
    assert scenario.values["policy"]["incident"] in described, described


def test_values_only_the_business_knows_are_found_from_the_graph(travel):
    assert lookups(travel) == {"airline", "flight_number", "departure_time", "price", "booking_ref"}
    assert lookups(load_domain("zoom")) == {"feature", "ticket_id"}
    assert "policy" in lookups(load_domain("insurance")) and "policy_number" not in lookups(load_domain("insurance"))


# --------------------------------------------------------------------------- the customer

def test_an_off_topic_question_comes_before_the_answer_not_instead_of_it(travel):
    # found: after "do you have an app for this?" the customer never stated its trip at all
    scenario, path = scenario_for(travel, "off_topic")
    user = OfflineUser(travel, scenario, path)
    user.challenge_due = 0
    reply = user.respond(greet())
    assert reply.challenge and any(reply.text.startswith(q) for q in OFF_TOPIC)
    values = scenario.values
    assert values["destination"] in reply.text and values["origin"] in reply.text


def test_the_customer_chooses_what_it_was_offered(travel):
    # found: offered an Emirates flight, the customer answered "Ok LATAM it is" (its scenario's airline)
    # and picked "the 9:40 am departure" that nobody offered
    scenario, path = scenario_for(travel, "none", ("greet", "trip_request", "offer_flights", "choose_flight"))
    user = OfflineUser(travel, scenario, path)
    trip = user.respond(greet()).text
    v = scenario.values
    offer = f"For {v['origin']} to {v['destination']} I'd recommend Emirates 1045. It departs at 6:10 am and costs $510."
    replies = set()
    for k in range(12):
        user = OfflineUser(travel, scenario, path, seed=k)
        user.respond(greet())
        messages = greet() + [{"role": "user", "content": trip}, {"role": "assistant", "content": offer}]
        replies.add(user.respond(messages).text)
    said = " ".join(replies)
    assert scenario.values["airline"] != "Emirates" and scenario.values["airline"] not in said
    assert scenario.values["departure_time"] not in said.replace("6:10 am", "")
    assert "Emirates" in said or "1045" in said or "6:10 am" in said


def test_the_customer_corrects_a_wrong_value_whatever_its_persona(travel):
    scenario, path = scenario_for(travel, "none", ("greet", "trip_request", "offer_flights", "choose_flight"))
    user = OfflineUser(travel, scenario, path)
    trip = user.respond(greet()).text
    wrong = next(c for c in travel.values_of("destination") if c != scenario.values["destination"])
    offer = f"Good news! Emirates flight 1045 leaves {scenario.values['origin']} at 6:10 am and flies straight to {wrong}."
    reply = user.respond(greet() + [{"role": "user", "content": trip}, {"role": "assistant", "content": offer}])
    assert reply.challenge and scenario.values["destination"] in reply.text and "not right" in reply.text


def test_a_customer_asking_for_another_date_and_taking_the_flight_at_once_holds_to_the_new_date(travel):
    # found: "What if I left on March 24 instead? Ok Delta it is." — the agent summarised on March 24 and the
    # customer put it "right" to the old date: the renewal waited for a second offer the customer never saw
    from subterra.workflow import render
    route = ("greet", "trip_request", "offer_flights", "change_search", "offer_flights", "choose_flight",
             "booking_summary")
    scenario, path = scenario_for(travel, "two_answers", route)
    v, user = scenario.values, OfflineUser(travel, scenario, path)
    user.challenge_due = 1                                   # the trip as asked, then the two answers at once
    messages = greet()
    messages.append({"role": "user", "content": user.respond(messages).text})
    messages.append({"role": "assistant", "content": render(travel.nodes["offer_flights"].examples[0], v)})
    both = user.respond(messages)
    assert both.challenge and v["new_date"] in both.text, both.text
    summary = next(t for t in travel.nodes["booking_summary"].examples if "{travel_date}" in t)
    messages.append({"role": "user", "content": both.text})
    messages.append({"role": "assistant", "content": render(summary, {**v, "travel_date": v["new_date"]})})
    reply = user.respond(messages)
    assert not reply.challenge and "not right" not in reply.text, reply.text   # it books on the new date


def test_a_customer_who_asked_for_another_date_corrects_an_agent_that_books_on_the_old_one(travel):
    # found: an agent that summarised on the old date right after the change request was accepted: the customer
    # took the new date only from the agent's second offer, so an agent that skipped it was never held to it
    from subterra.workflow import render
    route = ("greet", "trip_request", "offer_flights", "change_search", "offer_flights", "choose_flight",
             "booking_summary")
    scenario, path = scenario_for(travel, "none", route)
    v, summary = scenario.values, next(t for t in travel.nodes["booking_summary"].examples if "{travel_date}" in t)
    for date, corrected in ((v["travel_date"], True), (v["new_date"], False)):
        user, messages = OfflineUser(travel, scenario, path), greet()
        messages.append({"role": "user", "content": user.respond(messages).text})
        messages.append({"role": "assistant", "content": render(travel.nodes["offer_flights"].examples[0], v)})
        change = user.respond(messages).text
        assert v["new_date"] in change, change
        messages.append({"role": "user", "content": change})
        messages.append({"role": "assistant", "content": render(summary, {**v, "travel_date": date})})
        reply = user.respond(messages)
        assert reply.challenge == corrected and ("not right" in reply.text) == corrected, (date, reply.text)
        if corrected:
            assert v["new_date"] in reply.text, reply.text


def test_after_a_declined_card_the_customer_gives_the_other_card_and_the_judge_holds_the_agent_to_it(travel):
    # found: the customer gave the declined card again, and an agent that declined it again looped
    from subterra.workflow import render
    book = ("greet", "trip_request", "offer_flights", "choose_flight", "booking_summary", "confirm_booking",
            "booking_confirmed")
    scenario, path = scenario_for(travel, "none", book)
    v, user = scenario.values, OfflineUser(travel, scenario, path)
    messages = greet()

    def agent(node, card):
        said = render(travel.nodes[node].examples[0], {**v, "card_last4": card})
        messages.append({"role": "assistant", "content": said})
        messages.append({"role": "user", "content": user.respond(messages).text})
        return messages[-1]["content"]

    messages.append({"role": "user", "content": user.respond(messages).text})
    agent("offer_flights", v["card_last4"])
    assert v["card_last4"] in agent("booking_summary", v["card_last4"])      # the first confirmation: the first card
    first, second = agent("payment_declined", v["card_last4"]), agent("payment_declined", v["other_card"])
    for reply in (first, second):                                      # declined (even twice): the other card
        assert v["other_card"] in reply and v["card_last4"] not in reply, reply
    judge = OfflineJudge(travel)
    nodes = ["greet", "trip_request", "offer_flights", "choose_flight", "booking_summary", "confirm_booking",
             "payment_declined", "confirm_booking", "payment_declined", "confirm_booking"]
    assert judge.information_accuracy({"messages": messages, "trace_nodes": nodes}, v, [])[0] == 5
    stale = render(travel.nodes["payment_declined"].examples[0], v)    # declines the first card again
    t = {"messages": messages[:-2] + [{"role": "assistant", "content": stale}] + messages[-1:], "trace_nodes": nodes}
    assert judge.information_accuracy(t, v, [])[0] == 4


@pytest.mark.parametrize("challenge", [c for c in CHALLENGES if c != "none"])
def test_every_persona_poses_its_challenge_and_the_oracle_still_finishes(travel, challenge):
    scenario, path = scenario_for(travel, challenge, ("greet", "trip_request", "offer_flights", "choose_flight"))
    t = converse(Oracle(travel), OfflineUser(travel, scenario, path), travel, scenario, path)
    assert t.challenged, t.messages
    verdict = OfflineJudge(travel).score(_row(t))
    assert all(verdict.scores[c] == 5 for c in CRITERIA), (verdict.reasons, t.messages)
    if challenge == "gives_up":
        assert t.stop_reason == "gave_up" and "Goodbye" in t.messages[-1]["content"] + " Goodbye"


def test_a_slip_is_put_right_in_the_next_message(travel):
    scenario, path = scenario_for(travel, "corrects_earlier", ("greet", "trip_request", "offer_flights"))
    t = converse(Oracle(travel), OfflineUser(travel, scenario, path), travel, scenario, path)
    customer = [m["content"] for m in t.messages if m["role"] == "user"]
    fix = next(k for k, text in enumerate(customer) if text.startswith("Sorry, I said"))
    assert fix >= 1
    wrong, meant = customer[fix].split("Sorry, I said ")[1].split(" by mistake, it's ")
    assert wrong in customer[fix - 1] and meant.split(". ")[0] in str(scenario.values.values())


# --------------------------------------------------------------------------- the controller

def test_the_controller_asks_again_when_nothing_matched(travel):
    # found: the controller moved on as if answered and froze a card whose owner had not yet given a name
    scenario, path = scenario_for(travel, "none")
    controller = Orchestrated(travel)
    controller.reset(scenario)
    first = controller.respond([])
    assert controller.node == "greet"
    messages = [{"role": "assistant", "content": first.text},
                {"role": "user", "content": "Quick question first: do you have an app for this?"}]
    again = controller.respond(messages)
    assert again.node == "greet" and again.text != first.text
    messages += [{"role": "assistant", "content": again.text},
                 {"role": "user", "content": "Hmm, I'm not sure about all of that yet. The destination is Hobart."}]
    assert controller.respond(messages).node == "greet"          # half an answer: still asking
    messages += [{"role": "assistant", "content": "..."},
                 {"role": "user", "content": "From Doha to Hobart on March 11, 2 travellers, economy."}]
    assert controller.respond(messages).node == "offer_flights"


def test_the_controller_states_looked_up_values_never_a_placeholder(travel):
    # found: the controller wrote "the address", "the name" where only the business knows the value
    scenario, path = scenario_for(travel, "none", ("greet", "trip_request", "offer_flights"))
    controller = Orchestrated(travel)
    controller.reset(scenario)
    v = scenario.values
    messages = [{"role": "assistant", "content": controller.respond([]).text},
                {"role": "user", "content": f"From {v['origin']} to {v['destination']} on {v['travel_date']}, "
                                            f"{v['travellers']} travellers, {v['cabin']}."}]
    offer = controller.respond(messages)
    assert offer.node == "offer_flights" and "the airline" not in offer.text and "the price" not in offer.text
    assert str(v["price"]) in offer.text or v["airline"] in offer.text or str(v["flight_number"]) in offer.text


def test_a_loop_is_taken_once_then_the_procedure_moves_on():
    # found (Zoom): after a second "still failing" the controller explained the same fix again instead of
    # escalating, and the customer, following its own plan, was pushed off it
    zoom = load_domain("zoom")
    scenario, path = scenario_for(zoom, "none")
    controller = Orchestrated(zoom)
    controller.reset(scenario)
    controller.node = "still_failing"
    assert controller.choose("still_failing", {}) == "explain_fix"
    assert controller.choose("still_failing", {}) == "collect_details"


# --------------------------------------------------------------------------- the judge

def _row(t):
    from dataclasses import asdict
    return asdict(t)


def test_an_invented_flight_is_judged_for_consistency_not_against_the_scenario(travel):
    # found: the offline judge counted 12 "wrong values" against an agent that could not know the flight
    scenario, path = scenario_for(travel, "none", ("greet", "trip_request", "offer_flights", "choose_flight"))
    t = _row(converse(Oracle(travel), OfflineUser(travel, scenario, path), travel, scenario, path))
    judge = OfflineJudge(travel)
    assert judge.score(t).scores["information_accuracy"] == 5
    v = scenario.values
    other = next(a for a in travel.values_of("airline") if a != v["airline"])
    invented = dict(t, messages=[dict(m, content=m["content"].replace(v["airline"], other))
                                 if m["role"] == "assistant" else m for m in t["messages"]])
    verdict = judge.score(invented)
    assert verdict.scores["information_accuracy"] == 5 and verdict.scores["consistency"] == 5
    agent_turns = [k for k, m in enumerate(t["messages"]) if m["role"] == "assistant" and v["airline"] in m["content"]]
    assert len(agent_turns) >= 2
    late = agent_turns[-1]                                  # the agent changes its own flight half-way
    changed = dict(t, messages=[dict(m, content=m["content"].replace(v["airline"], other)) if k == late else m
                                for k, m in enumerate(t["messages"])])
    assert judge.score(changed).scores["consistency"] < 5


def test_graceful_handling_sees_an_agent_that_carries_on_after_the_customer_left(travel):
    scenario, path = scenario_for(travel, "gives_up")
    t = _row(converse(Oracle(travel), OfflineUser(travel, scenario, path), travel, scenario, path))
    judge = OfflineJudge(travel)
    assert t["stop_reason"] == "gave_up" and judge.score(t).scores["graceful_handling"] == 5
    offer = travel.nodes["offer_flights"].examples[3]
    from subterra.workflow import render
    stubborn = dict(t, messages=t["messages"][:-1] + [{"role": "assistant", "content": render(offer, scenario.values)}])
    assert judge.score(stubborn).scores["graceful_handling"] == 2
    # a compiled model's own goodbye, whose words read like the card step ("Nothing has been changed"): let go
    goodbye = "Of course. I'm sorry, the chat was interrupted. Nothing has been changed. Take care!"
    assert matcher_for(travel, "agent").match(goodbye).node == "payment_declined"
    polite = dict(t, messages=t["messages"][:-1] + [{"role": "assistant", "content": goodbye}])
    assert judge.score(polite).scores["graceful_handling"] == 5 and judge.score(polite).scores["task_success"] == 5
    asks = dict(t, messages=t["messages"][:-1] + [{"role": "assistant", "content": "Goodbye! Do you have another card?"}])
    assert judge.score(asks).scores["graceful_handling"] == 2


def test_a_reask_after_an_aside_is_no_violation_but_a_skipped_step_is(travel):
    messages = [{"role": "assistant", "content": "Hey! I'm your booking assistant. Where would you like to travel?"},
                {"role": "user", "content": "Before we go on, is this call recorded?"},
                {"role": "assistant", "content": "No problem. Welcome. Let me know where you're headed and on what date."},
                {"role": "user", "content": "Doha to Hobart, March 11, 2 traveller(s). budget around $2600"},
                {"role": "assistant", "content": "You're all set! Your booking reference is ZH4RT2."}]
    trace = conformance(travel, messages, {})
    assert trace.nodes[:4] == ["greet", None, "greet", "trip_request"] and trace.asides == 1
    assert trace.invalid_steps == [(4, "trip_request", "booking_confirmed")]


# --------------------------------------------------------------------------- calibration

def _calibrate(workflow, n, tmp_path, condition):
    rows = simulate(workflow, [condition], tmp_path / workflow.name, n=n, progress=False)[condition.name]
    verdicts = [OfflineJudge(workflow).score(r) for r in rows]
    failures = sum(v.failure for v in verdicts)
    means = {c: sum(s) / len(s) for c in CRITERIA
             if (s := [v.scores[c] for v in verdicts if v.scores[c] is not None])}
    return failures, means, rows


@pytest.mark.parametrize("domain", [*DOMAINS, "restaurant"])
def test_the_oracle_loses_almost_nothing_on_every_workflow(domain, tmp_path):
    """A smaller run of the calibration (benchmarks/bench_harness.py runs 200 scenarios per workflow)."""
    workflow = (parse_workflow(OWN_WORKFLOW.read_text(), source=str(OWN_WORKFLOW)) if domain == "restaurant"
                else load_domain(domain))
    n = 24 if domain == "insurance" else 40
    failures, means, rows = _calibrate(workflow, n, tmp_path, Oracle(workflow))
    assert failures <= max(1, n // 100), [r["scenario_id"] for r in rows]
    assert set(means) == set(CRITERIA) and all(m >= 4.8 for m in means.values()), means
    assert {json_persona(r) for r in rows} >= set(CHALLENGES) - {"none"} or n < 40


def json_persona(row) -> str:
    import json
    return json.loads(row["scenario"])["persona"]["challenge"]


def test_a_broken_agent_fails_the_same_harness(travel, tmp_path):
    class Mute(Orchestrated):
        """Says the greeting and then the same thing for ever: the harness must not pass it."""
        name = "mute"

        def route(self, messages, known):
            return "greet"

    failures, means, _ = _calibrate(travel, 20, tmp_path, Mute(travel))
    assert failures == 20 and means["task_success"] <= FAILURE_THRESHOLD


def test_a_rambling_reply_does_not_end_the_conversation(travel):
    # found: the base model's opening ("I'm here to help you plan your dream vacation...") read as a hand-off,
    # so the customer left after one turn
    scenario, path = scenario_for(travel, "none")
    user = OfflineUser(travel, scenario, path)
    ramble = ("I'm here to help you plan your dream vacation. Whether it's a romantic getaway, a relaxing getaway, "
              "or a fun-loving adventure, I can help you find the perfect place to relax and enjoy your vacation.")
    reply = user.respond([{"role": "assistant", "content": ramble}])
    assert not reply.stop and reply.text.startswith("Sorry, I'm not sure")
    handoff = "Of course. I'm transferring you to one of our travel consultants now. The wait is usually a few minutes."
    assert user.respond([{"role": "assistant", "content": handoff}]).reason == "terminal:escalation"


def test_a_customer_led_off_its_plan_keeps_to_its_situation():
    # found: a compiled Zoom model retried the fix where the customer's path escalated; the customer, with no
    # plan step after that retry, took the first way the graph allows ("That did it!") and the conversation ended
    # in a success its path rules out. The error is still there: it says so again.
    from subterra.workflow import render

    zoom = load_domain("zoom")
    head = ("greet", "report_problem", "explain_fix", "fix_worked", "confirm_working", "still_failing",
            "collect_details")
    scenario, path = scenario_for(zoom, "none", head)
    user, messages = OfflineUser(zoom, scenario, path), []
    for node in ("greet", "explain_fix", "confirm_working", "explain_fix"):     # a retry the path never takes
        messages.append({"role": "assistant", "content": render(zoom.nodes[node].examples[0], scenario.values)})
        reply = user.respond(messages)
        messages.append({"role": "user", "content": reply.text})
        assert not reply.stop
    said = matcher_for(zoom, "user").match(messages[-1]["content"], scenario.values).node
    assert said == "still_failing"
