"""Fixtures of the discovery tests: the hand-built planted model (see `discovery_planted`)."""

from __future__ import annotations

import pytest
from discovery_planted import build_planted_model, planted_batch
from transformer_lens import HookedTransformer

from circuit_transfer.readout import TaskBatch


@pytest.fixture(scope="session")
def planted_model() -> HookedTransformer:
    return build_planted_model()


@pytest.fixture(scope="session")
def planted_data() -> TaskBatch:
    return planted_batch(8)
