"""circuit-transfer: Circuit-Targeted Supervised Fine-Tuning (CT-SFT) on TransformerLens models.

Data flows one way: task -> model -> discovery (CD-T) -> circuit -> masked transfer -> report.
"""

__version__ = "0.1.0"
