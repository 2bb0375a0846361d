"""Notebook 07 / subterra.analysis: tables, results.json, scores.csv, plots."""

import json

import matplotlib
import pandas as pd
import pytest

from subterra import parse_workflow
from subterra.analysis import (beside_paper, comparison_table, cost_table, paper_results, plot_costs,
                               plot_paired_differences, plot_scores, score_table, write_results)
from subterra.judge import CRITERIA, OfflineJudge, judge_transcripts, scores_frame
from subterra.simulation import Orchestrated, simulate
from conftest import TOY, recorded_workflow

matplotlib.use("Agg")


class Sloppy(Orchestrated):
    """Says the wrong city and is slow and pricey: a condition that should lose."""

    name = "in_context"

    def respond(self, messages):
        turn = super().respond(messages)
        turn.text = turn.text.replace("Braga", "Lisbon")
        turn.dollars, turn.seconds = 0.05, 2.0
        return turn


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    toy = parse_workflow(TOY)
    out = tmp_path_factory.mktemp("sim")
    transcripts = simulate(toy, [Orchestrated(toy), Sloppy(toy)], out, n=40, progress=False)
    transcripts["subterranean"] = [dict(t, condition="subterranean") for t in transcripts.pop("orchestrated")]
    scores = scores_frame(judge_transcripts([t for ts in transcripts.values() for t in ts], OfflineJudge(toy),
                                            progress=False))
    return toy, transcripts, scores


def test_score_and_comparison_tables(run):
    _, _, scores = run
    table = score_table(scores)
    assert list(table.index) == ["subterranean", "in_context"]
    assert table.loc["subterranean", "Information Accuracy"] > table.loc["in_context", "Information Accuracy"]
    assert 0 <= table.loc["in_context", "failure_rate"] <= 1 and table["n"].tolist() == [40, 40]
    comparisons = comparison_table(scores, n_resamples=500)
    accuracy = comparisons[comparisons["criterion"] == "Information Accuracy"].iloc[0]
    assert accuracy["other"] == "in_context" and accuracy["difference"] > 0 and accuracy["d"] > 0
    assert accuracy["ci_low"] <= accuracy["difference"] <= accuracy["ci_high"]
    assert accuracy["p_holm"] < 0.001 and accuracy["stars"] == "***"


def test_cost_table_and_break_even(run):
    _, transcripts, _ = run
    table = cost_table(transcripts, compile_dollars=60.0)
    ours, theirs = table.loc["subterranean", "dollars"], table.loc["in_context", "dollars"]
    assert theirs > ours > 0
    assert table.loc["in_context", "break_even_conversations"] == pytest.approx(60.0 / (theirs - ours))
    assert table.loc["in_context", "seconds_per_turn"] == pytest.approx(2.0, rel=0.01)
    assert table.loc["subterranean", "prompt_tokens_per_turn"] > 0


def test_results_files(run, tmp_path):
    _, transcripts, scores = run
    results_json, scores_csv = write_results(tmp_path, "toy", scores, transcripts, 60.0, n_resamples=300)
    summary = json.loads(results_json.read_text())
    assert set(summary["conditions"]) == {"subterranean", "in_context"}
    entry = summary["conditions"]["subterranean"]
    assert set(entry["scores"]) == set(CRITERIA)
    for key in ("failure_rate", "prompt_tokens_per_agent_turn", "seconds_per_turn", "dollars_per_conversation"):
        assert isinstance(entry[key], float)
    assert len(summary["comparisons"]) == len(CRITERIA)
    assert {"criterion", "conditions", "p", "p_holm", "d"} <= set(summary["comparisons"][0])
    frame = pd.read_csv(scores_csv)
    assert len(frame) == 80 and set(CRITERIA) <= set(frame.columns)
    ids = frame.groupby("condition")["scenario_id"].apply(frozenset)
    assert ids["subterranean"] == ids["in_context"]   # paired by scenario


def test_paper_numbers_and_plots(run):
    _, transcripts, scores = run
    paper = paper_results()
    assert paper["travel"]["scores"]["subterranean"]["task_success"] == 4.11 and "2605.22502" in paper["source"]
    side = beside_paper(score_table(scores), "travel")
    assert side.loc["subterranean", ("paper", "Task Success")] == 4.11
    assert plot_scores(scores).get_ylabel().startswith("mean score")
    assert plot_paired_differences(scores).get_title().startswith("Paired differences")
    axes = plot_costs(transcripts)
    assert axes[0].get_yscale() == "log"


def test_results_json_stays_valid_when_a_difference_never_varies(run, tmp_path):
    _, transcripts, scores = run
    shifted = scores[scores["condition"] == "subterranean"].copy()
    shifted["condition"] = "orchestrated"
    for criterion in CRITERIA:                          # every paired difference is exactly 1: d is infinite
        shifted[criterion] = (shifted[criterion] - 1).clip(lower=0)
    base = scores[scores["condition"] == "subterranean"]
    keep = (base.set_index("scenario_id")[list(CRITERIA)] >= 1).all(axis=1)
    both = pd.concat([base[base["scenario_id"].map(keep)], shifted[shifted["scenario_id"].map(keep)]])
    runs = {"subterranean": transcripts["subterranean"], "orchestrated": transcripts["subterranean"]}
    results_json, _ = write_results(tmp_path, "toy", both, runs, 60.0, n_resamples=200)
    summary = json.loads(results_json.read_text())                 # strict JSON: no Infinity, no NaN
    assert any(c["d"] is None for c in summary["comparisons"])


def test_paired_differences_plot_a_criterion_one_condition_never_scored():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from subterra.analysis import plot_paired_differences
    from subterra.judge import CRITERIA

    rows = []
    for k in range(4):
        for condition in ("subterranean", "langgraph"):
            scores = {c: 4 + (k % 2) for c in CRITERIA}
            if condition == "langgraph":
                scores["graceful_handling"] = None          # no challenge posed in any of its conversations
            rows.append({"condition": condition, "scenario_id": f"s{k}", "error": None, **scores})
    ax = plot_paired_differences(pd.DataFrame(rows))
    assert ax.get_title().startswith("Paired differences")
    assert {t.get_text() for t in ax.get_xticklabels()} >= {"Task Success", "Naturalness"}


# --------------------------------------------------------------------------- the full setting, from its records

@pytest.fixture(scope="module")
def full_setting():
    from subterra.analysis import full_setting_table

    return full_setting_table(n_resamples=200)


@pytest.mark.parametrize("domain", ["travel", "zoom", "insurance"])
def test_the_compiled_model_beats_its_orchestrated_base_on_the_recorded_full_setting(full_setting, domain):
    """Table 1's central comparison, judged now from data/results/<domain>: what docs/results.md reports. Travel
    and Zoom meet the paper's 5.5%; insurance (26.5%) does not yet, and still beats its base."""
    ours, base = full_setting.loc[(domain, "subterranean")], full_setting.loc[(domain, "orchestrated")]
    assert ours["n"] == 200 and base["n"] >= 32 and ours["pairs"] == base["n"]
    assert ours["failure_rate"] < base["failure_rate"]
    assert ours["vs_orchestrated"] > 0 and ours["p_holm"] < 0.001
    if domain != "insurance":
        assert ours["failure_rate"] <= 0.055


def test_product_knowledge_is_measured_where_a_domain_has_a_catalogue(full_setting):
    assert full_setting.loc[("travel", "subterranean"), "product_knowledge"] != \
        full_setting.loc[("travel", "subterranean"), "product_knowledge"]          # NaN: travel has no catalogue
    assert full_setting.loc[("zoom", "oracle"), "product_knowledge"] == 1.0        # the harness's own: every fact right
    assert 0 < full_setting.loc[("zoom", "subterranean"), "product_knowledge"] < 1  # the compiled model's: measured
    assert full_setting.loc[("insurance", "oracle"), "product_knowledge"] == 1.0
    assert full_setting.loc[("insurance", "subterranean"), "product_knowledge"] < 0.05  # no policy's figures


def test_the_insurance_compile_knows_none_of_its_policies_figures():
    """docs/results.md: of the deductibles and limits the compiled model states, 1 of 87 is the customer's
    policy's; the incident it repeats is the customer's own words and no knowledge."""
    from subterra.analysis import fact_table, recorded_runs
    from subterra.workflow import load_domain

    table = fact_table(load_domain("insurance"), recorded_runs("insurance"))
    ours, oracle = table.loc["subterranean"], table.loc["oracle"]
    assert set(ours.index) == set(oracle.index) == {"policy.deductible", "policy.limit"}
    assert (ours.loc["policy.deductible", "stated"], ours.loc["policy.limit", "stated"]) == (40, 47)
    assert round(ours.loc["policy.deductible", "right"] * 40) == 1 and ours.loc["policy.limit", "right"] == 0
    assert (oracle["right"] == 1.0).all()


def test_a_learning_curve_is_judged_on_the_scenarios_every_checkpoint_ran():
    """Zoom's checkpoints at 100 and 200 steps ran the first 32 scenarios; the 300-step record ran 200, and only
    its first 32 stand beside them (docs/results.md, the table along the compile)."""
    from subterra.analysis import compile_runs, score_table

    scores = compile_runs("zoom", "curve", "step-300")
    table = score_table(scores)
    assert list(table.index) == ["step-100", "step-200", "step-300"] and (table["n"] == 32).all()
    by_run = scores.groupby("condition")["scenario_id"].apply(frozenset)
    assert len(set(by_run)) == 1                                       # paired: the same 32 in every run
    assert table["failure_rate"].is_monotonic_decreasing and table["product_knowledge"].is_monotonic_increasing
    with pytest.raises(FileNotFoundError, match="data/results/travel/curve"):
        compile_runs("travel", "curve", "step-300")


def test_zoom_compiled_from_other_seeds_fails_on_other_scenarios():
    """The same recipe, budget and corpus from training seeds 1 and 2, on the same 200 scenarios (docs/results.md,
    "From one compile to the next"): the failure rate moves by a few points, the recorded compile is the best of
    three, and no scenario fails under all three seeds."""
    from subterra.analysis import compile_runs, score_table

    scores = compile_runs("zoom", "seeds", "seed-0")
    table = score_table(scores)
    assert list(table.index) == ["seed-0", "seed-1", "seed-2"] and (table["n"] == 200).all()
    failed = scores.pivot(index="scenario_id", columns="condition", values="failure")
    assert not failed.all(axis=1).any() and failed.any(axis=1).sum() == 27 and (failed.sum(axis=1) == 2).sum() == 7
    rates = table["failure_rate"]
    assert rates["seed-0"] <= 0.055 < rates["seed-1"] <= rates["seed-2"] <= 0.08
    assert 0.05 < rates.mean() < 0.06                                  # 5.7%: about the paper's 5.5%


def test_each_condition_is_priced_on_the_same_recorded_conversations():
    """Table 6 prices every condition on the oracle's conversations, replayed through its own prompts: the
    compiled model one call a turn with its one line, in-context one call a turn carrying the whole workflow,
    LangGraph a node call a turn and a router call where the step has several ways on (the router's picks
    follow the recorded steps, but for a step the oracle said again after a half answer: the graph moves on)."""
    from subterra import load_domain
    from subterra.agent import count_tokens
    from subterra.analysis import _Recorded, priced_conversations, recorded_runs
    from subterra.conditions import serialise_workflow
    from subterra.encoding import fit_tokenizer

    workflow = load_domain("insurance")
    oracle = recorded_runs("insurance")["oracle"][:3]
    tokenizer = fit_tokenizer([serialise_workflow(workflow)] + [m["content"] for t in oracle for m in t["messages"]],
                              600)
    priced = priced_conversations(workflow, oracle, tokenizer=tokenizer).set_index(["scenario_id", "condition"])
    workflow_tokens = len(tokenizer(serialise_workflow(workflow))["input_ids"])
    for t in oracle:
        turns = sum(m["role"] == "assistant" for m in t["messages"])
        row = priced.loc[t["scenario_id"]]
        assert (row["agent_turns"] == turns).all()
        assert row.loc["subterranean", "calls"] == row.loc["in_context", "calls"] == turns
        assert row.loc["in_context", "prompt_tokens"] > turns * workflow_tokens
        assert turns < row.loc["langgraph", "calls"] < 2 * turns
        assert row.loc["langgraph", "steps_as_recorded"] >= 0.9   # it has no way to stay at a step half answered
        assert row.loc["in_context", "dollars"] > row.loc["langgraph", "dollars"] > 10 * row.loc["subterranean",
                                                                                                 "dollars"]
    # the fast count, which tokenizes each piece between special tokens once, is count_tokens' count
    recorded, t = _Recorded(tokenizer, "claude-sonnet-5-5"), oracle[0]
    for i in range(1, len(t["messages"])):
        chat = [{"role": "system", "content": serialise_workflow(workflow)}] + t["messages"][:i]
        assert recorded.count(chat, t["messages"][i]["content"]) == count_tokens(tokenizer, chat,
                                                                                t["messages"][i]["content"])


def test_the_default_recipe_compiled_a_workflow_nobody_tuned_it_for():
    """Item 6 of the three-domain issue, judged now from data/results/bike_repair: SmolLM2-135M compiled by the
    default recipe, untouched, on a workflow written for the tests (19 nodes, five hubs that turn on the
    customer's answers), against the oracle on the same 40 scenarios (docs/compiling.md)."""
    from subterra.analysis import judge_recorded

    scores, runs = judge_recorded("bike_repair", workflow=recorded_workflow("bike_repair"))
    assert set(runs) == {"subterranean", "oracle"} and all(len(rows) == 40 for rows in runs.values())
    failures = scores.groupby("condition")["failure"].mean()
    assert failures["oracle"] == 0 and failures["subterranean"] <= 0.10
    # every kind of ending the workflow has is reached: the hubs were crossed both ways, not one path learnt
    endings = {t["trace_nodes"][-1] for t in runs["subterranean"] if t["trace_nodes"]}
    assert {"booked", "book_no", "frame_team"} <= endings


# --------------------------------------------------------------------------- loops

@pytest.fixture(scope="module")
def insurance_oracle(tmp_path_factory):
    from subterra import load_domain
    from subterra.simulation import Oracle

    wf = load_domain("insurance")
    run = simulate(wf, [Oracle(wf)], tmp_path_factory.mktemp("insurance"), n=24, progress=False)
    return wf, run["oracle"]


def _edited(transcript, nodes):
    return dict(transcript, trace_nodes=nodes)


def test_the_loop_table_tells_a_loop_left_early_from_one_gone_round_again(insurance_oracle):
    from subterra.analysis import LOOP_OUTCOMES, loop_table

    wf, oracle = insurance_oracle
    two = [t for t in oracle if t["trace_nodes"].count("another_item") == 1]
    assert two, "the 24 scenarios hold a claim with two items"
    early, again = [], []
    for t in oracle:
        nodes = [n for n in t["trace_nodes"] if n is not None]
        last = len(nodes) - 1 - nodes[::-1].index("item_logged") if "item_logged" in nodes else -1
        if "another_item" in nodes[:last]:       # the second item never asked for: out after the first
            early.append(_edited(t, nodes[:nodes.index("another_item")] + nodes[last + 1:]))
        if "no_more_items" in nodes:             # one more item than the customer had
            at = nodes.index("no_more_items")
            again.append(_edited(t, nodes[:at] + ["another_item", "ask_item", "item_description", "ask_evidence",
                                                  "evidence_none", "item_logged"] + nodes[at:]))
    table = loop_table(wf, {"oracle": oracle, "left_early": early, "went_round": again})
    item = table.loc["another_item -> ask_item"]
    assert list(table.columns) == ["conversations", *LOOP_OUTCOMES]
    assert item.loc["oracle", "right"] == 1.0 and item.loc["oracle", "conversations"] >= len(early)
    assert item.loc["left_early", "left early"] == 1.0 and item.loc["left_early", "conversations"] == len(early)
    assert item.loc["went_round", "went round again"] == 1.0
    document = table.loc["upload_attempt -> ask_evidence"]
    assert document.loc["oracle", "right"] == 1.0


# --------------------------------------------------------------------------- where failures come from

def test_a_failure_is_put_at_the_last_wrong_turn_before_its_ending(insurance_oracle):
    """A guess between an active policy and one in its grace period sends the claim the same way on; the estimate's
    branch decides where it ends. The failure goes to the estimate, and a failure that took every branch right
    to none."""
    from subterra.analysis import NO_WRONG_TURN, failure_turns

    wf, oracle = insurance_oracle
    t = next(t for t in oracle if "policy_active" in t["trace_nodes"] and "desk_review" in t["trace_nodes"])
    nodes = [{"policy_active": "policy_grace", "desk_review": "below_deductible"}.get(n, n) for n in t["trace_nodes"]]
    guessed = _edited(t, nodes)
    stalled = dict(t, scenario_id="stalled")
    runs = {"oracle": oracle, "edited": [guessed, stalled]}
    scores = pd.DataFrame([{"condition": c, "scenario_id": x["scenario_id"], "failure": c == "edited"}
                           for c, rows in runs.items() for x in rows])
    table = failure_turns(wf, runs, scores)
    edited = table.loc["edited"]
    assert edited.loc["total_estimate", "failures decided"] == 1 and edited.loc["total_estimate", "another branch"] == 0.5
    assert edited.loc["give_verification", "failures decided"] == 0
    assert edited.loc["give_verification", "another branch"] == 0.5
    assert edited.loc[NO_WRONG_TURN, "failures decided"] == 1
    assert (table.loc["oracle", "failures decided"] == 0).all() and (table.loc["oracle", "another branch"].dropna() == 0).all()
    assert "item_logged" not in table.loc["oracle"].index       # the customer's to choose: another item or not


def test_a_pass_after_a_wrong_turn_is_held_to_the_step_still_wanted():
    """A customer asked again after a wrong turn passes the hub once more than their path does. That extra pass
    wants what the first did: the wrong turn is one, and the passes after it are right where the agent then
    takes the path's steps (pairing the k-th pass with the path's k-th would call them all wrong)."""
    from subterra import load_domain
    from subterra.analysis import branch_table, failure_turns, recorded_runs

    wf = load_domain("travel")
    t = next(t for t in recorded_runs("travel")["oracle"]
             if t["trace_nodes"].count("confirm_booking") == 2 and t["trace_nodes"][-1] == "booking_confirmed")
    k = t["trace_nodes"].index("confirm_booking")
    assert t["trace_nodes"][k:] == ["confirm_booking", "payment_declined", "confirm_booking", "booking_confirmed"]
    extra = dict(t, scenario_id="extra", trace_nodes=t["trace_nodes"][:k] + ["confirm_booking", "booking_confirmed"]
                 + t["trace_nodes"][k:])                 # booked at once, asked for the card again, then as the path
    table = branch_table(wf, {"extra": [extra]}, "confirm_booking").loc["extra"]
    assert (table["visits"], table["visits right"], table["conversations right"]) == (3, 2 / 3, 0.0)
    scores = pd.DataFrame([{"condition": "extra", "scenario_id": "extra", "failure": True}])
    turns = failure_turns(wf, {"extra": [extra]}, scores).loc["extra"]
    assert turns.loc["confirm_booking", "passes"] == 3 and turns.loc["confirm_booking", "failures decided"] == 1
    assert turns.loc["confirm_booking", "another branch"] == 1 / 3


def test_insurances_compiled_failures_are_decided_at_the_estimate():
    """docs/results.md, "Where the failures come from": of the recorded compile's 53 failures most are decided at
    the estimate (the damage against the policy's deductible and limit), almost none at the status it guesses."""
    from subterra.analysis import failure_turns, judge_recorded
    from subterra.workflow import load_domain

    scores, runs = judge_recorded("insurance")
    table = failure_turns(load_domain("insurance"), runs, scores).loc["subterranean"]
    failures = int(scores[scores["condition"] == "subterranean"]["failure"].sum())
    assert table["failures decided"].sum() == failures == 53
    assert table.loc["total_estimate", "failures decided"] == 40 and table.loc["total_estimate", "another branch"] > 0.5
    assert table.loc["give_verification", "another branch"] > 0.4 and table.loc["give_verification", "failures decided"] <= 3
