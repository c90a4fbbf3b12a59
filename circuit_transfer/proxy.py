"""The proxy checkpoint: a model made competent at the task in a higher-resource language.

`prepare_proxy` fine-tunes a pretrained model (or trains the tiny model from scratch) on the
proxy language's train split, selects the epoch on its valid split, scores its test split, and
saves a checkpoint whose metadata records the task, so later steps read the same prompt format.
"""

from __future__ import annotations

import time
from pathlib import Path

from circuit_transfer.evaluate import evaluate
from circuit_transfer.models import build_tiny_model, load_model, read_checkpoint_metadata, save_checkpoint
from circuit_transfer.optim import OptimConfig
from circuit_transfer.tasks import Task, get_task, stratified_cap
from circuit_transfer.train import TrainConfig, train_classifier

# Training from scratch needs more epochs and a larger step than fine-tuning a pretrained model.
TINY_TRAIN = TrainConfig(epochs=8, batch_size=16, optim=OptimConfig(lr=2e-3, weight_decay=0.01))
PRETRAINED_TRAIN = TrainConfig(epochs=3, batch_size=8, optim=OptimConfig(lr=3e-5, weight_decay=0.01))


def train_eval_splits(dataset: str) -> tuple[str, str, str]:
    """(train, valid, test) split names of a built-in data set (`Task.split_roles`)."""
    return get_task(dataset).split_roles()


def load_train_valid(dataset: str, lang: str, data_dir=None):
    """Train and valid examples of a built-in data set's language (`Task.train_valid`)."""
    return get_task(dataset).train_valid(lang, data_dir)


def task_of_checkpoint(path: str | Path) -> Task:
    """The task (name, labels, template and label words; not its data) a checkpoint was trained with.

    It is the checkpoint metadata's "task" entry (`Task.to_dict`, see `save_checkpoint`)."""
    meta = read_checkpoint_metadata(path).get("task")
    if not meta:
        raise ValueError(f"{path} records no task: pass --task/--template/--label-words explicitly.")
    return Task.from_dict(meta)


def training_state_path(out: str | Path) -> Path:
    """Where `prepare_proxy` keeps the resumable state of a training into `out` (beside it)."""
    out = Path(out)
    return out.with_name(out.name + ".training-state.pt")


def prepare_proxy(
    task: Task,
    lang: str,
    model_spec: str,
    out: str | Path,
    config: TrainConfig | None = None,
    data_dir=None,
    progress: bool = False,
    n_train: int | None = None,
    n_valid: int | None = None,
    n_test: int | None = None,
    backend: str | None = None,
) -> dict:
    """Train the proxy checkpoint and save it to `out`; returns its metadata (scores included).

    `backend` ("hooked" / "bridge", None: `load_model`'s default) is the model class the proxy is
    trained and saved as; the tiny model exists only as a HookedTransformer.

    `n_train` / `n_valid` / `n_test` take fixed label-stratified subsets (seed 0) of the train, valid
    and test splits, for when a CPU cannot afford the whole split (XNLI English: 1992 + 498 rows to
    train on, 5010 test pairs); the test subset is the same rows as a sweep's `--n-test`."""
    if model_spec == "tiny" and backend == "bridge":
        raise ValueError(
            "the tiny model is a HookedTransformer; backend='bridge' needs a Hugging Face model: "
            "smollm2-135m, a local HF directory, or a bridge checkpoint"
        )
    started = time.time()
    lang = task.normalise_lang(lang)
    train, valid = task.train_valid(lang, data_dir)
    test = task.test_examples(lang, data_dir)
    for name, n, rows in (("n_train", n_train, train), ("n_valid", n_valid, valid), ("n_test", n_test, test)):
        if n is not None and n > len(rows):  # a silent cap would train on another amount than asked
            raise ValueError(
                f"{name}={n}, but {task.name}/{lang} has only {len(rows)} {name.removeprefix('n_')} examples: "
                f"ask for at most {len(rows)}, or leave {name} out to use all of them."
            )
    train, valid, test = (
        stratified_cap(train, n_train, task.n_labels),
        stratified_cap(valid, n_valid, task.n_labels),
        stratified_cap(test, n_test, task.n_labels),
    )
    if model_spec == "tiny":
        texts = [ex.text for ex in train] + [ex.text_pair for ex in train if ex.text_pair]
        model = build_tiny_model(texts, extra_words=task.template_words())
        config = config or TINY_TRAIN
    else:
        model = load_model(model_spec, backend=backend)
        config = config or PRETRAINED_TRAIN
    task.label_token_ids(model.tokenizer)  # refuse colliding label words before any training
    state = training_state_path(out)
    resumed = state.is_file()
    result = train_classifier(model, task, train, valid, config, progress=progress, state_path=state)
    test_scores = evaluate(model, task, test, batch_size=config.batch_size * 2, max_len=config.max_len)
    metadata = {
        "kind": "proxy",
        "base_model": model_spec,
        "task": task.to_dict(),
        "lang": lang,
        "splits": {"train": len(train), "valid": len(valid), "test": len(test)},
        "train_config": config.to_dict(),
        "training": result.to_dict(),
        "test": test_scores.to_dict(),
        "wall_time_s": time.time() - started,  # this call's: a resumed training's earlier part is not in it
        "resumed": resumed,
    }
    save_checkpoint(model, out, metadata=metadata)
    state.unlink()
    return metadata
