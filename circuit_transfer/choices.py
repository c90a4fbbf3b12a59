"""The names of the choices the pipeline accepts, importable without torch.

The command line lists them in `--help` and validates flags against them at parse time; keeping
them here (and importing them from here in the modules that implement them) lets
`circuit-transfer --help` answer without importing torch or TransformerLens.
"""

from __future__ import annotations

BASELINE_KINDS: tuple[str, ...] = ("label-balanced", "mean", "zero")  # discovery.baseline
SCORES: tuple[str, ...] = ("directional", "cdt-ratio")  # discovery.relevance
ESTIMATORS: tuple[str, ...] = ("cdt", "attribution", "ablation")  # discovery.relevance
SELECTIONS: tuple[str, ...] = (
    "top-k",
    "threshold",
    "near-zero",
    "random",
    "iterative",
)  # discovery.selection
BACKENDS: tuple[str, ...] = ("hooked", "bridge")  # models.bridge: HookedTransformer or TransformerBridge
METHODS: tuple[str, ...] = ("ct-sft", "near-zero", "random", "ln-only", "full", "zero-shot")  # transfer
