"""`prepare-proxy -> discover -> transfer -> report` from the command line on a bridge model.

The model is a tiny random Hugging Face Llama (grouped-query attention) with a BPE tokenizer
trained on the task's texts, written as a local HF directory; `--backend bridge` boots it as a
TransformerBridge, and every later step follows the proxy checkpoint's own backend.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf

from circuit_transfer.cli import main
from circuit_transfer.data import load_split
from circuit_transfer.models import checkpoint_backend
from circuit_transfer.models.tokenizer import train_bpe_tokenizer
from circuit_transfer.tasks import get_task

pytestmark = pytest.mark.bridge


def _tiny_hf_llama(path, data_dir) -> None:
    task = get_task("nusax-senti")
    texts = [ex.text for ex in load_split(task.name, "ind", "train", data_dir)]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=400, extra_words=task.template_words())
    torch.manual_seed(0)
    config = tf.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    tf.LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def test_discover_transfer_report_end_to_end_on_the_bridge(tmp_path, data_dir):
    hf_dir, run = tmp_path / "hf-llama", tmp_path / "run"
    _tiny_hf_llama(hf_dir, data_dir)
    sizes = ["--max-len", "48", "--batch-size", "8"]
    assert main(["prepare-proxy", "--model", str(hf_dir), "--backend", "bridge", "--lang", "ind",
                 "--epochs", "1", "--n-train", "24", "--n-valid", "12", "--n-test", "12",
                 "--lr", "1e-3", "--out", str(run / "proxy"), *sizes]) == 0  # fmt: skip
    assert checkpoint_backend(run / "proxy") == "bridge"
    assert main(["discover", "--model", str(run / "proxy"), "--lang", "ind", "--estimator", "cdt",
                 "--k", "3", "--n-examples", "4", "--out", str(run / "circuits" / "ind.json"), *sizes]) == 0  # fmt: skip
    circuit = json.loads((run / "circuits" / "ind.json").read_text())
    assert len(circuit["heads"]) == 3
    assert circuit["scores"]["estimator"] == "cdt"
    assert main(["transfer", "--proxy", str(run / "proxy"), "--target", "jav", "--method", "ct-sft",
                 "--circuit", str(run / "circuits" / "ind.json"), "--n-train", "12", "--epochs", "1",
                 "--out", str(run / "transfer" / "ct-sft"), *sizes]) == 0  # fmt: skip
    result = json.loads((run / "transfer" / "ct-sft" / "result.json").read_text())
    assert 0 < result["params_trainable_fraction"] < 1
    assert main(["report", str(run), "--out", str(tmp_path / "report.html"), "--max-len", "48"]) == 0
    assert "ct-sft" in (tmp_path / "report.html").read_text()
