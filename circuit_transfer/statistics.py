"""The statistics the analyses report: intervals over seeds, a paired bootstrap over test items, and
Holm's correction for a pre-registered family of contrasts. Small, dependency-free (numpy only),
and tested against known answers (tests/analyses/test_statistics.py).

- `ci95`: mean and a 95% Student-t interval over seeds (the seed-to-seed spread of a method).
- `paired_bootstrap`: a difference between two methods (or before/after) on the *same* test items,
  resampling items with replacement, the same resample for every seed and both sides, so item
  difficulty cancels. It answers "would this difference hold on another test set of this size",
  given the seeds that ran; with three seeds it is the only test that can reach small p.
- `holm`: Holm's step-down adjustment, which controls the family-wise error rate of the family.
- `spearman_rho`, `spearman_permutation_p`: rank correlation and its exact permutation p-value.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

Number = int | float

# Two-sided 97.5% Student-t quantiles by degrees of freedom (no scipy dependency).
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
    10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042,
}  # fmt: skip


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (next smaller tabulated df)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if df > 30:
        return 1.96
    return _T975[max(d for d in _T975 if d <= df)]


def ci95(values: Iterable[Number | None]) -> dict[str, Any]:
    """Mean, sample std and the half-width of a 95% t-interval; `half` is None when n < 2."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return {"mean": None, "std": None, "half": None, "n": 0}
    mean = sum(xs) / n
    if n < 2:
        return {"mean": mean, "std": None, "half": None, "n": 1}
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return {"mean": mean, "std": std, "half": t975(n - 1) * std / math.sqrt(n), "n": n}


def paired_bootstrap(
    a: ArrayLike,
    b: ArrayLike,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Paired bootstrap over items of `mean(a) - mean(b)`.

    Args:
        a, b: per-item values `[n_seeds, n_items]` (or `[n_items]` for one seed), e.g. 0/1
            correctness; column i of every row is the same test item. Row s of `a` is paired with
            row s of `b` (the same seed).
        n_boot: bootstrap resamples; each draws n_items items with replacement, the same items for
            every seed and both sides.
        seed: seeds the resampling (the result is a function of the inputs and the seed).
        level: coverage of the percentile interval.

    Returns:
        `difference` (mean over seeds and items of a - b), `lo`/`hi` (percentile interval), `se`
        (bootstrap standard error), `p` (two-sided, from the resampled differences recentred on the
        null: `(1 + #{|d* - d| >= |d|}) / (n_boot + 1)`), and the sizes.
    """
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(
            f"paired_bootstrap needs the same items and seeds on both sides: shapes {a.shape} and {b.shape}."
        )
    n_seeds, n_items = a.shape
    if n_items < 2:
        raise ValueError(f"paired_bootstrap needs at least 2 items, got {n_items}.")
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"n_boot must be >= 1 and level in (0, 1); got {n_boot}, {level}.")
    per_item = (a - b).mean(0)  # the seed-averaged difference of each item
    observed = float(per_item.mean())
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_boot)  # n_boot n_items
    resampled = counts @ per_item / n_items
    tail = (1 - level) / 2
    lo, hi = np.quantile(resampled, [tail, 1 - tail], method="inverted_cdf")
    extreme = np.abs(resampled - observed) >= abs(observed) - 1e-12
    return {
        "difference": observed,
        "lo": float(lo),
        "hi": float(hi),
        "se": float(resampled.std(ddof=1)) if n_boot > 1 else None,
        "p": float((1 + extreme.sum()) / (n_boot + 1)),
        "n_items": n_items,
        "n_seeds": n_seeds,
        "n_boot": n_boot,
        "seed": seed,
        "level": level,
    }


def holm(p_values: Mapping[str, Number | None], family_size: int | None = None) -> dict[str, float | None]:
    """Holm's step-down adjusted p-values for a family of tests.

    The i-th smallest of m p-values is multiplied by (m - i + 1), made monotone (never smaller
    than the adjusted value before it) and capped at 1. Rejecting where the adjusted p is below
    alpha controls the family-wise error rate at alpha.

    Args:
        p_values: name -> p; None for a pre-registered contrast that could not be computed (it
            stays None and still counts in the family).
        family_size: m, the number of pre-registered tests (default: all names given). A larger m
            counts contrasts not run yet, so the correction is never weaker than pre-registered.
    """
    known = {k: float(v) for k, v in p_values.items() if v is not None}
    m = len(p_values) if family_size is None else family_size
    if m < len(p_values):
        raise ValueError(f"family_size {m} is smaller than the {len(p_values)} p-values given.")
    for name, p in known.items():
        if not 0 <= p <= 1:
            raise ValueError(f"p-value of {name!r} is {p}, outside [0, 1].")
    out: dict[str, float | None] = dict.fromkeys(p_values)
    running = 0.0
    for i, (name, p) in enumerate(sorted(known.items(), key=lambda kv: (kv[1], kv[0]))):
        running = max(running, min(1.0, (m - i) * p))
        out[name] = running
    return out


def spearman_rho(x: Sequence[Number], y: Sequence[Number]) -> float | None:
    """Spearman rank correlation (average ranks for ties, `circuit_transfer.discovery.spearman`);
    None with fewer than 3 points or a constant side."""
    import torch

    from circuit_transfer.discovery import spearman

    if len(x) != len(y) or len(x) < 3:
        return None
    rho = spearman(torch.tensor(list(x), dtype=torch.float64), torch.tensor(list(y), dtype=torch.float64))
    return None if math.isnan(rho) else rho


def spearman_permutation_p(x: Sequence[Number], y: Sequence[Number], n_random: int = 20000) -> float | None:
    """Two-sided p-value of Spearman's rho under the null of no association: the share of reorderings
    of `y` whose |rho| is at least the observed one. Exact (all n! orders) for n <= 8, else
    `n_random` seeded random orders. None where rho is undefined.

    With the handful of targets a CPU run affords, this says how little a coefficient can show
    (3 points: p >= 1/3, 4 points: p >= 1/12)."""
    observed = spearman_rho(x, y)
    if observed is None:
        return None
    ys = list(y)
    if len(ys) <= 8:
        orders = list(itertools.permutations(ys))
    else:
        rng = random.Random(0)
        orders = [rng.sample(ys, len(ys)) for _ in range(n_random)]
    rhos = [spearman_rho(x, order) for order in orders]
    return sum(1 for r in rhos if r is not None and abs(r) >= abs(observed) - 1e-12) / len(orders)
