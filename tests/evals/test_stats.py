"""Eval statistics against hand computations and scipy on small known inputs."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps
from scipy.special import comb

from loopmeter.evals import stats


def test_wilson_matches_hand_computation_and_scipy() -> None:
    # 7 of 10: centre = (0.7 + 1.96^2/20) / (1 + 1.96^2/10), half = 1.96*sqrt(.21/10 + 1.96^2/400)/(...)
    z = stats.Z_975
    denom = 1 + z * z / 10
    centre = (0.7 + z * z / 20) / denom
    half = z * math.sqrt(0.7 * 0.3 / 10 + z * z / 400) / denom
    lo, hi = stats.wilson(7, 10)
    assert lo == pytest.approx(centre - half)
    assert hi == pytest.approx(centre + half)
    assert (lo, hi) == pytest.approx((0.39678, 0.89221), abs=1e-5)
    ci = sps.binomtest(7, 10).proportion_ci(confidence_level=0.95, method="wilson")
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-9)


@pytest.mark.parametrize("k,n", [(0, 12), (12, 12), (1, 3), (5, 40)])
def test_wilson_edges_match_scipy(k: int, n: int) -> None:
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert stats.wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_wilson_empty_is_uninformative() -> None:
    assert stats.wilson(0, 0) == (0.0, 1.0)


def test_clustered_se_hand_computation() -> None:
    clusters = [[1, 1], [0, 1], [0, 0]]
    # n=6, mean=0.5; cluster sums of residuals: 1, 0, -1 -> sqrt(2)/6 * sqrt(3/2)
    expected = math.sqrt(2) / 6 * math.sqrt(3 / 2)
    assert stats.clustered_se(clusters) == pytest.approx(expected)


def test_clustered_se_with_one_epoch_is_the_sample_se() -> None:
    xs = [1, 0, 1, 1, 0, 1, 0, 1]
    clusters = [[x] for x in xs]
    # with singleton clusters the formula reduces to sd(ddof=1) / sqrt(n)
    assert stats.clustered_se(clusters) == pytest.approx(sps.sem(xs))


def test_pass_rate_ci_uses_wilson_for_one_epoch_and_clustered_for_several() -> None:
    assert stats.pass_rate_ci([[1], [1], [0]]) == pytest.approx(stats.wilson(2, 3))
    clusters = [[1, 1], [0, 1], [0, 0], [1, 0], [1, 1], [0, 1], [0, 0], [1, 0]] * 3
    se = stats.clustered_se(clusters)
    assert stats.pass_rate_ci(clusters) == pytest.approx((0.5 - stats.Z_975 * se, 0.5 + stats.Z_975 * se))
    assert stats.pass_rate_ci([[1, 1], [1, 0]])[1] == 1.0  # clipped to [0, 1]


@pytest.mark.parametrize("n,c,k", [(10, 3, 1), (10, 3, 5), (10, 8, 3), (5, 0, 2), (5, 5, 5), (20, 7, 4), (3, 1, 3)])
def test_pass_at_k_equals_the_binomial_form(n: int, c: int, k: int) -> None:
    expected = 1 - comb(n - c, k, exact=True) / comb(n, k, exact=True)
    assert stats.pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_small_cases_by_hand() -> None:
    assert stats.pass_at_k(5, 2, 1) == pytest.approx(0.4)  # c / n
    assert stats.pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert stats.pass_at_k(4, 3, 2) == 1.0  # n - c < k


def test_pass_hat_k() -> None:
    assert stats.pass_hat_k(4, 2, 2) == pytest.approx(1 / 6)
    assert stats.pass_hat_k(5, 5, 3) == 1.0
    assert stats.pass_hat_k(5, 1, 2) == 0.0
    with pytest.raises(ValueError):
        stats.pass_hat_k(3, 1, 4)


def test_suite_pass_at_k_averages_over_tasks() -> None:
    got = stats.suite_pass_at_k([(4, 1), (4, 4), (4, 0)])
    assert set(got) == {"1", "2", "3", "4"}
    assert got["1"] == pytest.approx((0.25 + 1 + 0) / 3)
    assert got["2"] == pytest.approx((0.5 + 1 + 0) / 3)


def test_percentile_matches_numpy_linear() -> None:
    import numpy as np

    xs = [3.0, 1.0, 7.5, 2.2, 9.0, 4.4, 0.3]
    for q in (0, 50, 95, 100, 12.5):
        assert stats.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert stats.percentile([], 50) is None


@pytest.mark.parametrize("b,c", [(0, 0), (3, 0), (2, 8), (5, 5), (1, 12), (10, 3)])
def test_mcnemar_exact_matches_scipy_binomtest(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else sps.binomtest(min(b, c), b + c, 0.5).pvalue
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected)


def test_mcnemar_hand_value() -> None:
    # b=1, c=5: 2 * (1 + 6) / 64
    assert stats.mcnemar_exact(1, 5) == pytest.approx(14 / 64)


def test_bootstrap_is_deterministic_under_a_seed() -> None:
    a = {f"t{i}": [float(i % 2)] for i in range(15)}
    b = {f"t{i}": [float(i % 3 != 0)] for i in range(15)}
    one = stats.paired_difference("A", "B", a, b, seed=7)
    two = stats.paired_difference("A", "B", a, b, seed=7)
    assert one.ci == two.ci
    xs = [0.1, 2.0, 5.0, 0.7, 3.3, 9.1, 0.02]
    assert stats.mean_bootstrap(xs, seed=3) == stats.mean_bootstrap(xs, seed=3)
    assert stats.mean_bootstrap(xs, seed=3) != stats.mean_bootstrap(xs, seed=4)


def test_paired_difference_oracle_vs_nop_excludes_zero() -> None:
    a = {f"t{i}": [1.0] for i in range(12)}
    b = {f"t{i}": [0.0] for i in range(12)}
    cmp = stats.paired_difference("oracle", "nop", a, b)
    assert cmp.diff == -1.0
    assert cmp.ci == (-1.0, -1.0)
    assert cmp.p_value == pytest.approx(2 / 2**12)
    assert cmp.verdict == "oracle better"


def test_paired_difference_verdict_when_ci_contains_zero() -> None:
    a = {"t1": [1.0], "t2": [0.0], "t3": [1.0], "t4": [0.0]}
    b = {"t1": [0.0], "t2": [1.0], "t3": [1.0], "t4": [0.0]}
    cmp = stats.paired_difference("A", "B", a, b)
    assert cmp.diff == 0.0
    assert cmp.ci is not None and cmp.ci[0] <= 0 <= cmp.ci[1]
    assert cmp.verdict == stats.NO_DIFFERENCE
    assert cmp.p_value == 1.0


def test_paired_bootstrap_resamples_tasks_with_epochs_together() -> None:
    # per-task means of B-A are 0.5, 0.5, 0.5: every resample of tasks gives exactly 0.5,
    # which only holds if a task's epochs travel together.
    a = {"t1": [0.0, 0.0], "t2": [1.0, 0.0], "t3": [0.0, 0.0]}
    b = {"t1": [1.0, 0.0], "t2": [1.0, 1.0], "t3": [0.0, 1.0]}
    cmp = stats.paired_difference("A", "B", a, b)
    assert cmp.diff == pytest.approx(0.5)
    assert cmp.ci == pytest.approx((0.5, 0.5))
    assert cmp.p_method == "paired-sign-flip"
    assert cmp.verdict == "B better"


def test_paired_se_and_mde() -> None:
    a = {"t1": [1.0], "t2": [0.0], "t3": [0.0], "t4": [1.0]}
    b = {"t1": [1.0], "t2": [1.0], "t3": [1.0], "t4": [1.0]}
    cmp = stats.paired_difference("A", "B", a, b)
    d = [0, 1, 1, 0]
    assert cmp.se == pytest.approx(sps.sem(d))
    assert cmp.mde == pytest.approx((sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * sps.sem(d))


def test_sign_flip_exact_matches_enumeration() -> None:
    d = [1.0, 1.0, 1.0, 0.0, -1.0]
    # sums over all 32 sign assignments of the nonzero entries: |sum| >= 2 happens in ...
    import itertools

    hits = sum(abs(sum(s * x for s, x in zip(signs, d, strict=True))) >= 2
               for signs in itertools.product([1, -1], repeat=5))
    assert stats.sign_flip_p(d) == pytest.approx(hits / 32)


def test_unpaired_difference_says_unpaired() -> None:
    a = {"t1": [1.0], "t2": [0.0], "t3": [1.0]}
    b = {"u1": [1.0], "u2": [1.0], "u3": [1.0], "u4": [0.0]}
    cmp = stats.unpaired_difference("A", "B", a, b)
    assert not cmp.paired
    assert cmp.diff == pytest.approx(0.75 - 2 / 3)
    assert cmp.verdict == stats.NO_DIFFERENCE
    assert 0 < cmp.p_value <= 1


def test_ratio_bootstrap_cost_per_solved() -> None:
    cost = [1.0, 2.0, 3.0, 4.0]
    solved = [1.0, 0.0, 1.0, 1.0]
    ci = stats.ratio_bootstrap(cost, solved, seed=1)
    assert ci is not None
    assert ci[0] <= 10 / 3 <= ci[1]


def test_stats_module_imports_no_numpy_or_scipy() -> None:
    import subprocess
    import sys

    code = "import sys, loopmeter.evals.stats; print(any(m.split('.')[0] in ('numpy','scipy') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
