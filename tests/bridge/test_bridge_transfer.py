"""`transfer()` with a TransformerBridge object in memory, as a notebook user would call it.

The user's bridge (a random local HF Llama with grouped-query attention, or a GPT-2 whose q/k/v
are the bridge's views into the fused `c_attn`: copies must keep them views) must come back bit for
bit as it was; the trained copy's masked entries must keep their bits; and the run's delta applied
to a fresh copy must reproduce the trained copy's logits exactly (`torch.equal`), as
`tests/test_transfer_in_memory.py` shows for a HookedTransformer.
"""

from __future__ import annotations

import pytest
import torch
from hf_families import TEXTS

from circuit_transfer.data import Example
from circuit_transfer.delta import apply_delta, load_delta
from circuit_transfer.discovery.circuit import Circuit
from circuit_transfer.masking import trainable_set
from circuit_transfer.models import load_model
from circuit_transfer.models.bridge import copy_bridge
from circuit_transfer.optim import OptimConfig
from circuit_transfer.readout import encode
from circuit_transfer.tasks import get_task
from circuit_transfer.train import TrainConfig
from circuit_transfer.transfer import TransferSpec, transfer

pytestmark = pytest.mark.bridge

CONFIG = TrainConfig(epochs=2, batch_size=4, max_len=16, start_is_candidate=False, optim=OptimConfig(lr=1e-2))
SPEC = TransferSpec("ct-sft", target="jav", n_train=6, config=CONFIG)


def _examples(lang: str, n: int) -> list[Example]:
    return [Example(id=f"{lang}{i}", text=TEXTS[i % 3], label=i % 3, lang=lang) for i in range(n)]


def _bits(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().view(torch.int32) for n, p in model.named_parameters()}


@pytest.mark.parametrize("family", ["llama", "gpt2"])  # GQA; q/k/v views into the fused c_attn
def test_transfer_of_a_bridge_object_leaves_it_unchanged_and_its_delta_reproduces_the_trained_logits(
    family, hf_dir, tmp_path
):
    bridge = load_model(hf_dir(family), device="cpu", backend="bridge")
    task = get_task("nusax-senti", label_words=[" ini", " sangat", " dan"])  # words of TEXTS
    circuit = Circuit(heads=((0, 1), (1, 2)), n_layers=2, n_heads=bridge.cfg.n_heads)
    data = dict(
        train=_examples("jav", 6),
        valid=_examples("jav", 3),
        tests={"jav": _examples("jav", 3), "ind": _examples("ind", 3)},
    )
    before = _bits(bridge)
    record = transfer(bridge, SPEC, circuit, task=task, proxy_lang="ind", out=tmp_path / "run", **data)
    assert record["params_changed"] > 0
    assert record["proxy"].startswith("in-memory TransformerBridge")
    for name, bits in _bits(bridge).items():
        assert torch.equal(bits, before[name]), f"the user's bridge moved: {name}"

    trained = copy_bridge(bridge)  # copy.deepcopy would turn GPT-2's views into copies
    transfer(trained, SPEC, circuit, task=task, proxy_lang="ind", in_place=True, **data)
    masks = trainable_set(bridge, circuit).masks
    after = _bits(trained)
    for name, mask in masks.items():
        frozen = mask == 0
        assert torch.equal(after[name][frozen], before[name][frozen]), name
    assert any(not torch.equal(after[n], before[n]) for n in after)

    fresh = copy_bridge(bridge)
    apply_delta(fresh, load_delta(tmp_path / "run" / "delta.safetensors")[0])
    batch = encode(bridge.tokenizer, task, data["tests"]["jav"], max_len=16)
    with torch.no_grad():
        logits = [m(batch.tokens, attention_mask=batch.attention_mask) for m in (fresh, trained, bridge)]
    assert torch.equal(logits[0], logits[1])
    assert not torch.equal(logits[0], logits[2])
