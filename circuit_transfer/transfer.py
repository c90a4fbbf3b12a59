"""Masked transfer to the target language: CT-SFT and the controls it is compared with (docs/method.md §5).

Every method starts from the same proxy model (a model object in memory, or a checkpoint
directory) and gets the same target-language training subset, seed, schedule and epoch selection
(on the target valid split); only the set of parameters that may change differs:

| method      | trainable                                                                 |
|-------------|---------------------------------------------------------------------------|
| `ct-sft`    | the circuit's heads (Q, K, V, O slices) + LayerNorm                       |
| `near-zero` | the k heads outside the circuit with the smallest |relevance| + LayerNorm |
| `random`    | k seeded random heads + LayerNorm                                         |
| `ln-only`   | LayerNorm only                                                            |
| `full`      | everything (continued full fine-tuning)                                   |
| `zero-shot` | nothing: evaluation only                                                  |

A run evaluates target test and proxy test (and any extra retention languages) before and after,
and writes `result.json` (atomically) plus `delta.safetensors`, the adapter-only delta: just the
entries that could change, re-applicable to a fresh copy of the proxy with `delta.apply_delta`, and
`predictions.npz`, every evaluation's per-item predictions and label logits
(`evaluate.load_predictions`): sets `before/<lang>` and `after/<lang>` for every test language, and
`valid/epoch<e>` for the target valid split after each epoch.

Parameter counts (`params_total`, `params_trainable`, `params_changed`) are real parameters, tied
weights counted once (`models.params`); `params_total_hooked` is what the TransformerLens model holds.

    record = transfer(model, TransferSpec("ct-sft", target="jav", n_train=100), circuit,
                      task=task, proxy_lang="ind", out="runs/jav")   # trains a copy of `model`

The data comes from the task (a built-in data set, or your own `get_task(..., data=...)`), or
explicitly as `train=`, `valid=` and `tests=` lists of `Example`s.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from circuit_transfer.choices import METHODS
from circuit_transfer.data import Example
from circuit_transfer.delta import extract_delta, save_delta
from circuit_transfer.discovery import Circuit, select_near_zero, select_random
from circuit_transfer.evaluate import EvalResult, ItemPredictions, evaluate, save_predictions
from circuit_transfer.io import atomic_write_dir, atomic_write_json
from circuit_transfer.masking import FULL, MaskPolicy, masked_training
from circuit_transfer.models import SpecKind, load_model, read_checkpoint_metadata, resolve_spec
from circuit_transfer.models.bridge import backend_of, copy_bridge, is_bridge
from circuit_transfer.models.params import changed_entries, count_parameters
from circuit_transfer.readout import NO_TOKENIZER
from circuit_transfer.tasks import Task, stratified_cap, stratified_subset
from circuit_transfer.train import TrainConfig, train_classifier

# Fine-tuning a trained checkpoint on ~100 examples: few epochs, selection on target valid.
TRANSFER_TRAIN = TrainConfig(epochs=5, batch_size=16)
PREDICTIONS = "predictions.npz"
RUN_FILES = (
    "result.json",
    "delta.safetensors",
    PREDICTIONS,
)  # what a run folder holds (and all `out` may hold)


@dataclass(frozen=True)
class TransferSpec:
    """One transfer run.

    Attributes:
        method: one of METHODS.
        target: target language code.
        n_train: target training examples (a seeded, label-stratified subset of the train split).
        seed: seeds the training subset and the random-head control (training's shuffling follows
            `config.seed`; the analyses sweep sets both to the run's seed).
        retention_langs: extra languages whose test accuracy is measured before and after
            (forgetting where target data cannot help, docs/method.md §7).
        n_test: cap on test examples per language (None: the whole split).
        n_valid: cap on the valid examples that select the epoch (None: the whole split; XNLI's
            valid cut has 498 rows, evaluated once per epoch).
    """

    method: str
    target: str
    n_train: int
    seed: int = 0
    retention_langs: tuple[str, ...] = ()
    n_test: int | None = None
    n_valid: int | None = None
    config: TrainConfig = field(default_factory=lambda: TRANSFER_TRAIN)
    policy: MaskPolicy = field(default_factory=MaskPolicy)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r}. Valid methods: {', '.join(METHODS)}.")
        if self.n_train <= 0 and self.method != "zero-shot":
            raise ValueError(f"n_train must be positive for method {self.method!r}, got {self.n_train}.")


def heads_for(method: str, circuit: Circuit | None, model, seed: int):
    """The head set a method trains: the circuit, its near-zero complement, random heads, none, or FULL.

    near-zero: the k = len(circuit) heads with the smallest |score| among the heads outside the
    circuit (circuit heads only once those run out), so "CT-SFT vs near-zero" never trains the
    same head in both arms when k <= half the heads. random: `select_random(..., k, seed)`.
    """
    if method == "full":
        return FULL
    if method in ("ln-only", "zero-shot"):
        return []
    if circuit is None:
        raise ValueError(
            f"Method {method!r} needs a circuit (--circuit circuit.json from `circuit-transfer discover`)."
        )
    circuit.validate(model)
    k = len(circuit.heads)
    if k == 0:
        raise ValueError(
            f"Method {method!r} was given an empty circuit (0 heads): it would train only the norms, "
            "which is the 'ln-only' control. Discover a circuit with heads (`circuit-transfer discover --k N`)."
        )
    if method == "ct-sft":
        return list(circuit.heads)
    if method == "near-zero":
        if circuit.scores is None:
            raise ValueError("The near-zero control needs the circuit's head scores; this circuit has none.")
        return list(select_near_zero(circuit.scores, k, avoid=circuit.heads).heads)
    return list(select_random(model.cfg.n_layers, model.cfg.n_heads, k, seed).heads)


def _scores(
    model, task: Task, examples: dict, config: TrainConfig, progress: str | bool = False
) -> dict[str, EvalResult]:
    """Scores per language; `progress` (a label such as "before") shows one bar per language."""
    return {
        lang: evaluate(
            model,
            task,
            rows,
            batch_size=config.batch_size * 4,
            max_len=config.max_len,
            progress=f"{progress} {lang}" if progress else False,
        )
        for lang, rows in examples.items()
    }


def _known_before(before: Mapping[str, dict] | None, tests: dict, n_labels: int) -> dict[str, EvalResult]:
    """The given 'before' scores that carry per-item predictions for exactly this run's test items."""
    known = {}
    for lang, rows in tests.items():
        given = (before or {}).get(lang)
        if given is None:
            continue
        if given.get("n") != len(rows):
            raise ValueError(
                f"The given 'before' scores for {lang} cover {given.get('n')} test examples but this run "
                f"tests {len(rows)}: pass scores measured with the same n_test."
            )
        if given.get("items") is None:
            continue  # no per-item predictions: measured again, so that every run stores them
        items = ItemPredictions.from_json(given["items"])
        if list(items.ids) != [str(ex.id) for ex in rows]:
            raise ValueError(
                f"The given 'before' predictions for {lang} are for other test items than this run's: "
                "pass scores measured on the same test set (same n_test and data)."
            )
        known[lang] = EvalResult.from_items(items, n_labels)
    return known


def before_json(result: EvalResult) -> dict:
    """A 'before' entry that `transfer(before=...)` can reuse: the scores and the per-item predictions."""
    return {**result.to_dict(), "items": None if result.items is None else result.items.to_json()}


def is_run_dir(path: str | Path) -> bool:
    """Whether `path` is a folder holding nothing but a transfer run's files (so it may be replaced)."""
    path = Path(path)
    return path.is_dir() and all(child.name in RUN_FILES for child in path.iterdir())


def transfer(
    model_or_dir,
    spec: TransferSpec,
    circuit: Circuit | None = None,
    out: str | Path | None = None,
    task: Task | None = None,
    data_dir=None,
    progress: bool = False,
    before: Mapping[str, dict] | None = None,
    *,
    train: Sequence[Example] | None = None,
    valid: Sequence[Example] | None = None,
    tests: Mapping[str, Sequence[Example]] | None = None,
    proxy_lang: str | None = None,
    in_place: bool = False,
) -> dict:
    """Run one transfer from a proxy model; return (and, with `out`, save) the result record.

    Args:
        model_or_dir: the proxy: a model object in memory (a `HookedTransformer` with a tokenizer,
            or any model the package can train), or a checkpoint directory / `load_model` spec.
        task: the prompt format and, for the default data, the examples. Default for a checkpoint
            directory: the task it records (`task_of_checkpoint`); a model object needs it.
        train: the target-language training pool (`spec.n_train` examples are drawn from it,
            label-stratified and seeded). Default: the task's train split of `spec.target`.
        valid: the examples that select the epoch (capped by `spec.n_valid`). Default: the
            task's valid split of `spec.target`.
        tests: test examples by language; must include `spec.target`, the proxy language and
            every `spec.retention_langs`. Default: the task's test split of each of those.
        proxy_lang: the language the proxy is competent in (forgetting is measured on it).
            Default for a checkpoint directory: the language it records.
        in_place: train the model object you pass (it ends holding the selected epoch's weights).
            By default a copy is trained and your model is left bit-identical. A directory is
            always loaded afresh and never written to.
        before: already-measured scores of the unchanged proxy on the same test sets, by language
            (`before_json` of an earlier evaluation: scores plus per-item predictions); languages it
            lacks, or gives without predictions, are evaluated. A sweep passes them so the proxy is
            not re-scored on every run.
        out: the run folder. An existing one is replaced as a whole (atomically: no file of an
            earlier run survives beside the new ones) when it holds nothing but a run's files; a
            folder holding anything else is refused.

    Every input is checked (the output folder, task, languages, examples, label words against the
    tokenizer, the circuit against the model) before any compute.
    """
    started = time.time()
    if out is not None and Path(out).exists() and not is_run_dir(out):
        raise FileExistsError(
            f"{out} exists and is not a transfer run folder (it holds files other than "
            f"{', '.join(RUN_FILES)}); it is never replaced: choose another output folder."
        )
    model, recorded, proxy_name = _proxy_model(model_or_dir, in_place)
    task = task or _recorded_task(recorded, proxy_name)
    proxy_lang = proxy_lang or recorded.get("lang")
    if not proxy_lang:
        raise ValueError(
            f"transfer needs the proxy's language for {proxy_name}: pass proxy_lang=... (a checkpoint "
            "directory records it as metadata 'lang', see save_checkpoint)."
        )
    if getattr(model, "tokenizer", None) is None:
        raise ValueError(NO_TOKENIZER)
    task.label_token_ids(model.tokenizer)  # refuse colliding label words before any compute
    for what, rows in (
        ("train", train),
        ("valid", valid),
        *((f"tests[{k!r}]", v) for k, v in (tests or {}).items()),
    ):
        if rows is not None:
            task.check_examples(rows, what)
    heads = heads_for(spec.method, circuit, model, spec.seed)
    train, valid, tests = _transfer_data(task, spec, proxy_lang, train, valid, tests, data_dir)

    known = _known_before(before, tests, task.n_labels)
    missing = {lang: rows for lang, rows in tests.items() if lang not in known}
    measured = {**known, **_scores(model, task, missing, spec.config, "before" if progress else False)}
    before_results = {lang: measured[lang] for lang in tests}
    before = {lang: r.to_dict() for lang, r in before_results.items()}
    base_state = {name: p.detach().clone() for name, p in model.named_parameters()}
    record: dict = {
        "method": spec.method,
        "task": task.name,
        "proxy": proxy_name,
        "proxy_lang": proxy_lang,
        "target": spec.target,
        "seed": spec.seed,
        "k": None if heads == FULL else len(heads),
        "heads": None if heads == FULL else [list(h) for h in heads],
        "circuit": circuit.to_dict() if circuit is not None and spec.method == "ct-sft" else None,
        "data": {
            "n_train": len(train),
            "train_ids": [ex.id for ex in train],
            "n_valid": len(valid),
            "n_test": {k: len(v) for k, v in tests.items()},
        },
        "train_config": spec.config.to_dict(),
        "policy": asdict(spec.policy),
    }
    n_total = count_parameters(model)
    if spec.method == "zero-shot":
        after_results, curve, best_epoch, n_trainable, valid_items = before_results, [], 0, 0, []
        masks = None
    else:
        with masked_training(model, heads, spec.policy) as trainable:
            result = train_classifier(
                model, task, train, valid, spec.config, masks=trainable.masks, progress=progress
            )
        masks = trainable.masks
        after_results = _scores(model, task, tests, spec.config, "after" if progress else False)
        curve, best_epoch, valid_items = result.curve, result.best_epoch, result.valid_items
        n_trainable = count_parameters(model, masks)
    after = {lang: r.to_dict() for lang, r in after_results.items()}
    n_changed = count_parameters(model, changed_entries(model, base_state))
    predictions = {
        **{f"before/{lang}": r.items for lang, r in before_results.items()},
        **{f"after/{lang}": r.items for lang, r in after_results.items()},
        **{f"valid/epoch{e}": items for e, items in enumerate(valid_items)},
    }
    record.update(
        before=before,
        after=after,
        **outcome(before, after, spec.target, proxy_lang),
        params_trainable=n_trainable,
        params_total=n_total,
        params_total_hooked=sum(p.numel() for p in model.parameters()),
        params_trainable_fraction=n_trainable / n_total,
        params_changed=n_changed,
        params_changed_fraction=n_changed / n_total,
        best_epoch=best_epoch,
        curve=curve,
        predictions={
            "file": PREDICTIONS if out is not None else None,
            "sets": {name: len(items.ids) for name, items in predictions.items()},
        },
        wall_time_s=time.time() - started,
    )
    if out is not None:
        delta = None if masks is None else extract_delta(model, base_state, masks)

        def write(folder: Path) -> None:
            if delta is not None:
                save_delta(
                    folder / "delta.safetensors",
                    delta,
                    metadata={"method": spec.method, "proxy": proxy_name, "backend": backend_of(model)},
                )
            save_predictions(folder / PREDICTIONS, predictions)
            atomic_write_json(folder / "result.json", record)

        atomic_write_dir(out, write)
    return record


def outcome(before: Mapping[str, dict], after: Mapping[str, dict], target: str, proxy_lang: str) -> dict:
    """A run's headline numbers from its test scores by language, before and after training.

    forgetting = proxy accuracy before - proxy accuracy after (positive: the proxy language got
    worse; docs/method.md §7 explains why it is confounded on parallel data).
    """
    return {
        "target_accuracy": after[target]["accuracy"],
        "target_macro_f1": after[target]["macro_f1"],
        "proxy_accuracy_before": before[proxy_lang]["accuracy"],
        "proxy_accuracy_after": after[proxy_lang]["accuracy"],
        "forgetting": before[proxy_lang]["accuracy"] - after[proxy_lang]["accuracy"],
    }


def _proxy_model(model_or_dir, in_place: bool) -> tuple[Any, dict, str]:
    """(the model to train, the checkpoint's recorded metadata or {}, a name for the record).

    A model object is copied unless `in_place` (its tokenizer is shared, not copied: training never
    touches it); a directory or spec is loaded, so the loaded model is the run's own."""
    if isinstance(model_or_dir, (str, os.PathLike)):
        path = str(model_or_dir)
        is_checkpoint = resolve_spec(path)[0] is SpecKind.CHECKPOINT
        return load_model(path), read_checkpoint_metadata(path) if is_checkpoint else {}, path
    model = model_or_dir
    if not hasattr(model, "named_parameters") or not hasattr(model, "cfg"):
        raise TypeError(
            f"transfer takes a model (e.g. a HookedTransformer) or a checkpoint directory, not a "
            f"{type(model).__name__}."
        )
    name = f"in-memory {type(model).__name__} {getattr(model.cfg, 'model_name', '')}".strip()
    if in_place:
        return model, {}, name
    tokenizer = getattr(model, "tokenizer", None)
    duplicate = copy_bridge if is_bridge(model) else copy.deepcopy
    return duplicate(model, memo={id(tokenizer): tokenizer}), {}, name


def _recorded_task(recorded: dict, proxy_name: str) -> Task:
    if not recorded.get("task"):
        raise ValueError(
            f"transfer needs task=... for {proxy_name}: a model object (or a checkpoint without a "
            "recorded task) does not say which prompt format and data to use."
        )
    return Task.from_dict(recorded["task"])


def _transfer_data(
    task: Task,
    spec: TransferSpec,
    proxy_lang: str,
    train: Sequence[Example] | None,
    valid: Sequence[Example] | None,
    tests: Mapping[str, Sequence[Example]] | None,
    data_dir,
) -> tuple[list[Example], list[Example], dict[str, list[Example]]]:
    """The run's training subset, epoch-selection set and test sets, each checked."""
    if train is None or valid is None:
        train_pool, valid_pool = task.train_valid(spec.target, data_dir)
        train = train_pool if train is None else train
        valid = valid_pool if valid is None else valid
    train, valid = list(train), list(valid)
    if spec.n_train > len(train):
        raise ValueError(
            f"{task.name}/{spec.target} has {len(train)} training examples; cannot take n_train={spec.n_train}."
        )
    if not valid and spec.method != "zero-shot":
        raise ValueError("The valid set is empty: the epoch is selected on it.")
    train = stratified_subset(train, spec.n_train, spec.seed, task.n_labels) if spec.n_train > 0 else []
    valid = stratified_cap(valid, spec.n_valid, task.n_labels)
    eval_langs = list(dict.fromkeys([spec.target, proxy_lang, *spec.retention_langs]))
    if tests is None:
        tests = {lang: task.test_examples(lang, data_dir) for lang in eval_langs}
    else:
        absent = [lang for lang in eval_langs if lang not in tests]
        if absent:
            raise ValueError(
                f"tests has no examples for {', '.join(absent)} (it has {', '.join(tests) or 'none'}): it "
                "needs the target, the proxy language and every retention language."
            )
        eval_langs += [lang for lang in tests if lang not in eval_langs]
    for lang in eval_langs:
        if not tests[lang]:
            raise ValueError(f"tests[{lang!r}] is empty.")
    return (
        train,
        valid,
        {lang: stratified_cap(tests[lang], spec.n_test, task.n_labels) for lang in eval_langs},
    )
