"""`train_classifier` leaves the selected epoch's weights in the model, not the last or the first best;
an interrupted run resumed from its saved state ends as the uninterrupted run, bit for bit."""

from __future__ import annotations

import pytest
import torch

from circuit_transfer.data import load_split
from circuit_transfer.evaluate import evaluate
from circuit_transfer.models import TinyModelSpec, build_tiny_model
from circuit_transfer.optim import MaskedAdamW, OptimConfig
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


def _resume_setup(data_dir):
    train = load_split(TASK.name, "ind", "train", data_dir)[:96]  # 6 steps an epoch
    valid = stratified_subset(load_split(TASK.name, "ind", "valid", data_dir), 45, 0, TASK.n_labels)
    config = TrainConfig(
        epochs=3, batch_size=16, max_len=48, start_is_candidate=False, optim=OptimConfig(lr=3e-3)
    )

    def fresh_model():
        return build_tiny_model(
            [ex.text for ex in train], spec=SPEC, extra_words=TASK.template_words(), seed=0
        )

    return train, valid, config, fresh_model


class Interrupted(Exception):
    """Stands for the process being killed: raised from inside an optimizer step."""


def _interrupt_after(monkeypatch, n_steps: int) -> None:
    real_step = MaskedAdamW.step
    calls = {"n": 0}

    def step(self):
        if calls["n"] == n_steps:
            raise Interrupted
        calls["n"] += 1
        real_step(self)

    monkeypatch.setattr(MaskedAdamW, "step", step)


@pytest.mark.parametrize("save_every_s", [0.0, 1e9], ids=["mid-epoch-state", "epoch-end-state"])
def test_an_interrupted_run_resumed_from_its_state_ends_as_the_uninterrupted_run_bit_for_bit(
    data_dir, tmp_path, monkeypatch, save_every_s
):
    """Independent answer: the same run without interruption. Killed in epoch 2 (after 9 of 18
    steps) and resumed from its state (saved after every step, or only at epoch ends, so epoch 2 is
    redone), the run must give the same weights, curve (train losses included: the same shuffled
    order), selected epoch and per-item valid logits, bit for bit. Not restoring the random states,
    the position, the running losses or the optimizer's moments each changes them."""
    train, valid, config, fresh_model = _resume_setup(data_dir)
    reference_model = fresh_model()
    reference = train_classifier(reference_model, TASK, train, valid, config)
    assert reference.best_epoch >= 1  # a trained epoch won: the comparison covers trained weights

    state = tmp_path / "state.pt"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 9)
        with pytest.raises(Interrupted):
            train_classifier(
                fresh_model(), TASK, train, valid, config, state_path=state, save_every_s=save_every_s
            )
    assert state.is_file()
    resumed_model = fresh_model()
    resumed = train_classifier(
        resumed_model, TASK, train, valid, config, state_path=state, save_every_s=save_every_s
    )
    assert resumed.curve == reference.curve
    assert resumed.best_epoch == reference.best_epoch
    for got, want in zip(resumed.valid_items, reference.valid_items, strict=True):
        assert torch.equal(got.label_logits, want.label_logits)
    want_state = reference_model.state_dict()
    assert all(torch.equal(value, want_state[name]) for name, value in resumed_model.state_dict().items())


def test_the_state_of_another_run_is_refused_before_any_step(data_dir, tmp_path):
    """A state saved with one learning rate cannot be resumed with another: ValueError naming the file
    and the fix, and the model is left as it was (no weight loaded, no step taken)."""
    train, valid, config, fresh_model = _resume_setup(data_dir)
    state = tmp_path / "state.pt"
    short = TrainConfig(**{**config.__dict__, "epochs": 1})
    train_classifier(fresh_model(), TASK, train, valid, short, state_path=state)
    other = TrainConfig(**{**short.__dict__, "optim": OptimConfig(lr=1e-3)})
    model = fresh_model()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"state\.pt is the saved state of another training run.*delete it"):
        train_classifier(model, TASK, train, valid, other, state_path=state)
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())
