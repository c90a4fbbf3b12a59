"""Masked transfer to the target language: CT-SFT and the controls it is compared with (method.md §5).

Every method starts from the same proxy checkpoint and gets the same target-language training
subset, seed, schedule and epoch selection (on the target valid split); only the set of parameters
that may change differs:

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
entries that could change, re-applicable to the proxy checkpoint with `delta.apply_delta`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from circuit_transfer.choices import METHODS
from circuit_transfer.data import load_split
from circuit_transfer.delta import extract_delta, save_delta
from circuit_transfer.discovery import Circuit, select_near_zero, select_random
from circuit_transfer.evaluate import evaluate
from circuit_transfer.io import atomic_write_dir, atomic_write_json
from circuit_transfer.masking import FULL, MaskPolicy, masked_training
from circuit_transfer.models import load_model
from circuit_transfer.proxy import load_train_valid, task_of_checkpoint, train_eval_splits
from circuit_transfer.tasks import Task, stratified_cap, stratified_subset
from circuit_transfer.train import TrainConfig, train_classifier

# Fine-tuning a trained checkpoint on ~100 examples: few epochs, selection on target valid.
TRANSFER_TRAIN = TrainConfig(epochs=5, batch_size=16)
RUN_FILES = ("result.json", "delta.safetensors")  # what a run folder holds (and all `out` may hold)


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
            (forgetting where target data cannot help, method.md §7).
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


def _scores(model, task: Task, examples: dict, config: TrainConfig, progress: str | bool = False) -> dict:
    """Scores per language; `progress` (a label such as "before") shows one bar per language."""
    return {
        lang: evaluate(
            model,
            task,
            rows,
            batch_size=config.batch_size * 4,
            max_len=config.max_len,
            progress=f"{progress} {lang}" if progress else False,
        ).to_dict()
        for lang, rows in examples.items()
    }


def is_run_dir(path: str | Path) -> bool:
    """Whether `path` is a folder holding nothing but a transfer run's files (so it may be replaced)."""
    path = Path(path)
    return path.is_dir() and all(child.name in RUN_FILES for child in path.iterdir())


def transfer(
    proxy_dir: str | Path,
    spec: TransferSpec,
    circuit: Circuit | None = None,
    out: str | Path | None = None,
    task: Task | None = None,
    data_dir=None,
    progress: bool = False,
    before: Mapping[str, dict] | None = None,
) -> dict:
    """Run one transfer from a proxy checkpoint; return (and, with `out`, save) the result record.

    `before` holds already-measured scores of the unchanged proxy on the same test sets, by language
    (a previous record's "before"); languages it lacks are evaluated. A sweep passes them so the
    proxy is not re-scored on every run.

    An existing `out` is replaced as a whole (atomically: no file of an earlier run survives beside
    the new ones) when it holds nothing but a run's files; a folder holding anything else is refused
    before any compute."""
    started = time.time()
    if out is not None and Path(out).exists() and not is_run_dir(out):
        raise FileExistsError(
            f"{out} exists and is not a transfer run folder (it holds files other than "
            f"{', '.join(RUN_FILES)}); it is never replaced: choose another output folder."
        )
    task = task or task_of_checkpoint(proxy_dir)
    model = load_model(str(proxy_dir))
    proxy_lang = _proxy_lang(proxy_dir)
    heads = heads_for(spec.method, circuit, model, spec.seed)

    train_pool, valid = load_train_valid(task.name, spec.target, data_dir)
    if spec.n_train > len(train_pool):
        raise ValueError(
            f"{task.name}/{spec.target} has {len(train_pool)} training examples; cannot take n_train={spec.n_train}."
        )
    train = stratified_subset(train_pool, spec.n_train, spec.seed, task.n_labels) if spec.n_train > 0 else []
    valid = stratified_cap(valid, spec.n_valid, task.n_labels)
    test_split = train_eval_splits(task.name)[2]
    eval_langs = dict.fromkeys([spec.target, proxy_lang, *spec.retention_langs])
    tests = {
        lang: stratified_cap(load_split(task.name, lang, test_split, data_dir), spec.n_test, task.n_labels)
        for lang in eval_langs
    }

    known = {lang: dict(before[lang]) for lang in tests if before is not None and lang in before}
    for lang, scores in known.items():
        if scores.get("n") != len(tests[lang]):
            raise ValueError(
                f"The given 'before' scores for {lang} cover {scores.get('n')} test examples but this run "
                f"tests {len(tests[lang])}: pass scores measured with the same n_test."
            )
    missing = {lang: rows for lang, rows in tests.items() if lang not in known}
    before = {**known, **_scores(model, task, missing, spec.config, "before" if progress else False)}
    before = {lang: before[lang] for lang in tests}
    base_state = {name: p.detach().clone() for name, p in model.named_parameters()}
    record: dict = {
        "method": spec.method,
        "task": task.name,
        "proxy": str(proxy_dir),
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
    if spec.method == "zero-shot":
        after, curve, best_epoch, n_trainable, n_total = before, [], 0, 0, _n_params(model)
        masks = None
    else:
        with masked_training(model, heads, spec.policy) as trainable:
            result = train_classifier(
                model, task, train, valid, spec.config, masks=trainable.masks, progress=progress
            )
        masks = trainable.masks
        after = _scores(model, task, tests, spec.config, "after" if progress else False)
        curve, best_epoch = result.curve, result.best_epoch
        n_trainable, n_total = trainable.n_trainable, trainable.n_total
    n_changed = sum(int((p.detach() != base_state[n]).sum()) for n, p in model.named_parameters())
    record.update(
        before=before,
        after=after,
        **outcome(before, after, spec.target, proxy_lang),
        params_trainable=n_trainable,
        params_total=n_total,
        params_trainable_fraction=n_trainable / n_total,
        params_changed=n_changed,
        best_epoch=best_epoch,
        curve=curve,
        wall_time_s=time.time() - started,
    )
    if out is not None:
        delta = None if masks is None else extract_delta(model, base_state, masks)

        def write(folder: Path) -> None:
            if delta is not None:
                save_delta(
                    folder / "delta.safetensors",
                    delta,
                    metadata={"method": spec.method, "proxy": str(proxy_dir)},
                )
            atomic_write_json(folder / "result.json", record)

        atomic_write_dir(out, write)
    return record


def outcome(before: Mapping[str, dict], after: Mapping[str, dict], target: str, proxy_lang: str) -> dict:
    """A run's headline numbers from its test scores by language, before and after training.

    forgetting = proxy accuracy before - proxy accuracy after (positive: the proxy language got
    worse; method.md §7 explains why it is confounded on parallel data).
    """
    return {
        "target_accuracy": after[target]["accuracy"],
        "target_macro_f1": after[target]["macro_f1"],
        "proxy_accuracy_before": before[proxy_lang]["accuracy"],
        "proxy_accuracy_after": after[proxy_lang]["accuracy"],
        "forgetting": before[proxy_lang]["accuracy"] - after[proxy_lang]["accuracy"],
    }


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _proxy_lang(proxy_dir) -> str:
    from circuit_transfer.models import read_checkpoint_metadata

    lang = read_checkpoint_metadata(proxy_dir).get("lang")
    if not lang:
        raise ValueError(
            f"{proxy_dir} records no proxy language: create it with `circuit-transfer prepare-proxy`."
        )
    return lang
