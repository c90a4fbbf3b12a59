"""The statistics the analyses report (`circuit_transfer.statistics`): known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from circuit_transfer.statistics import ci95, holm, paired_bootstrap, spearman_permutation_p, spearman_rho


def test_spearman_rho_known_values_and_undefined_cases():
    assert spearman_rho([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman_rho([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert spearman_rho([1, 2], [1, 2]) is None
    assert spearman_rho([1, 1, 1], [1, 2, 3]) is None


def test_exact_permutation_p_values():
    # A perfect ordering of n targets is matched (in absolute value) by 2 of the n! orders.
    assert spearman_permutation_p([1, 2, 3], [1, 2, 3]) == pytest.approx(2 / 6)
    assert spearman_permutation_p([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(2 / 24)
    assert spearman_permutation_p([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]) == pytest.approx(2 / 720)
    # rho = 0.8 on 5 points (sum of squared rank differences 4): 1 + 4 + 3 orders reach sum <= 4 on
    # each side (identity, one adjacent swap, two disjoint adjacent swaps): 16 of 120.
    assert spearman_permutation_p([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(16 / 120)
    assert spearman_permutation_p([1, 2], [1, 2]) is None


def test_ci95_uses_the_t_quantile():
    stat = ci95([0.5, 0.6, 0.7])
    assert stat["mean"] == pytest.approx(0.6) and stat["n"] == 3
    assert stat["half"] == pytest.approx(4.302653 * 0.1 / 3**0.5, rel=1e-3)  # t(0.975, 2 dof) = 4.3027
    assert ci95([0.5])["half"] is None


def _binomial_pmf(n: int, p: float) -> list[float]:
    return [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]


def _binomial_quantile(n: int, p: float, q: float) -> int:
    cdf = 0.0
    for k, mass in enumerate(_binomial_pmf(n, p)):
        cdf += mass
        if cdf >= q:
            return k
    return n


def test_bootstrap_of_a_zero_one_difference_is_binomial():
    """30 of 100 items gain one point, none lose: the resampled mean difference is Binomial(100, 0.3)/100,
    so the percentile interval is its 2.5% and 97.5% quantiles and the standard error sqrt(.3 * .7 / 100)."""
    n, k = 100, 30
    a = np.zeros(n)
    a[:k] = 1
    out = paired_bootstrap(a, np.zeros(n), n_boot=20_000, seed=1)
    assert out["difference"] == pytest.approx(0.3)
    assert abs(out["lo"] - _binomial_quantile(n, 0.3, 0.025) / n) <= 0.01 + 1e-12
    assert abs(out["hi"] - _binomial_quantile(n, 0.3, 0.975) / n) <= 0.01 + 1e-12
    assert out["se"] == pytest.approx(math.sqrt(0.3 * 0.7 / n), rel=0.03)
    # |d* - 0.3| >= 0.3 needs 0 or >= 60 successes of Binomial(100, 0.3): probability ~1e-14
    assert out["p"] == pytest.approx(1 / 20_001)
    assert (out["n_items"], out["n_seeds"]) == (100, 1)


def test_bootstrap_p_value_matches_the_exact_resampling_distribution():
    """55 items +1, 45 items -1: d = 0.1; d* = (2B - 100)/100 with B ~ Binomial(100, 0.55), so
    |d* - d| >= |d| exactly when |B - 55| >= 5."""
    d = np.array([1.0] * 55 + [-1.0] * 45)
    out = paired_bootstrap(d, np.zeros_like(d), n_boot=20_000, seed=2)
    pmf = _binomial_pmf(100, 0.55)
    exact = sum(m for b, m in enumerate(pmf) if abs(b - 55) >= 5)
    assert out["difference"] == pytest.approx(0.1)
    assert out["p"] == pytest.approx(exact, abs=0.015)


def test_bootstrap_is_paired_by_item_and_seeded():
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0, 1, size=(3, 200))  # varies a lot from item to item (and seed)
    out = paired_bootstrap(difficulty + 0.05, difficulty, n_boot=2000)
    # the same items on both sides: every resample sees exactly +0.05
    assert out["lo"] == pytest.approx(0.05) and out["hi"] == pytest.approx(0.05)
    assert out["p"] == pytest.approx(1 / 2001) and out["n_seeds"] == 3
    # seeds are averaged per item before resampling items
    a, b = rng.integers(0, 2, (3, 50)), rng.integers(0, 2, (3, 50))
    pooled = paired_bootstrap((a - b).mean(0), np.zeros(50), n_boot=500, seed=4)
    assert paired_bootstrap(a, b, n_boot=500, seed=4) | {"n_seeds": 1} == pooled
    assert paired_bootstrap(a, b, n_boot=500, seed=4) == paired_bootstrap(a, b, n_boot=500, seed=4)
    with pytest.raises(ValueError, match="same items and seeds on both sides"):
        paired_bootstrap(a, b[:, :40])


def test_holm_hand_computed():
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> monotone 0.06
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    assert holm({"x": 0.5, "y": 0.6}) == {"x": 1.0, "y": 1.0}  # 0.5 * 2 = 1.0 caps; 0.6 stays >= 1.0
    # a pre-registered contrast that is missing still counts: m = 5
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": None})
    assert adjusted == pytest.approx({"a": 0.04, "b": 0.09, "c": 0.09, "d": 0.025, "e": None})
    assert holm({"a": 0.01}, family_size=3) == pytest.approx({"a": 0.03})
    with pytest.raises(ValueError, match="family_size 1 is smaller"):
        holm({"a": 0.1, "b": 0.2}, family_size=1)
    with pytest.raises(ValueError, match="outside"):
        holm({"a": 1.5})
