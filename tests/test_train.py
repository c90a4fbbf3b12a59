"""`train_classifier` leaves the selected epoch's weights in the model, not the last or the first best."""

from __future__ import annotations

import torch

from circuit_transfer.data import load_split
from circuit_transfer.evaluate import evaluate
from circuit_transfer.models import TinyModelSpec, build_tiny_model
from circuit_transfer.optim import OptimConfig
from circuit_transfer.tasks import get_task, stratified_subset
from circuit_transfer.train import TrainConfig, train_classifier

TASK = get_task("nusax-senti")
SPEC = TinyModelSpec(n_layers=2, n_heads=4, d_model=32, d_head=8, d_mlp=64, vocab_size=600)


def test_the_model_ends_with_the_best_epoch_weights_when_that_is_not_the_first_improvement(data_dir):
    """Independent answer: the per-item valid logits recorded after every epoch. The returned model's
    valid logits must be those of the best epoch, bit for bit; keeping the first best epoch's weights
    (or the last epoch's) gives another epoch's logits."""
    train = load_split(TASK.name, "ind", "train", data_dir)
    valid = stratified_subset(load_split(TASK.name, "ind", "valid", data_dir), 60, 0, TASK.n_labels)
    model = build_tiny_model([ex.text for ex in train], spec=SPEC, extra_words=TASK.template_words(), seed=0)
    config = TrainConfig(
        epochs=5, batch_size=16, max_len=48, start_is_candidate=False, optim=OptimConfig(lr=3e-3)
    )
    result = train_classifier(model, TASK, train[:160], valid, config)
    accuracies = [row["valid_accuracy"] for row in result.curve]
    assert result.best_epoch >= 2 and accuracies[result.best_epoch] > accuracies[1]  # a later, better epoch
    assert result.best_epoch < config.epochs or accuracies[-1] > max(accuracies[1:-1])
    final = evaluate(model, TASK, valid, batch_size=32, max_len=config.max_len)
    assert torch.equal(final.items.label_logits, result.valid_items[result.best_epoch].label_logits)
    others = [e for e in range(1, config.epochs + 1) if e != result.best_epoch]
    assert all(not torch.equal(final.items.label_logits, result.valid_items[e].label_logits) for e in others)
