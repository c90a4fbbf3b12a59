"""One self-contained HTML report of a run directory: results, circuits, and circuits on text.

Reads the layout `make demo` writes:

    RUN_DIR/proxy/                          proxy checkpoint (`circuit-transfer prepare-proxy --out`)
    RUN_DIR/circuits/<lang>.json            circuits with scores (`circuit-transfer discover --out`)
    RUN_DIR/transfer/<method>/result.json   transfer runs (`circuit-transfer transfer --out`)
    RUN_DIR/evaluate.json                   optional: per-language scores of the proxy

The page inlines the circuitsvis bundle once (about 1.3 MB) and loads nothing from the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from circuit_transfer.data import Example, load_split
from circuit_transfer.discovery import Circuit
from circuit_transfer.io import atomic_write_text, read_json
from circuit_transfer.tasks import Task
from circuit_transfer.views.attention import circuit_attention
from circuit_transfer.views.contributions import contributions_view, label_text, token_contributions
from circuit_transfer.views.grid import circuit_diff_html, relevance_grid_html
from circuit_transfer.views.inputs import EmptyCircuitError
from circuit_transfer.views.page import component, esc, external_references, page
from circuit_transfer.views.results import load_results, results_html


class RunDirError(FileNotFoundError):
    """A run directory lacks what the report needs."""


@dataclass
class RunDir:
    """What a run directory holds (see the module docstring)."""

    path: Path
    proxy: Path
    proxy_lang: str
    task: Task
    circuits: dict[str, Circuit]
    results: list[dict]
    evaluation: dict | None

    @classmethod
    def read(cls, run_dir: str | Path) -> RunDir:
        """Read a run directory; one `RunDirError` names everything missing and how to make it."""
        from circuit_transfer.models import read_checkpoint_metadata
        from circuit_transfer.proxy import task_of_checkpoint

        path = Path(run_dir)
        if not path.is_dir():
            raise RunDirError(
                f"run directory {path} does not exist: create one with `make demo` (runs/demo)."
            )
        missing = []
        proxy = path / "proxy"
        if not proxy.is_dir():
            missing.append(f"{proxy}/ (the proxy checkpoint: `circuit-transfer prepare-proxy --out {proxy}`)")
        circuit_files = sorted((path / "circuits").glob("*.json"))
        if not circuit_files:
            missing.append(
                f"{path / 'circuits'}/<lang>.json (circuits: `circuit-transfer discover --model {proxy} "
                f"--lang <lang> --k <k> --out {path / 'circuits'}/<lang>.json`)"
            )
        results = load_results(path)
        if not results:
            missing.append(
                f"{path / 'transfer'}/<method>/result.json (transfer results: `circuit-transfer transfer "
                f"--proxy {proxy} --target <lang> --method ct-sft --circuit {path / 'circuits'}/<proxy lang>.json "
                f"--out {path / 'transfer'}/ct-sft`)"
            )
        if missing:
            raise RunDirError(
                f"{path} is not a complete run directory; missing:\n  - "
                + "\n  - ".join(missing)
                + "\nRun `make demo` to produce a complete one (runs/demo)."
            )
        meta = read_checkpoint_metadata(proxy)
        proxy_lang = meta.get("lang") or results[0].get("proxy_lang", "")
        circuits = {p.stem: Circuit.load(p) for p in circuit_files}
        evaluation = read_json(path / "evaluate.json") if (path / "evaluate.json").is_file() else None
        return cls(path, proxy, proxy_lang, task_of_checkpoint(proxy), circuits, results, evaluation)

    @property
    def proxy_circuit(self) -> Circuit:
        """The circuit used for transfer: the proxy language's (else the ct-sft result's)."""
        if self.proxy_lang in self.circuits:
            return self.circuits[self.proxy_lang]
        for r in self.results:
            if r.get("method") == "ct-sft" and r.get("circuit"):
                return Circuit.from_dict(r["circuit"])
        raise RunDirError(
            f"no circuit for the proxy language {self.proxy_lang!r}: expected "
            f"{self.path / 'circuits' / (self.proxy_lang + '.json')} (`circuit-transfer discover --out ...`)."
        )

    def targets(self) -> list[str]:
        return list(dict.fromkeys(str(r["target"]) for r in self.results if r.get("target")))


def _examples(run: RunDir, langs: list[str], index: int, data_dir) -> dict[str, Example]:
    """The same (parallel) test sentence in every language: by id, else by position."""
    from circuit_transfer.proxy import train_eval_splits

    split = train_eval_splits(run.task.name)[2]
    anchor_rows = load_split(run.task.name, run.proxy_lang, split, data_dir)
    if not 0 <= index < len(anchor_rows):
        raise ValueError(
            f"example index {index} is out of range: {run.task.name}/{run.proxy_lang} {split} has "
            f"{len(anchor_rows)} sentences; choose 0 <= --example < {len(anchor_rows)}."
        )
    anchor = anchor_rows[index]
    out = {}
    for lang in langs:
        rows = anchor_rows if lang == run.proxy_lang else load_split(run.task.name, lang, split, data_dir)
        match = next((r for r in rows if r.id == anchor.id), None)
        if match is None and index >= len(rows):
            raise ValueError(
                f"example {index} (id {anchor.id}) has no parallel sentence in {run.task.name}/{lang} {split}, "
                f"which has {len(rows)} sentences; choose --example < {len(rows)}."
            )
        out[lang] = match if match is not None else rows[index]
    return out


def _evaluation_table(evaluation: dict) -> str:
    rows = evaluation.get("results", [])
    body = "".join(
        f'<tr><td class="ct-text">{esc(r.get("lang", ""))}</td><td class="ct-text">{esc(r.get("role", ""))}</td>'
        f"<td>{100 * r['accuracy']:.1f}%</td><td>{100 * r.get('macro_f1', float('nan')):.1f}%</td>"
        f"<td>{esc(r.get('n', ''))}</td></tr>"
        for r in rows
    )
    return (
        f'<div class="ct-note">{esc(evaluation.get("task", ""))}, split {esc(evaluation.get("split", ""))}</div>'
        '<table class="ct-table"><tr><th>lang</th><th>role</th><th>accuracy</th><th>macro-F1</th><th>n</th></tr>'
        f"{body}</table>"
    )


def _text_views(
    model, run: RunDir, lang: str, circuit: Circuit, which: str, example: Example, max_len: int
) -> str:
    head = (
        f"<h3>{esc(lang)} sentence, {esc(which)} ({len(circuit.heads)} heads)</h3>"
        f'<div class="ct-note">id {esc(example.id)}: “{esc(example.text[:300])}”</div>'
    )
    try:
        heads = circuit_attention(model, circuit, example, run.task, max_len=max_len)
        contrib = token_contributions(model, circuit, example, run.task, max_len=max_len)
        tokens = contributions_view(model, circuit, example, run.task, max_len=max_len)
    except EmptyCircuitError as err:
        return f'{head}<div class="ct-note">{esc(err)}</div>'
    caption = (
        f'<div class="ct-note">Token contributions to the {esc(label_text(run.task, contrib))} margin through '
        "the circuit's heads (value-weighted attention at the readout position, direct path through the "
        f"unembedding). Sum over tokens {float(contrib.total.sum()):+.3g}.</div>"
    )
    return f"{head}{component(heads)}{caption}{component(tokens)}"


def build_report(run_dir: str | Path, data_dir=None, example_index: int = 0, max_len: int = 128) -> str:
    """The HTML report of a run directory (see the module docstring) as one self-contained page."""
    from circuit_transfer.models import load_model

    run = RunDir.read(run_dir)
    targets = run.targets()
    langs = list(dict.fromkeys([run.proxy_lang, *targets, *run.circuits]))
    examples = _examples(run, langs, example_index, data_dir)
    model = load_model(str(run.proxy))
    model.eval()
    proxy_circuit = run.proxy_circuit
    for circuit in run.circuits.values():
        circuit.validate(model)
    cfg = model.cfg

    parts = [
        f"<h1>CT-SFT report: {esc(run.path.name)}</h1>",
        f'<div class="ct-note">Run directory {esc(run.path)}; model {esc(cfg.model_name)} '
        f"({cfg.n_layers} layers x {cfg.n_heads} heads); task {esc(run.task.name)} with template "
        f"{esc(repr(run.task.template))} and label words {esc(', '.join(repr(w) for w in run.task.label_words))}; "
        f"proxy language {esc(run.proxy_lang)}; targets {esc(', '.join(targets))}. "
        "Self-contained: the circuitsvis bundle is inlined once; nothing is loaded from the network.</div>",
        "<h2>Transfer results</h2>",
        results_html(run.results),
    ]
    if run.evaluation:
        parts += ["<h2>Proxy checkpoint per language</h2>", _evaluation_table(run.evaluation)]
    others = [lang for lang in run.circuits if lang != run.proxy_lang]
    if others:  # each comparison shows both grids
        parts.append(
            f"<h2>Circuits: head relevance, compared with the proxy language ({esc(run.proxy_lang)})</h2>"
        )
        parts += [circuit_diff_html(proxy_circuit, run.circuits[lang]) for lang in others]
    else:
        parts.append("<h2>Circuit: head relevance</h2>")
        parts.append(
            relevance_grid_html(proxy_circuit, title=f"{run.proxy_lang}: {len(proxy_circuit.heads)} heads")
        )
    parts.append("<h2>Circuit heads on text</h2>")
    parts.append(
        '<div class="ct-note">Attention patterns of the circuit heads (names carry relevance) and each '
        "token's contribution through them; target languages show the proxy circuit, the heads CT-SFT "
        "trains. One colour convention throughout the report: red pushes toward the correct label, blue "
        "away from it; attention weights are grey.</div>"
    )
    for lang in langs:
        if lang in targets or lang not in run.circuits:
            circuit, which = proxy_circuit, f"proxy ({run.proxy_lang}) circuit"
        else:
            circuit, which = run.circuits[lang], f"{lang} circuit"
        parts.append(_text_views(model, run, lang, circuit, which, examples[lang], max_len))
    return page(f"CT-SFT report: {run.path.name}", "\n".join(parts), bundle=True)


def write_report(
    run_dir: str | Path,
    out: str | Path,
    screenshot_path: str | Path | None = None,
    **kwargs,
) -> Path:
    """Build the report, write it atomically to `out`, and optionally save a Chromium screenshot."""
    text = build_report(run_dir, **kwargs)
    problems = external_references(text)
    if problems:
        raise ValueError(f"the report references the network, refusing to write it: {problems[:3]}")
    path = atomic_write_text(out, text)
    if screenshot_path is not None:
        from circuit_transfer.views.browser import screenshot

        screenshot(path, screenshot_path)
    return path
