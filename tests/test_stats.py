"""subterra.stats: checked against scipy, statsmodels and hand formulas on seeded random data."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
from statsmodels.stats.inter_rater import cohens_kappa
from statsmodels.stats.multitest import multipletests

from subterra import stats as S


def judge_scores(rng, n, low=1, high=5):
    return rng.integers(low, high + 1, size=n).astype(float)


# ------------------------------------------------------------------------------------------------ Wilcoxon

# n=10 with ties: scipy's exact permutation p (slow-ish, so one seed); n=30: normal approximation with ties;
# n=200: the paper's size.
@pytest.mark.parametrize("seed,n", [(0, 10)] + [(seed, n) for seed in range(3) for n in (30, 200)])
def test_wilcoxon_matches_scipy(seed, n):
    rng = np.random.default_rng(seed)
    a = judge_scores(rng, n)
    b = np.clip(a - rng.integers(-1, 3, size=n), 1, 5)  # many zero differences and ties, as judge scores have
    res = S.wilcoxon_paired(a, b)
    ref = st.wilcoxon(a, b, zero_method="wilcox", correction=False, method="auto")
    assert res.statistic == pytest.approx(ref.statistic)
    assert res.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert res.n == n and res.n_zero == int(np.sum(a == b))
    assert res.mean_difference == pytest.approx(np.mean(a - b))


def test_wilcoxon_continuous_exact():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=20), rng.normal(0.5, size=20)
    assert S.wilcoxon_paired(a, b).p == pytest.approx(st.wilcoxon(a, b).pvalue)


def test_wilcoxon_all_zero_differences_is_p_one_without_warning():
    a = np.array([3, 4, 5, 2, 1, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = S.wilcoxon_paired(a, a)
    assert res.p == 1.0 and res.mean_difference == 0.0 and res.n_zero == 6


# -------------------------------------------------------------------------------------------- Mann-Whitney

@pytest.mark.parametrize("seed", range(5))
def test_mann_whitney_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    a, b = judge_scores(rng, 150), judge_scores(rng, 90, low=2)
    res = S.mann_whitney(a, b)
    ref = st.mannwhitneyu(a, b, alternative="two-sided")
    assert res.statistic == pytest.approx(ref.statistic)
    assert res.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert (res.n_a, res.n_b) == (150, 90)
    assert res.mean_difference == pytest.approx(a.mean() - b.mean())


def test_mann_whitney_identical_constant_samples():
    assert S.mann_whitney([3, 3, 3], [3, 3, 3, 3]).p == 1.0


# ---------------------------------------------------------------------------------------------------- Holm

@pytest.mark.parametrize("seed", range(4))
def test_holm_matches_statsmodels(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, size=rng.integers(1, 40)) ** 2
    p[:: 3] = p[0]  # ties
    adjusted = S.holm(p)
    np.testing.assert_allclose(adjusted, multipletests(p, method="holm")[1], rtol=1e-12)
    assert np.all(adjusted >= p) and np.all(adjusted <= 1)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adjusted[order]) >= 0)


def test_holm_hand_case():
    np.testing.assert_allclose(S.holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])
    assert S.holm([0.6, 0.9])[0] == 1.0  # capped


@pytest.mark.parametrize("bad", [[], [0.1, np.nan], [0.1, 1.5], [-0.1]])
def test_holm_bad_input(bad):
    with pytest.raises(ValueError):
        S.holm(bad)


def test_stars():
    assert [S.stars(p) for p in (0.0005, 0.001, 0.005, 0.01, 0.049, 0.05, 1)] == ["***", "**", "**", "*", "*", "",
                                                                                  ""]


# -------------------------------------------------------------------------------------------- Cohen's d

def test_cohens_d_paired_hand():
    a, b = np.array([4, 5, 3, 5, 4.0]), np.array([3, 3, 3, 4, 2.0])
    diff = [1, 2, 0, 1, 2]  # mean 1.2, sd (ddof 1) sqrt(0.7)
    assert S.cohens_d_paired(a, b) == pytest.approx(1.2 / math.sqrt(0.7))
    assert S.cohens_d_paired(b, a) == pytest.approx(-1.2 / math.sqrt(0.7))
    assert np.std(diff, ddof=1) == pytest.approx(math.sqrt(0.7))


def test_cohens_d_pooled_hand():
    a, b = [1, 2, 3], [2, 3, 4, 5]  # means 2, 3.5; variances 1, 5/3; pooled var (2*1 + 3*5/3) / 5 = 7/5
    assert S.cohens_d(a, b) == pytest.approx(-1.5 / math.sqrt(7 / 5))


@pytest.mark.parametrize("seed", range(3))
def test_cohens_d_random_against_formula(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(1, 2, 50), rng.normal(0, 1, 70)
    pooled = math.sqrt(((49 * a.var(ddof=1)) + 69 * b.var(ddof=1)) / 118)
    assert S.cohens_d(a, b) == pytest.approx((a.mean() - b.mean()) / pooled)
    c = a + rng.normal(0.3, 1, 50)
    assert S.cohens_d_paired(c, a) == pytest.approx((c - a).mean() / (c - a).std(ddof=1))


def test_cohens_d_zero_variance():
    a = np.array([3, 4, 5.0])
    assert S.cohens_d_paired(a, a) == 0.0
    assert S.cohens_d_paired(a + 1, a) == math.inf
    assert S.cohens_d_paired(a - 1, a) == -math.inf
    assert S.cohens_d([4, 4], [4, 4, 4]) == 0.0
    assert S.cohens_d([5, 5], [4, 4, 4]) == math.inf


# ---------------------------------------------------------------------------------------------- bootstrap

def test_bootstrap_ci_reproducible_and_seeded():
    x = np.random.default_rng(0).normal(size=100)
    assert S.bootstrap_ci(x, n_resamples=2000, seed=3) == S.bootstrap_ci(x, n_resamples=2000, seed=3)
    assert S.bootstrap_ci(x, n_resamples=2000, seed=3) != S.bootstrap_ci(x, n_resamples=2000, seed=4)
    low, high = S.bootstrap_ci(x)
    assert low < x.mean() < high


def test_bootstrap_chunking_does_not_change_result(monkeypatch):
    x = np.random.default_rng(1).normal(size=50)
    whole = S.bootstrap_ci(x, n_resamples=3000)
    monkeypatch.setattr(S, "MAX_CHUNK_ELEMENTS", 50 * 7)  # chunks of 7 resamples
    assert S.bootstrap_ci(x, n_resamples=3000) == whole


def test_bootstrap_coverage():
    rng = np.random.default_rng(2024)
    covered = 0
    for i in range(200):
        x = rng.normal(3.0, 1.0, size=40)
        low, high = S.bootstrap_ci(x, n_resamples=1000, seed=i)
        covered += low <= 3.0 <= high
    assert 0.85 <= covered / 200 <= 0.99


def test_bootstrap_stat_without_axis_and_confidence():
    x = np.random.default_rng(3).integers(1, 6, size=60).astype(float)
    by_axis = S.bootstrap_ci(x, np.median, n_resamples=500)
    by_row = S.bootstrap_ci(x, lambda v: float(np.median(v)), n_resamples=500)
    assert by_axis == by_row
    wide, narrow = S.bootstrap_ci(x, confidence=0.99), S.bootstrap_ci(x, confidence=0.5)
    assert wide.low <= narrow.low <= narrow.high <= wide.high


def test_bootstrap_paired_and_unpaired_diff():
    rng = np.random.default_rng(5)
    a = judge_scores(rng, 200)
    b = np.clip(a - rng.integers(0, 2, 200), 1, 5)
    assert S.bootstrap_ci_paired_diff(a, b, seed=9) == S.bootstrap_ci(a - b, seed=9)
    low, high = S.bootstrap_ci_diff(a, b)
    assert low < a.mean() - b.mean() < high
    assert S.bootstrap_ci_diff(a, b) == S.bootstrap_ci_diff(a, b)
    low_p, high_p = S.bootstrap_ci_paired_diff(a, b)
    assert high_p - low_p < high - low  # pairing removes the between-scenario spread


@pytest.mark.parametrize("kwargs", [dict(n_resamples=0), dict(confidence=1.0), dict(confidence=0)])
def test_bootstrap_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        S.bootstrap_ci([1.0, 2.0, 3.0], **kwargs)


# ------------------------------------------------------------------------------------ failure rate, pass^k

def test_failure_rate():
    assert S.failure_rate([1, 2, 3, 4, 5]) == pytest.approx(0.6)
    assert S.failure_rate([4, 5, 5, 4]) == 0.0
    assert S.failure_rate([3, 4, 5, 5], threshold=4) == 0.5
    # the paper's travel compiled model: 5.5% of 200 conversations fail
    assert S.failure_rate([3] * 11 + [5] * 189) == pytest.approx(0.055)


def test_mcnemar_exact_on_discordant_failures():
    # Zoom's seeds 0 and 2 (docs/results.md): 3 against 13 scenarios failed by one compile alone
    assert S.mcnemar_exact(3, 13) == pytest.approx(0.0213, abs=1e-4) == S.mcnemar_exact(13, 3)
    assert S.mcnemar_exact(0, 5) == pytest.approx(2 * 0.5 ** 5)                   # one-sided 1/32, doubled
    assert S.mcnemar_exact(9, 10) == 1.0 and S.mcnemar_exact(0, 0) == 1.0
    for bad in ((-1, 2), (1.5, 2), (True, 2)):
        with pytest.raises(ValueError, match="two counts"):
            S.mcnemar_exact(*bad)


def test_pass_hat_k_hand_cases():
    assert S.pass_hat_k([[1, 1, 0, 0]], 2) == pytest.approx(1 / 6)
    assert S.pass_hat_k([[True, True, True, True]], 4) == 1.0
    assert S.pass_hat_k([[1, 1, 1, 0]], 4) == 0.0
    assert S.pass_hat_k([[1, 1, 0, 0], [1, 1, 1]], 2) == pytest.approx((1 / 6 + 1) / 2)  # ragged
    assert S.pass_hat_k({"s1": [1, 0], "s2": [1, 1]}, 1) == pytest.approx(0.75)  # pass^1 = success rate
    outcomes = np.random.default_rng(0).integers(0, 2, size=(30, 8))
    assert S.pass_hat_k(outcomes, 1) == pytest.approx(outcomes.mean())
    values = [S.pass_hat_k(outcomes, k) for k in range(1, 9)]
    assert all(x >= y for x, y in zip(values, values[1:]))  # pass^k falls with k


@pytest.mark.parametrize("runs,k,match", [([[1, 0]], 3, "at least k=3"), ([[1, 0]], 0, "positive"),
                                          ([], 1, "no scenarios"), ([[1, 2]], 1, "0/1")])
def test_pass_hat_k_bad_input(runs, k, match):
    with pytest.raises(ValueError, match=match):
        S.pass_hat_k(runs, k)


# --------------------------------------------------------------------------------------- bad input, general

@pytest.mark.parametrize("call", [
    lambda: S.wilcoxon_paired([1, 2, 3], [1, 2]),
    lambda: S.cohens_d_paired([1, 2, 3], [1, 2]),
    lambda: S.bootstrap_ci_paired_diff([1, 2], [1]),
    lambda: S.cohen_kappa_weighted([1, 2], [1, 2, 3]),
])
def test_mismatched_lengths(call):
    with pytest.raises(ValueError, match="equal lengths"):
        call()


@pytest.mark.parametrize("call", [
    lambda: S.wilcoxon_paired([], []), lambda: S.mann_whitney([], [1, 2]), lambda: S.bootstrap_ci([]),
    lambda: S.failure_rate([]), lambda: S.cohens_d([], [1, 2, 3]),
])
def test_empty_input(call):
    with pytest.raises(ValueError, match="empty"):
        call()


def test_nan_input_rejected():
    with pytest.raises(ValueError, match="NaN"):
        S.wilcoxon_paired([1, np.nan, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        S.cohens_d_paired([1], [2])


# ------------------------------------------------------------------------------------- compare_conditions

CRITERIA = ["task_success", "information_accuracy", "consistency", "graceful_handling", "naturalness"]


def synthetic_scores(n=200, seed=0):
    """Wide scores: 'better' beats 'base' by about one point; 'twin' is an exact copy of 'base'."""
    rng = np.random.default_rng(seed)
    frames = []
    base = {c: rng.integers(2, 5, size=n) for c in CRITERIA}
    better = {c: np.minimum(5, v + (rng.random(n) < 0.85)) for c, v in base.items()}
    for name, cols in (("base", base), ("better", better), ("twin", base)):
        frames.append(pd.DataFrame({"condition": name, "scenario_id": np.arange(n), **cols}))
    return pd.concat(frames, ignore_index=True)


def test_compare_conditions_clear_and_null():
    table = S.compare_conditions(synthetic_scores(), CRITERIA, ["better", "base", "twin"], n_resamples=2000)
    assert list(table.columns[:13]) == ["criterion", "condition_a", "condition_b", "mean_a", "mean_b",
                                        "difference", "p", "p_holm", "d", "ci_low", "ci_high", "n", "stars"]
    assert len(table) == 5 * 3
    clear = table[(table.condition_a == "better") & (table.condition_b == "base")]
    assert (clear.p < 1e-10).all() and (clear.p_holm < 1e-9).all() and (clear.stars == "***").all()
    assert (clear.d > 1.5).all() and (clear.difference > 0.5).all() and (clear.ci_low > 0).all()
    assert (clear.n == 200).all() and (clear.n_dropped == 0).all()
    null = table[(table.condition_a == "base") & (table.condition_b == "twin")]
    assert (null.p == 1).all() and (null.p_holm == 1).all() and (null.d == 0).all() and (null.stars == "").all()
    assert (null.ci_low == 0).all() and (null.ci_high == 0).all() and (null.difference == 0).all()


def test_compare_conditions_holm_across_family_and_matches_tests():
    df = synthetic_scores(n=60, seed=1)
    df.loc[df.condition == "twin", CRITERIA] = np.random.default_rng(2).integers(1, 6, size=(60, 5))
    table = S.compare_conditions(df, CRITERIA, n_resamples=500)
    np.testing.assert_allclose(table.p_holm, multipletests(table.p, method="holm")[1], rtol=1e-12)
    assert (table.p_holm >= table.p).all()
    order = np.argsort(table.p.to_numpy(), kind="stable")
    assert np.all(np.diff(table.p_holm.to_numpy()[order]) >= 0)
    row = table.iloc[0]
    a = df[df.condition == row.condition_a].sort_values("scenario_id")[row.criterion].to_numpy(float)
    b = df[df.condition == row.condition_b].sort_values("scenario_id")[row.criterion].to_numpy(float)
    assert row.p == pytest.approx(st.wilcoxon(a, b).pvalue)
    assert row.d == pytest.approx(S.cohens_d_paired(a, b))
    assert (row.ci_low, row.ci_high) == S.bootstrap_ci_paired_diff(a, b, n_resamples=500)


def test_compare_conditions_long_format_and_index_equal_wide():
    wide = synthetic_scores(n=40)
    long = wide.melt(id_vars=["condition", "scenario_id"], var_name="criterion", value_name="score")
    kwargs = dict(criteria=CRITERIA, conditions=["better", "base"], n_resamples=300)
    expected = S.compare_conditions(wide, **kwargs)
    pd.testing.assert_frame_equal(S.compare_conditions(long, **kwargs), expected)
    pd.testing.assert_frame_equal(S.compare_conditions(wide.set_index(["condition", "scenario_id"]), **kwargs),
                                  expected)
    inferred = S.compare_conditions(wide, n_resamples=300)  # criteria and conditions inferred
    assert set(inferred.criterion) == set(CRITERIA) and len(inferred) == 15


def test_compare_conditions_drops_unmatched_rows_with_warning():
    df = synthetic_scores(n=50)
    df = df[~((df.condition == "base") & (df.scenario_id < 3))].copy()  # base lacks scenarios 0-2
    df.loc[(df.condition == "better") & (df.scenario_id == 10), "consistency"] = np.nan  # one unscored
    with pytest.warns(UserWarning, match="n_dropped"):
        table = S.compare_conditions(df, CRITERIA, ["better", "base"], n_resamples=200)
    by = table.set_index("criterion")
    assert by.loc["task_success", "n"] == 47 and by.loc["task_success", "n_dropped"] == 3
    assert by.loc["consistency", "n"] == 46 and by.loc["consistency", "n_dropped"] == 4


def test_compare_conditions_unpaired():
    df = synthetic_scores(n=80)
    df = df[~((df.condition == "base") & (df.scenario_id >= 60))]  # unequal group sizes
    table = S.compare_conditions(df, ["task_success"], ["better", "base"], paired=False, n_resamples=300)
    row = table.iloc[0]
    a = df[df.condition == "better"].task_success.to_numpy(float)
    b = df[df.condition == "base"].task_success.to_numpy(float)
    assert row.p == pytest.approx(st.mannwhitneyu(a, b).pvalue)
    assert row.p_holm == row.p  # a family of one
    assert row.d == pytest.approx(S.cohens_d(a, b))
    assert (row.n, row.n_a, row.n_b) == (140, 80, 60)


@pytest.mark.parametrize("kwargs,match", [
    (dict(conditions=["base", "nope"]), "not in the scores"),
    (dict(conditions=["base"]), "at least two"),
    (dict(criteria=["warmth"]), "criteria not in"),
])
def test_compare_conditions_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.compare_conditions(synthetic_scores(n=10), n_resamples=10, **kwargs)


def test_compare_conditions_duplicates_rejected_when_paired():
    df = synthetic_scores(n=10)
    df = pd.concat([df, df.iloc[:1]])
    with pytest.raises(ValueError, match="duplicate"):
        S.compare_conditions(df, n_resamples=10)


# ---------------------------------------------------------------------------------------- judge agreement

def kappa_by_hand(a, b, k=5, power=2):
    """Weighted kappa from its textbook definition with explicit loops."""
    n = len(a)
    obs = [[sum(1 for x, y in zip(a, b) if x == i + 1 and y == j + 1) / n for j in range(k)] for i in range(k)]
    row = [sum(obs[i]) for i in range(k)]
    col = [sum(obs[i][j] for i in range(k)) for j in range(k)]
    num = sum(abs(i - j) ** power * obs[i][j] for i in range(k) for j in range(k))
    den = sum(abs(i - j) ** power * row[i] * col[j] for i in range(k) for j in range(k))
    return 1 - num / den


@pytest.mark.parametrize("seed", range(5))
def test_weighted_kappa_matches_statsmodels_and_hand(seed):
    rng = np.random.default_rng(seed)
    a = judge_scores(rng, 150)
    b = np.clip(a + rng.integers(-1, 2, 150), 1, 5)
    table = np.zeros((5, 5))
    np.add.at(table, (a.astype(int) - 1, b.astype(int) - 1), 1)
    kappa = S.cohen_kappa_weighted(a, b)
    assert kappa == pytest.approx(cohens_kappa(table, wt="quadratic", return_results=False))
    assert kappa == pytest.approx(kappa_by_hand(a, b))
    assert S.cohen_kappa_weighted(a, b, weights="linear") == pytest.approx(
        cohens_kappa(table, wt="linear", return_results=False))
    assert S.cohen_kappa_weighted(a, b, weights=None) == pytest.approx(cohens_kappa(table, return_results=False))


def test_weighted_kappa_hand_and_edge_cases():
    # two labels: observed disagreement 1/4, chance disagreement .5*.75 + .5*.25 = 1/2 -> kappa 1/2
    assert S.cohen_kappa_weighted([1, 1, 2, 2], [1, 2, 2, 2], labels=[1, 2]) == pytest.approx(0.5)
    assert S.cohen_kappa_weighted([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == pytest.approx(1.0)
    assert math.isnan(S.cohen_kappa_weighted([5, 5, 5], [5, 5, 5]))
    with pytest.raises(ValueError, match="not among the labels"):
        S.cohen_kappa_weighted([1, 6], [1, 2])
    with pytest.raises(ValueError, match="weights"):
        S.cohen_kappa_weighted([1, 2], [1, 2], weights="cubic")


def test_judge_agreement():
    primary = synthetic_scores(n=60, seed=3)
    rng = np.random.default_rng(4)
    robust = primary.copy()
    robust[CRITERIA] = np.clip(robust[CRITERIA] + rng.integers(-1, 2, size=(len(robust), 5)), 1, 5)
    robust = robust.sample(frac=1, random_state=0)  # row order must not matter
    out = S.judge_agreement(primary, robust, CRITERIA).set_index("criterion")
    merged = primary.merge(robust, on=["condition", "scenario_id"], suffixes=("_a", "_b"))
    for c in CRITERIA:
        x, y = merged[f"{c}_a"], merged[f"{c}_b"]
        assert out.loc[c, "n"] == 180
        assert out.loc[c, "spearman_rho"] == pytest.approx(st.spearmanr(x, y).statistic)
        assert out.loc[c, "kappa"] == pytest.approx(S.cohen_kappa_weighted(x, y))
        assert out.loc[c, "exact_agreement"] == pytest.approx(np.mean(x == y))
    same = S.judge_agreement(primary, primary, CRITERIA)
    assert np.allclose(same.spearman_rho, 1) and np.allclose(same.kappa, 1)


def test_judge_agreement_needs_keys():
    with pytest.raises(ValueError, match="key columns"):
        S.judge_agreement(pd.DataFrame({"condition": ["a"], "x": [1]}), pd.DataFrame({"x": [1]}), ["x"])
