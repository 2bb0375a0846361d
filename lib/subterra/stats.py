"""Statistics for judge scores: paired and unpaired tests, Holm, effect sizes, bootstrap CIs, agreement.

The paper (arXiv 2605.22502) scores every conversation 1-5 on five criteria with an LLM judge, for several
conditions over the same 200 scenarios, and reports Wilcoxon signed-rank (paired), Mann-Whitney U (unpaired),
Holm-Bonferroni, Cohen's d and 95% bootstrap CIs with 10,000 resamples. It names the tests but not their
variants; the variants chosen here are listed once, and every function below sticks to them:

==========================  =====================================================================================
Wilcoxon signed-rank        ``scipy.stats.wilcoxon(a, b, zero_method="wilcox", correction=False,
                            method="auto")``, two-sided. Zero differences (a scenario scored the same under both
                            conditions, very common on a 1-5 scale) are *dropped* before ranking (Wilcoxon's
                            original rule, the default of scipy and of R's ``wilcox.test``); tied non-zero
                            differences get average ranks and the normal approximation uses the tie-corrected
                            variance. With 200 scenarios (n > 50) that normal approximation is what runs; small
                            samples get scipy's exact or exact-permutation p. All differences zero: p = 1.
                            (Pratt's rule, which ranks the zeros too, is the alternative; the paper does not say,
                            and "wilcox" is what a plain ``scipy.stats.wilcoxon`` call does.)
Mann-Whitney U              ``scipy.stats.mannwhitneyu(a, b, alternative="two-sided", use_continuity=True,
                            method="auto")``: tie-corrected normal approximation with continuity correction
                            (exact only for tiny samples without ties). The statistic is U of ``a``.
Holm-Bonferroni             step-down adjusted p-values, monotone, capped at 1, over the *whole family* of tests
                            (every criterion x condition pair in :func:`compare_conditions`).
Cohen's d                   paired data: d_z = mean(a - b) / sd(a - b, ddof=1), the standardised mean of the
                            differences the signed-rank test is run on; unpaired: pooled-SD d. Zero spread:
                            0.0 when the mean difference is 0, +-inf otherwise.
Bootstrap CI                percentile bootstrap, 10,000 resamples, seed 0, ``np.quantile`` (linear
                            interpolation) at alpha/2 and 1 - alpha/2. Paired: resample scenarios (pairs) and
                            take the mean difference; unpaired: resample each group independently.
Failure                     Task Success <= 3 (the paper's definition).
McNemar                     exact: the scenarios only one of two conditions failed, two-sided binomial test at
                            1/2 (``scipy.stats.binomtest``); none discordant: p = 1.
pass^k                      tau-bench: mean over scenarios of C(c, k) / C(n, k).
Weighted kappa              quadratic (Fleiss-Cohen) weights over the labels 1-5, the usual choice for ordinal
                            ratings; equal to statsmodels' ``cohens_kappa(table, wt="quadratic")``.
==========================  =====================================================================================

Sign convention: every difference is ``a - b`` (``condition_a - condition_b``), so a positive difference means the
first condition scored higher. Bad input (empty, mismatched lengths, NaN, ``k > n``) raises ``ValueError``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st

__all__ = [
    "PairedTest", "UnpairedTest", "ConfidenceInterval",
    "wilcoxon_paired", "mann_whitney", "holm", "stars",
    "cohens_d_paired", "cohens_d",
    "bootstrap_ci", "bootstrap_ci_paired_diff", "bootstrap_ci_diff",
    "failure_rate", "pass_hat_k", "mcnemar_exact",
    "compare_conditions", "cohen_kappa_weighted", "judge_agreement",
]

#: Largest number of resampled values held in memory at once by the bootstrap (8 bytes each: ~16 MB of indices).
MAX_CHUNK_ELEMENTS = 2_000_000


# ----------------------------------------------------------------------------------------------- input checks

def _vector(x, name: str = "values") -> np.ndarray:
    """A non-empty, finite, 1-D float array, or ValueError saying what is wrong."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; drop missing scores first")
    return arr


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _vector(a, "a"), _vector(b, "b")
    if a.size != b.size:
        raise ValueError(f"paired samples need equal lengths, got {a.size} and {b.size}")
    return a, b


# ------------------------------------------------------------------------------------------------------- tests

class PairedTest(NamedTuple):
    """Result of :func:`wilcoxon_paired`. ``n`` counts pairs (zeros included); ``n_zero`` the dropped zeros."""
    statistic: float
    p: float
    n: int
    mean_difference: float
    n_zero: int


class UnpairedTest(NamedTuple):
    """Result of :func:`mann_whitney`. ``mean_difference`` is mean(a) - mean(b)."""
    statistic: float
    p: float
    n_a: int
    n_b: int
    mean_difference: float


def wilcoxon_paired(a, b) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of paired scores ``a[i]`` vs ``b[i]``.

    Runs ``scipy.stats.wilcoxon(a, b, zero_method="wilcox", correction=False, method="auto")``: zero differences
    are dropped (Wilcoxon's rule, scipy's and R's default, kept everywhere in this module so p-values are
    comparable), tied |differences| get average ranks and a tie-corrected normal approximation (n > 50, or ties
    with n > 13), otherwise scipy's exact / exact-permutation p. If every difference is zero there is nothing to
    rank and no evidence of a difference: returns statistic 0, p = 1 (scipy would warn about 0/0).
    """
    a, b = _pair(a, b)
    diff = a - b
    n_zero = int(np.count_nonzero(diff == 0))
    if n_zero == diff.size:
        return PairedTest(0.0, 1.0, int(diff.size), 0.0, n_zero)
    res = _st.wilcoxon(a, b, zero_method="wilcox", correction=False, alternative="two-sided", method="auto")
    return PairedTest(float(res.statistic), float(res.pvalue), int(diff.size), float(diff.mean()), n_zero)


def mann_whitney(a, b) -> UnpairedTest:
    """Two-sided Mann-Whitney U test of independent samples ``a`` and ``b`` (lengths may differ).

    Runs ``scipy.stats.mannwhitneyu(a, b, alternative="two-sided", use_continuity=True, method="auto")``: with
    ties (always, on 1-5 scores) a tie-corrected normal approximation with continuity correction. The statistic
    is U of ``a`` (the number of (a, b) pairs with a > b, ties counting 1/2).
    """
    a, b = _vector(a, "a"), _vector(b, "b")
    res = _st.mannwhitneyu(a, b, alternative="two-sided", use_continuity=True, method="auto")
    p = float(res.pvalue)
    if np.isnan(p):  # cannot happen with finite non-empty input in current scipy; keep the promise of no NaN p
        p = 1.0
    return UnpairedTest(float(res.statistic), p, int(a.size), int(b.size), float(a.mean() - b.mean()))


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    With the m p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value is
    ``max_{j <= i} min(1, (m - j + 1) * p_(j))``: monotone in the sorted order and capped at 1. Ties keep their
    input order (stable sort), which does not change the values. Equal to statsmodels'
    ``multipletests(p, method="holm")[1]``.
    """
    p = _vector(pvalues, "pvalues")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def stars(p: float) -> str:
    """``"***"`` for p < .001, ``"**"`` for p < .01, ``"*"`` for p < .05, ``""`` otherwise."""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


# ------------------------------------------------------------------------------------------------ effect sizes

def _standardise(mean: float, sd: float) -> float:
    """mean / sd, with zero spread read as 0.0 (no difference at all) or +-inf (a constant, non-zero shift)."""
    if sd > 0:
        return float(mean / sd)
    return 0.0 if mean == 0 else math.copysign(math.inf, mean)


def cohens_d_paired(a, b) -> float:
    """Cohen's d_z for paired data: mean(a - b) / sd(a - b) with ``ddof=1``.

    This is the effect size the comparison tables use for paired conditions: it standardises the very
    differences the signed-rank test ranks, so d and p describe the same quantity. (It is larger than the pooled
    d when the two conditions' scores are positively correlated across scenarios; don't compare it to unpaired
    d values.) When all differences are equal: 0.0 if they are all zero, else +inf or -inf. Needs >= 2 pairs.
    """
    a, b = _pair(a, b)
    if a.size < 2:
        raise ValueError("cohens_d_paired needs at least 2 pairs (the SD of one difference is undefined)")
    diff = a - b
    return _standardise(diff.mean(), diff.std(ddof=1))


def cohens_d(a, b) -> float:
    """Cohen's d for independent samples: (mean(a) - mean(b)) / pooled SD.

    Pooled SD = sqrt(((n_a - 1) s_a^2 + (n_b - 1) s_b^2) / (n_a + n_b - 2)), each s with ``ddof=1`` (classic
    Cohen's d, no Hedges small-sample correction). Zero pooled SD: 0.0 if the means are equal, else +-inf.
    Needs n_a + n_b >= 3.
    """
    a, b = _vector(a, "a"), _vector(b, "b")
    if a.size + b.size < 3:
        raise ValueError("cohens_d needs at least 3 observations in total (pooled SD has n_a + n_b - 2 df)")
    ss = ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()
    return _standardise(a.mean() - b.mean(), math.sqrt(ss / (a.size + b.size - 2)))


# --------------------------------------------------------------------------------------------------- bootstrap

class ConfidenceInterval(NamedTuple):
    """A two-sided interval; unpacks as ``low, high = ci``."""
    low: float
    high: float


def _check_bootstrap_args(n_resamples: int, confidence: float) -> None:
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


def _percentile(boot: np.ndarray, confidence: float) -> ConfidenceInterval:
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return ConfidenceInterval(float(low), float(high))


def _rowwise(stat: Callable) -> Callable[[np.ndarray], np.ndarray]:
    """``stat`` applied to each row of a 2-D array: ``stat(x, axis=1)`` when it supports that, else a loop."""
    def vectorised(x):
        return np.asarray(stat(x, axis=1), dtype=float)

    def looped(x):
        return np.array([stat(row) for row in x], dtype=float)

    probe = np.arange(6, dtype=float).reshape(2, 3)
    try:
        if vectorised(probe).shape == (2,):
            return vectorised
    except TypeError:
        pass
    return looped


def bootstrap_ci(values, stat: Callable = np.mean, n_resamples: int = 10_000, confidence: float = 0.95,
                 seed: int | None = 0) -> ConfidenceInterval:
    """Percentile bootstrap CI of ``stat(values)``.

    Draws ``n_resamples`` samples of size n with replacement, as one matrix of indices
    ``rng.integers(0, n, (rows, n))`` per chunk of at most :data:`MAX_CHUNK_ELEMENTS` indices, from
    ``np.random.default_rng(seed)``, so the result is reproducible for a seed. ``stat`` is called as
    ``stat(matrix, axis=1)`` when it accepts ``axis`` (``np.mean``, ``np.median``...), else row by row. The
    interval is the alpha/2 and 1 - alpha/2 quantiles of the resampled statistics (``np.quantile``, linear
    interpolation): the plain percentile method, no bias correction.
    """
    x = _vector(values)
    _check_bootstrap_args(n_resamples, confidence)
    apply = _rowwise(stat)
    rng = np.random.default_rng(seed)
    n = x.size
    rows = max(1, MAX_CHUNK_ELEMENTS // n)
    boot = np.empty(int(n_resamples))
    for start in range(0, int(n_resamples), rows):
        m = min(rows, int(n_resamples) - start)
        boot[start:start + m] = apply(x[rng.integers(0, n, size=(m, n))])
    return _percentile(boot, confidence)


def bootstrap_ci_paired_diff(a, b, n_resamples: int = 10_000, confidence: float = 0.95,
                             seed: int | None = 0) -> ConfidenceInterval:
    """Percentile bootstrap CI of the mean paired difference mean(a - b).

    Resamples *pairs* (scenarios), keeping each scenario's two scores together, i.e. exactly
    ``bootstrap_ci(a - b, np.mean, ...)`` with the same seed.
    """
    a, b = _pair(a, b)
    return bootstrap_ci(a - b, np.mean, n_resamples=n_resamples, confidence=confidence, seed=seed)


def bootstrap_ci_diff(a, b, n_resamples: int = 10_000, confidence: float = 0.95,
                      seed: int | None = 0) -> ConfidenceInterval:
    """Percentile bootstrap CI of mean(a) - mean(b) for independent samples.

    Each resample draws ``a`` and ``b`` independently with replacement (their own sizes), from one
    ``np.random.default_rng(seed)``, chunked like :func:`bootstrap_ci`.
    """
    a, b = _vector(a, "a"), _vector(b, "b")
    _check_bootstrap_args(n_resamples, confidence)
    rng = np.random.default_rng(seed)
    rows = max(1, MAX_CHUNK_ELEMENTS // (a.size + b.size))
    boot = np.empty(int(n_resamples))
    for start in range(0, int(n_resamples), rows):
        m = min(rows, int(n_resamples) - start)
        ia = rng.integers(0, a.size, size=(m, a.size))
        ib = rng.integers(0, b.size, size=(m, b.size))
        boot[start:start + m] = a[ia].mean(axis=1) - b[ib].mean(axis=1)
    return _percentile(boot, confidence)


# ---------------------------------------------------------------------------------------- failures and pass^k

def failure_rate(task_success_scores, threshold: float = 3) -> float:
    """Share of conversations with Task Success ``<= threshold`` (the paper: TS <= 3 is a failure)."""
    x = _vector(task_success_scores, "task_success_scores")
    return float(np.mean(x <= threshold))


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Exact McNemar p (two-sided) for paired failures: ``only_a`` scenarios failed under the first condition
    alone, ``only_b`` under the second alone (the scenarios both or neither failed do not count)."""
    if any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0 for n in (only_a, only_b)):
        raise ValueError(f"mcnemar_exact needs two counts >= 0, got {only_a!r} and {only_b!r}")
    if only_a + only_b == 0:
        return 1.0
    return float(_st.binomtest(int(only_a), int(only_a + only_b), 0.5).pvalue)


def pass_hat_k(successes_per_scenario, k: int) -> float:
    """pass^k (tau-bench): the chance that k independent runs of a scenario *all* succeed, averaged.

    For each scenario with n trials of which c succeeded, the unbiased estimate is C(c, k) / C(n, k); the result
    is the mean over scenarios. ``successes_per_scenario`` holds, per scenario, its trial outcomes (bools or 0/1,
    lengths may differ): a list of lists, a 2-D array (scenarios x trials) or a mapping scenario -> outcomes.
    pass^1 is the plain success rate. With judge scores a success is a non-failure, e.g.
    ``task_success > 3``. Raises ValueError if k < 1, a scenario has fewer than k trials, there are
    no scenarios, or an outcome is not 0/1.
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    runs = successes_per_scenario.values() if isinstance(successes_per_scenario, Mapping) else successes_per_scenario
    estimates = []
    for i, outcomes in enumerate(runs):
        trials = np.asarray(outcomes, dtype=float).ravel()
        if trials.size and not np.all((trials == 0) | (trials == 1)):
            raise ValueError(f"scenario {i}: outcomes must be booleans or 0/1, got {sorted(set(trials.tolist()))}")
        n, c = int(trials.size), int(trials.sum())
        if k > n:
            raise ValueError(f"pass^{k} needs at least k={k} trials per scenario; scenario {i} has {n}")
        estimates.append(math.comb(c, k) / math.comb(n, k))
    if not estimates:
        raise ValueError("no scenarios given")
    return float(np.mean(estimates))


# ----------------------------------------------------------------------------------------- condition tables

def _to_wide(scores: pd.DataFrame, condition_col: str, id_col: str, need_condition: bool = True) -> pd.DataFrame:
    """One row per (condition, scenario), a column per criterion, from wide or long (criterion, score) input."""
    if not isinstance(scores, pd.DataFrame):
        raise ValueError(f"scores must be a pandas DataFrame, got {type(scores).__name__}")
    df = scores
    if any(name in (condition_col, id_col) for name in df.index.names):
        df = df.reset_index()
    if {"criterion", "score"} <= set(df.columns):
        keys = [c for c in (condition_col, id_col) if c in df.columns]
        if id_col not in keys:
            raise ValueError(f"long-format scores need a '{id_col}' column next to 'criterion' and 'score'")
        if df.duplicated(keys + ["criterion"]).any():
            raise ValueError(f"long-format scores have duplicate ({', '.join(keys)}, criterion) rows")
        df = df.pivot(index=keys, columns="criterion", values="score").reset_index()
        df.columns.name = None
    if need_condition and condition_col not in df.columns:
        raise ValueError(f"scores need a '{condition_col}' column (or index level)")
    return df


def _criteria(df: pd.DataFrame, criteria, exclude: Sequence[str]) -> list[str]:
    if criteria is None:
        criteria = [c for c in df.columns if c not in exclude and pd.api.types.is_numeric_dtype(df[c])]
    else:
        criteria = [criteria] if isinstance(criteria, str) else list(criteria)
    if not criteria:
        raise ValueError("no criteria given and no numeric score columns found")
    missing = [c for c in criteria if c not in df.columns]
    if missing:
        raise ValueError(f"criteria not in the scores: {missing}; columns are {list(df.columns)}")
    return criteria


def _empty_row(criterion: str, cond_a: str, cond_b: str, n: int, n_dropped: int) -> dict:
    nan = float("nan")
    return dict(criterion=criterion, condition_a=cond_a, condition_b=cond_b, mean_a=nan, mean_b=nan,
                difference=nan, p=nan, d=nan, ci_low=nan, ci_high=nan, n=int(n), n_a=0, n_b=0,
                n_dropped=int(n_dropped))


def compare_conditions(scores: pd.DataFrame, criteria: Iterable[str] | None = None,
                       conditions: Sequence[str] | None = None, paired: bool = True, *,
                       n_resamples: int = 10_000, confidence: float = 0.95, seed: int | None = 0,
                       condition_col: str = "condition", id_col: str = "scenario_id",
                       sparse: Iterable[str] = ()) -> pd.DataFrame:
    """Every criterion x condition pair tested, Holm-adjusted across the whole family, as a tidy table.

    ``scores`` is wide (one row per (condition, scenario_id), a numeric column per criterion; the two keys may
    be index levels) or long (columns condition, scenario_id, criterion, score). ``criteria`` defaults to every
    numeric column, ``conditions`` to the conditions in order of appearance; pairs are
    ``itertools.combinations(conditions, 2)``, so ``condition_a`` precedes ``condition_b`` and
    ``difference = mean_a - mean_b``.

    ``paired=True``: rows are matched on ``scenario_id`` (inner join; a scenario missing from one condition or
    unscored on the criterion is dropped, counted in ``n_dropped`` and reported by one ``UserWarning``), then
    :func:`wilcoxon_paired`, d = :func:`cohens_d_paired` (d_z) and :func:`bootstrap_ci_paired_diff`; ``n`` is the
    number of pairs. ``paired=False``: all scored rows of each condition, :func:`mann_whitney`, pooled
    :func:`cohens_d` and :func:`bootstrap_ci_diff`; ``n = n_a + n_b``, ``n_dropped`` counts NaN scores.
    ``p_holm`` applies :func:`holm` to all ``len(criteria) * C(len(conditions), 2)`` p-values at once;
    ``stars`` is read off ``p_holm``. Every comparison bootstraps with the same ``seed`` (common random
    numbers: a pair's CI does not depend on which other conditions are in the table).

    ``sparse`` names criteria scored on some conversations only by design (Graceful Handling, where a
    customer posed a challenge): their unscored rows are dropped without a warning, and a pair with too few
    scores left gets a row of NaN (and no p-value in the Holm family) instead of an error.

    Columns: criterion, condition_a, condition_b, mean_a, mean_b, difference, p, p_holm, d, ci_low, ci_high, n,
    stars, n_a, n_b, n_dropped.
    """
    df = _to_wide(scores, condition_col, id_col)
    criteria = _criteria(df, criteria, exclude=(condition_col, id_col))
    present = list(pd.unique(df[condition_col]))
    conditions = present if conditions is None else list(conditions)
    unknown = [c for c in conditions if c not in present]
    if unknown:
        raise ValueError(f"conditions not in the scores: {unknown}; present are {present}")
    if len(conditions) < 2 or len(set(conditions)) != len(conditions):
        raise ValueError(f"need at least two distinct conditions to compare, got {conditions}")
    if paired:
        if id_col not in df.columns:
            raise ValueError(f"paired comparison needs a '{id_col}' column to match scenarios on")
        dup = df[df[condition_col].isin(conditions)].duplicated([condition_col, id_col])
        if dup.any():
            raise ValueError(f"paired comparison needs one row per ({condition_col}, {id_col}); "
                             f"{int(dup.sum())} duplicate rows found")

    groups = {c: df[df[condition_col] == c] for c in conditions}
    rows, dropped_notes = [], []
    for criterion in criteria:
        for cond_a, cond_b in itertools.combinations(conditions, 2):
            where = f"{criterion}: {cond_a} vs {cond_b}"
            if paired:
                sa = groups[cond_a].set_index(id_col)[criterion]
                sb = groups[cond_b].set_index(id_col)[criterion]
                both = pd.concat([sa.rename("a"), sb.rename("b")], axis=1, join="inner").dropna()
                a, b = both["a"].to_numpy(float), both["b"].to_numpy(float)
                n_dropped = len(sa.index.union(sb.index)) - len(both)
                if len(both) < 2 and criterion in sparse:
                    rows.append(_empty_row(criterion, cond_a, cond_b, len(both), n_dropped))
                    continue
                if len(both) < 2:
                    raise ValueError(f"{where}: only {len(both)} scenario(s) scored under both; need at least 2")
                test = wilcoxon_paired(a, b)
                d = cohens_d_paired(a, b)
                ci = bootstrap_ci_paired_diff(a, b, n_resamples=n_resamples, confidence=confidence, seed=seed)
                n = len(both)
            else:
                ra, rb = groups[cond_a][criterion], groups[cond_b][criterion]
                a, b = ra.dropna().to_numpy(float), rb.dropna().to_numpy(float)
                n_dropped = int(ra.isna().sum() + rb.isna().sum())
                if (a.size == 0 or b.size == 0 or a.size + b.size < 3) and criterion in sparse:
                    rows.append(_empty_row(criterion, cond_a, cond_b, a.size + b.size, n_dropped))
                    continue
                if a.size == 0 or b.size == 0 or a.size + b.size < 3:
                    raise ValueError(f"{where}: too few scored rows ({a.size} and {b.size})")
                test = mann_whitney(a, b)
                d = cohens_d(a, b)
                ci = bootstrap_ci_diff(a, b, n_resamples=n_resamples, confidence=confidence, seed=seed)
                n = a.size + b.size
            if n_dropped and criterion not in sparse:
                dropped_notes.append(f"{where}: {n_dropped}")
            rows.append(dict(criterion=criterion, condition_a=cond_a, condition_b=cond_b,
                             mean_a=float(a.mean()), mean_b=float(b.mean()),
                             difference=float(a.mean() - b.mean()), p=test.p, d=d,
                             ci_low=ci.low, ci_high=ci.high, n=int(n), n_a=int(a.size), n_b=int(b.size),
                             n_dropped=int(n_dropped)))
    if dropped_notes:
        what = "unmatched or unscored scenarios" if paired else "NaN scores"
        warnings.warn(f"compare_conditions dropped {what} (see column n_dropped): " + "; ".join(dropped_notes),
                      UserWarning, stacklevel=2)
    table = pd.DataFrame(rows)
    tested = table["p"].notna().to_numpy()
    table["p_holm"] = np.nan
    table.loc[tested, "p_holm"] = holm(table.loc[tested, "p"].to_numpy())
    table["stars"] = [stars(p) for p in table["p_holm"]]
    return table[["criterion", "condition_a", "condition_b", "mean_a", "mean_b", "difference", "p", "p_holm",
                  "d", "ci_low", "ci_high", "n", "stars", "n_a", "n_b", "n_dropped"]]


# ---------------------------------------------------------------------------------------------- judge agreement

def cohen_kappa_weighted(a, b, weights: str | None = "quadratic", labels: Iterable = range(1, 6)) -> float:
    """Weighted Cohen's kappa between two raters' labels: 1 - sum(W * O) / sum(W * E).

    O is the observed joint distribution over ``labels`` (rater a in rows), E the product of its margins, and
    W the disagreement weight of label positions i, j: ``((i - j) / (K - 1))**2`` for ``"quadratic"``
    (Fleiss-Cohen, the default: ordinal 1-5 scores, where 4 vs 5 is a smaller disagreement than 1 vs 5),
    ``|i - j| / (K - 1)`` for ``"linear"``, and ``i != j`` for ``None`` (unweighted kappa). Weights depend on
    label positions, not values. Returns NaN when chance disagreement is zero (both raters always give the
    same single label: kappa is 0/0). Every value must be one of ``labels``.
    """
    a, b = _pair(a, b)
    labels = np.asarray(list(labels), dtype=float)
    if labels.size < 2 or np.unique(labels).size != labels.size:
        raise ValueError("labels must hold at least two distinct values")
    outside = sorted(set(np.setdiff1d(np.concatenate([a, b]), labels).tolist()))
    if outside:
        raise ValueError(f"values {outside} are not among the labels {labels.tolist()}")
    k = labels.size
    ia, ib = _positions(labels, a), _positions(labels, b)
    observed = np.bincount(ia * k + ib, minlength=k * k).reshape(k, k) / a.size
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    i, j = np.indices((k, k))
    if weights == "quadratic":
        w = ((i - j) / (k - 1)) ** 2
    elif weights == "linear":
        w = np.abs(i - j) / (k - 1)
    elif weights is None:
        w = (i != j).astype(float)
    else:
        raise ValueError(f"weights must be 'quadratic', 'linear' or None, got {weights!r}")
    chance = (w * expected).sum()
    if chance == 0:
        return float("nan")
    return float(1.0 - (w * observed).sum() / chance)


def _positions(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index in ``labels`` (in the given order) of each value; values are known to be labels."""
    lookup = {float(v): i for i, v in enumerate(labels)}
    return np.fromiter((lookup[float(v)] for v in values), dtype=int, count=values.size)


def judge_agreement(scores_a: pd.DataFrame, scores_b: pd.DataFrame, criteria: Iterable[str] | None = None, *,
                    on: Sequence[str] | None = None, weights: str | None = "quadratic",
                    labels: Iterable = range(1, 6), condition_col: str = "condition",
                    id_col: str = "scenario_id") -> pd.DataFrame:
    """Agreement of two judges (e.g. Claude vs GPT-4.1 rescoring) on the same conversations, per criterion.

    Both frames are in :func:`compare_conditions`'s format (wide or long). Rows are matched on ``on`` (default:
    whichever of ``condition_col`` and ``id_col`` both frames have), inner join; rows unscored by either judge
    are dropped per criterion. Returns one row per criterion: criterion, n, spearman_rho and spearman_p
    (``scipy.stats.spearmanr``, NaN when a judge gives one constant score), kappa (:func:`cohen_kappa_weighted`,
    quadratic by default), exact_agreement (share of identical scores), mean_a, mean_b.
    """
    wa = _to_wide(scores_a, condition_col, id_col, need_condition=False)
    wb = _to_wide(scores_b, condition_col, id_col, need_condition=False)
    keys = list(on) if on is not None else [c for c in (condition_col, id_col) if c in wa and c in wb]
    if not keys or any(k not in wa or k not in wb for k in keys):
        raise ValueError(f"cannot match the two judges' rows: need key columns {keys or [condition_col, id_col]} "
                         "in both frames")
    for name, w in (("scores_a", wa), ("scores_b", wb)):
        if w.duplicated(keys).any():
            raise ValueError(f"{name} has duplicate rows for keys {keys}")
    criteria = _criteria(wa, criteria, exclude=keys)
    missing = [c for c in criteria if c not in wb.columns]
    if missing:
        raise ValueError(f"criteria missing from scores_b: {missing}")
    merged = wa[keys + criteria].merge(wb[keys + criteria], on=keys, suffixes=("__a", "__b"))
    rows = []
    for criterion in criteria:
        both = merged[[f"{criterion}__a", f"{criterion}__b"]].dropna()
        if len(both) == 0:
            raise ValueError(f"{criterion}: no conversation scored by both judges")
        x, y = both.iloc[:, 0].to_numpy(float), both.iloc[:, 1].to_numpy(float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant input: rho is undefined, reported as NaN
            rho, p = _st.spearmanr(x, y) if len(both) > 1 else (np.nan, np.nan)
        rows.append(dict(criterion=criterion, n=len(both), spearman_rho=float(rho), spearman_p=float(p),
                         kappa=cohen_kappa_weighted(x, y, weights=weights, labels=labels),
                         exact_agreement=float(np.mean(x == y)), mean_a=float(x.mean()), mean_b=float(y.mean())))
    return pd.DataFrame(rows)
