"""Mechanism discovery (docs/method.md §4): baselines, head relevance, selection, circuits, faithfulness.

Data flows one way: `make_baseline` (mu per head) -> `head_relevance` (a `HeadScores`) ->
`select_*` / `iterative_search` (a `Circuit`) -> `faithfulness` / `compare`. `discover` runs the
first three in one call.
"""

from circuit_transfer.discovery.baseline import (
    Baseline,
    batches_for,
    label_balanced_mean,
    lay_out,
    make_baseline,
    mean_baseline,
    zero_baseline,
)
from circuit_transfer.discovery.circuit import Circuit, CircuitModelMismatch
from circuit_transfer.discovery.compare import CircuitComparison, compare, rankdata, spearman
from circuit_transfer.discovery.faithfulness import (
    Faithfulness,
    FaithfulnessCurve,
    TaskMetric,
    ablated_label_logits,
    ablated_metric,
    distinct_random_circuits,
    faithfulness,
    faithfulness_curve,
)
from circuit_transfer.discovery.pipeline import discover
from circuit_transfer.discovery.relevance import (
    HeadScores,
    ablation_label_beta,
    attribution_label_beta,
    cdt_label_beta,
    head_name,
    head_relevance,
    task_weights,
)
from circuit_transfer.discovery.selection import (
    iterative_search,
    resolve_k,
    select_near_zero,
    select_random,
    select_threshold,
    select_top_k,
    through_target_scores,
)

__all__ = [
    "Baseline",
    "Circuit",
    "CircuitComparison",
    "CircuitModelMismatch",
    "Faithfulness",
    "FaithfulnessCurve",
    "HeadScores",
    "TaskMetric",
    "ablated_label_logits",
    "ablated_metric",
    "ablation_label_beta",
    "attribution_label_beta",
    "batches_for",
    "cdt_label_beta",
    "compare",
    "discover",
    "distinct_random_circuits",
    "faithfulness",
    "faithfulness_curve",
    "head_name",
    "head_relevance",
    "iterative_search",
    "label_balanced_mean",
    "lay_out",
    "make_baseline",
    "mean_baseline",
    "rankdata",
    "resolve_k",
    "select_near_zero",
    "select_random",
    "select_threshold",
    "select_top_k",
    "spearman",
    "task_weights",
    "through_target_scores",
    "zero_baseline",
]
