"""CD-T (contextual decomposition for transformers) over TransformerLens models.

`decompose_heads` splits each source head's output into a relevant part (its deviation from a
baseline) and an irrelevant part, and propagates the relevant part to the logits (docs/method.md §3).
"""

from circuit_transfer.cdt.engine import RECORDABLE, decompose_heads
from circuit_transfer.cdt.result import DecompositionResult, Head
from circuit_transfer.cdt.rules import CDT_REFERENCE, AttentionRule, BiasRule, Rules
from circuit_transfer.cdt.support import check_supported

__all__ = [
    "CDT_REFERENCE",
    "RECORDABLE",
    "AttentionRule",
    "BiasRule",
    "DecompositionResult",
    "Head",
    "Rules",
    "check_supported",
    "decompose_heads",
]
