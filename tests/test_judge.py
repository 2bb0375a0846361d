"""Notebook 06 / subterra.judge: the rubric, its cap, malformed verdicts, the offline judge."""

import json

import pytest

from subterra import enumerate_paths, parse_workflow
from subterra.backends import Backend, Completion, Usage
from subterra.judge import (CRITERIA, RUBRIC, LLMJudge, MalformedVerdict, OfflineJudge, apply_rules,
                            parse_verdict)
from subterra.simulation import OfflineUser, Orchestrated, converse, evaluation_scenarios
from conftest import TOY


def verdict_json(**overrides):
    return json.dumps({c: {"score": overrides.get(c, 5), "reason": f"{c} looks fine."} for c in CRITERIA})


class Scripted(Backend):
    name = "scripted"

    def __init__(self, replies):
        super().__init__("claude-sonnet-5-5")
        self.replies, self.requests = list(replies), []

    async def acomplete(self, request):
        self.requests.append(request)
        return Completion(self.replies.pop(0), Usage(500, 80), self.model, self.name)


@pytest.fixture(scope="module")
def toy():
    return parse_workflow(TOY)


@pytest.fixture(scope="module")
def transcripts(toy):
    from dataclasses import asdict

    paths = {p.id: p for p in enumerate_paths(toy)}
    out = []
    for s in evaluation_scenarios(toy, 12):
        out.append(asdict(converse(Orchestrated(toy), OfflineUser(toy, s, paths[s.path_id]), toy, s,
                                   paths[s.path_id])))
    return out


def test_rubric_has_five_anchored_levels_per_criterion():
    assert tuple(RUBRIC) == CRITERIA
    assert all(sorted(RUBRIC[c]) == [1, 2, 3, 4, 5] and all(RUBRIC[c].values()) for c in CRITERIA)


def test_graceful_handling_is_not_scored_without_a_challenge():
    # the paper's cap at 3 would put a 3 into the mean for every cooperative customer, so that a perfect
    # agent could not average 5; with nothing to handle there is no score
    scores = {c: 5 for c in CRITERIA}
    assert apply_rules(scores, challenged=False)["graceful_handling"] is None
    assert apply_rules(scores, challenged=True)["graceful_handling"] == 5
    assert apply_rules(scores, challenged=False)["task_success"] == 5


@pytest.mark.parametrize("reply, problem", [
    ("I think it went well.", "no JSON"),
    ('{"task_success": {"score": 5, "reason": "ok"}', "invalid JSON"),
    (verdict_json().replace('"naturalness"', '"style"'), "missing criterion 'naturalness'"),
    (verdict_json(consistency=7), "integer 1-5"),
    (verdict_json(consistency="5"), "integer 1-5"),
    (verdict_json().replace("consistency looks fine.", ""), "one-sentence reason"),
])
def test_malformed_verdicts_are_rejected(reply, problem):
    with pytest.raises(MalformedVerdict, match=problem):
        parse_verdict(reply)


def test_llm_judge_retries_then_records_an_error_never_a_default(toy, transcripts):
    t = transcripts[0]
    good = Scripted(["not json", verdict_json(task_success=2)])
    verdict = LLMJudge(toy, good).score(t)
    assert verdict.error is None and verdict.scores["task_success"] == 2 and verdict.failure
    assert len(good.requests) == 2 and good.requests[0].key("x", "y") != good.requests[1].key("x", "y")
    assert (verdict.scores["graceful_handling"] is None) == (not t["challenged"])
    prompt = good.requests[0].messages[0]["content"]
    assert "Braga" in prompt and "Assistant:" in prompt and "Customer:" in prompt
    bad = Scripted(["nope"] * 3)
    verdict = LLMJudge(toy, bad).score(t)
    assert verdict.scores == {} and "malformed verdict after 3 attempts" in verdict.error
    assert verdict.failure is None and verdict.row()["task_success"] is None


def test_offline_judge_rewards_adherence_and_punishes_wrong_values(toy, transcripts):
    judge = OfflineJudge(toy)
    adherent = [t for t in transcripts if t["valid_path"] and t["right_ending"]]
    assert adherent
    for t in adherent:
        verdict = judge.score(t)
        assert verdict.scores["task_success"] == 5 and verdict.scores["information_accuracy"] == 5
        assert (verdict.scores["graceful_handling"] is None) == (not t["challenged"])
        assert set(verdict.reasons) == set(CRITERIA)
    broken = dict(adherent[0], messages=[dict(m) for m in adherent[0]["messages"]])
    for m in broken["messages"]:
        if m["role"] == "assistant":
            m["content"] = m["content"].replace("Braga", "Lisbon")
    assert judge.score(broken).scores["information_accuracy"] < 5
    stalled = dict(adherent[0], right_ending=False, stop_reason="loop", trace_nodes=["greet"])
    verdict = judge.score(stalled)
    assert verdict.scores["task_success"] == 1 and verdict.failure
    failed = dict(adherent[0], error="ValueError: boom")
    assert judge.score(failed).error.startswith("conversation failed")


# --------------------------------------------------------------------------- product knowledge

@pytest.fixture(scope="module")
def zoom_oracle():
    from dataclasses import asdict

    from subterra import load_domain
    from subterra.simulation import Oracle

    zoom = load_domain("zoom")
    paths = {p.id: p for p in enumerate_paths(zoom)}
    rows = [asdict(converse(Oracle(zoom), OfflineUser(zoom, s, paths[s.path_id]), zoom, s, paths[s.path_id]))
            for s in evaluation_scenarios(zoom, 24)]
    return zoom, rows


def test_the_oracle_states_only_the_facts_of_the_customers_own_error(zoom_oracle):
    zoom, rows = zoom_oracle
    judge = OfflineJudge(zoom)
    verdicts = [judge.score(t) for t in rows]
    assert sum(v.facts_stated for v in verdicts) >= len(rows)              # the oracle explains every error
    assert all(v.facts_right == v.facts_stated for v in verdicts)
    assert all(v.scores["information_accuracy"] == 5 for v in verdicts)


def test_another_codes_fix_is_a_wrong_fact(zoom_oracle):
    """The listener used to hear a record by its code only: error 5003 with 5000's fix scored full marks."""
    zoom, rows = zoom_oracle
    judge, errors = OfflineJudge(zoom), zoom.catalogue["error"]
    swapped = 0
    for t in rows:
        own = json.loads(t["scenario"])["values"]["error"]
        other = next(r for r in errors if r["fix"] != own["fix"] and r["code"] != own["code"])
        messages = [dict(m) for m in t["messages"]]
        turn = next((m for m in messages if m["role"] == "assistant" and own["fix"] in m["content"]), None)
        if turn is None:
            continue
        turn["content"] = turn["content"].replace(own["fix"], other["fix"])
        verdict, before = judge.score(dict(t, messages=messages)), judge.score(t)
        assert verdict.scores["information_accuracy"] < before.scores["information_accuracy"] == 5
        assert verdict.facts_right == before.facts_right - 1 and verdict.facts_stated == before.facts_stated
        assert "product fact(s) belong to another record" in verdict.reasons["information_accuracy"]
        swapped += 1
    assert swapped >= len(rows) // 2


def test_another_policys_deductible_is_a_wrong_fact():
    """Insurance's policies differ in their figures: the oracle's own deductible is right, another's is wrong."""
    from dataclasses import asdict

    from subterra import load_domain
    from subterra.simulation import Oracle

    insurance = load_domain("insurance")
    judge, paths = OfflineJudge(insurance), {p.id: p for p in enumerate_paths(insurance)}
    swapped = 0
    for s in evaluation_scenarios(insurance, 40):
        t = asdict(converse(Oracle(insurance), OfflineUser(insurance, s, paths[s.path_id]), insurance, s,
                            paths[s.path_id]))
        own = s.values["policy"]["deductible"]
        said = f"${own} deductible"
        turn = next((m for m in t["messages"] if m["role"] == "assistant" and said in m["content"]), None)
        if turn is None:
            continue
        before = judge.score(t)
        assert before.facts_right == before.facts_stated and before.scores["information_accuracy"] == 5
        turn["content"] = turn["content"].replace(said, f"${own + 750} deductible")
        verdict = judge.score(t)
        assert verdict.scores["information_accuracy"] < 5 and verdict.facts_right == before.facts_right - 1
        swapped += 1
    assert swapped >= 3
