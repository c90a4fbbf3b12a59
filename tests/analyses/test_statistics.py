"""The small statistics the analyses report: known answers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "analyses"))

from common import ci95, spearman_permutation_p, spearman_rho  # noqa: E402


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
