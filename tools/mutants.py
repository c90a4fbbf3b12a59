"""Mutation testing with explicit, plausible bugs: each one planted alone, the matching fast tests run.

Usage (single-threaded, CPU-heavy: `make mutants` runs it under `nice`):

    python tools/mutants.py                 # every mutant; writes analyses/results/mutants/
    python tools/mutants.py --only near-zero-is-circuit,forgetting-sign
    python tools/mutants.py --list

Each mutant names a file, a short snippet of the original source, its replacement and the tests
that should fail. The source tree (`circuit_transfer/`, `tests/`, `pyproject.toml`) is copied to
a temporary folder once; each mutant is applied there, its tests run with `pytest -x`, and the file
is restored. Outcomes: `killed` (a test failed or errored), `timeout` (counted as killed),
`survived`, `equivalent` (survived, and the mutant lists why no test can tell it apart), and
`stale` (the snippet is no longer in the file, or is there more than once: the code moved on and
the mutant needs updating). Score = killed / (killed + survived), equivalents and stale ones left
out.

Not run in CI: about 20-40 minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "analyses" / "results" / "mutants"

CDT = "tests/cdt/test_cdt_engine_vs_reference.py tests/cdt/test_cdt_padding.py tests/cdt/test_cdt_known_answers.py"
CDT_ALL = CDT + " tests/cdt/test_cdt_completeness.py tests/cdt/test_cdt_rules.py"
DISC = "tests/discovery --ignore=tests/discovery/test_real_data.py"
MASK = "tests/masking"
OPTIM = "tests/masking/test_mask_optim.py tests/masking/test_mask_bit_identical.py tests/discovery/test_defaults.py"
TRANSFER = "tests/test_transfer_controls.py tests/test_transfer.py"
AB = "circuit_transfer/models/access_bridge.py"
BRIDGE_CDT = "tests/bridge/test_bridge_cdt.py"


@dataclass(frozen=True)
class Mutant:
    """One planted bug: `original` (exactly once in `file`) becomes `mutated`."""

    id: str
    file: str
    original: str
    mutated: str
    tests: str
    equivalent: str = ""  # why no test can tell it apart (set only after it survived and was analysed)


M = Mutant
MUTANTS: list[Mutant] = [
    # ---- transfer.py: the bugs the issue lists, then others
    M(
        "near-zero-is-circuit",
        "circuit_transfer/transfer.py",
        "list(select_near_zero(circuit.scores, k, avoid=circuit.heads).heads)",
        "list(circuit.heads)",
        TRANSFER,
    ),
    M(
        "near-zero-overlaps-circuit",
        "circuit_transfer/transfer.py",
        "select_near_zero(circuit.scores, k, avoid=circuit.heads)",
        "select_near_zero(circuit.scores, k)",
        TRANSFER,
    ),
    M(
        "random-ignores-seed",
        "circuit_transfer/transfer.py",
        "select_random(model.cfg.n_layers, model.cfg.n_heads, k, seed)",
        "select_random(model.cfg.n_layers, model.cfg.n_heads, k, 0)",
        TRANSFER,
    ),
    M(
        "random-run-seed-dropped",
        "circuit_transfer/transfer.py",
        "heads_for(spec.method, circuit, model, spec.seed)",
        "heads_for(spec.method, circuit, model, 0)",
        TRANSFER,
    ),
    M(
        "forgetting-sign",
        "circuit_transfer/transfer.py",
        '"forgetting": before[proxy_lang]["accuracy"] - after[proxy_lang]["accuracy"]',
        '"forgetting": after[proxy_lang]["accuracy"] - before[proxy_lang]["accuracy"]',
        TRANSFER,
    ),
    M(
        "params-changed-is-trainable",
        "circuit_transfer/transfer.py",
        "params_changed=n_changed",
        "params_changed=n_trainable",
        TRANSFER,
    ),
    M(
        "target-accuracy-before",
        "circuit_transfer/transfer.py",
        '"target_accuracy": after[target]["accuracy"]',
        '"target_accuracy": before[target]["accuracy"]',
        TRANSFER,
    ),
    M(
        "proxy-after-reads-before",
        "circuit_transfer/transfer.py",
        '"proxy_accuracy_after": after[proxy_lang]["accuracy"]',
        '"proxy_accuracy_after": before[proxy_lang]["accuracy"]',
        TRANSFER,
    ),
    M(
        "k-off-by-one",
        "circuit_transfer/transfer.py",
        "k = len(circuit.heads)\n",
        "k = max(1, len(circuit.heads) - 1)\n",
        TRANSFER,
    ),
    M(
        "known-before-size-check-inverted",
        "circuit_transfer/transfer.py",
        'if given.get("n") != len(rows):',
        'if given.get("n") == -1:',
        TRANSFER,
    ),
    M(
        "ct-sft-trains-nothing",
        "circuit_transfer/transfer.py",
        'if method in ("ln-only", "zero-shot"):',
        'if method in ("ln-only", "zero-shot", "ct-sft"):',
        TRANSFER,
    ),
    M(
        "train-subset-seed-ignored",
        "circuit_transfer/transfer.py",
        "stratified_subset(train, spec.n_train, spec.seed, task.n_labels)",
        "stratified_subset(train, spec.n_train, 0, task.n_labels)",
        TRANSFER,
    ),
    M(
        "best-epoch-weights-kept-from-the-first-best",
        "circuit_transfer/train.py",
        "                    best_state[n].copy_(p.detach())",
        "                    pass",
        "tests/test_train.py",
    ),
    M(
        "best-epoch-weights-not-restored",
        "circuit_transfer/train.py",
        "            named[name].copy_(value)",
        "            pass",
        "tests/test_train.py",
    ),
    # ---- optim.py
    M(
        "decay-without-grad",
        "circuit_transfer/optim.py",
        "for param, keep in with_grad:",
        "for param, keep in zip(self.params, self._keep):",
        OPTIM,
    ),
    M(
        "decay-frozen-entries",
        "circuit_transfer/optim.py",
        "torch.where(keep, one - decay, one)",
        "torch.where(keep, one - decay, one - decay)",
        OPTIM,
    ),
    M(
        "decay-ignores-lr",
        "circuit_transfer/optim.py",
        "decay = lr * self.config.weight_decay",
        "decay = self.config.weight_decay",
        OPTIM,
    ),
    M(
        "step-grad-mask-dropped",
        "circuit_transfer/optim.py",
        "param.grad.masked_fill_(~keep, 0.0)",
        "param.grad.mul_(1.0)",
        OPTIM,
    ),
    M(
        "loaded-moments-not-zeroed",
        "circuit_transfer/optim.py",
        "value.masked_fill_(~keep, 0.0)",
        "value.mul_(1.0)",
        OPTIM,
    ),
    M(
        "clipping-off",
        "circuit_transfer/optim.py",
        "self.config.max_grad_norm > 0 and with_grad",
        "self.config.max_grad_norm < 0 and with_grad",
        OPTIM,
    ),
    M(
        "warmup-off-by-one",
        "circuit_transfer/optim.py",
        "return (step + 1) / (warmup + 1)",
        "return step / (warmup + 1)",
        OPTIM,
    ),
    M(
        "cosine-sign",
        "circuit_transfer/optim.py",
        "0.5 * (1.0 + math.cos(math.pi * progress))",
        "0.5 * (1.0 - math.cos(math.pi * progress))",
        OPTIM,
    ),
    M("schedule-frozen", "circuit_transfer/optim.py", "self.step_count += 1", "self.step_count += 0", OPTIM),
    M(
        "default-weight-decay-0",
        "circuit_transfer/optim.py",
        "weight_decay: float = 0.1",
        "weight_decay: float = 0.0",
        OPTIM,
    ),
    # ---- masking.py
    M(
        "head-slice-off-by-one",
        "circuit_transfer/masking.py",
        "mask[layer_heads] = 1",
        "mask[[(h + 1) % n_heads for h in layer_heads]] = 1",
        MASK,
    ),
    M(
        "gqa-group-wrong-axis",
        "circuit_transfer/masking.py",
        "mask[sorted({h // repeats for h in layer_heads})] = 1",
        "mask[sorted({h % n_kv for h in layer_heads})] = 1",
        MASK,
    ),
    M(
        "b_O-any-layer",
        "circuit_transfer/masking.py",
        'if policy.b_O == "any-head" and layer_heads:',
        'if policy.b_O == "any-head":',
        MASK,
    ),
    M(
        "norms-frozen-ignored",
        "circuit_transfer/masking.py",
        'if policy.norms == "trainable" and not (is_qk_norm',
        "if not (is_qk_norm",
        MASK,
    ),
    M(
        "grad-hook-dropped",
        "circuit_transfer/masking.py",
        "return torch.where(keep, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))",
        "return grad",
        MASK,
    ),
    M(
        "requires-grad-everywhere",
        "circuit_transfer/masking.py",
        "param.requires_grad_(n_on > 0)",
        "param.requires_grad_(True)",
        MASK,
    ),
    M(
        "requires-grad-not-restored",
        "circuit_transfer/masking.py",
        "params[name].requires_grad_(flag)",
        "params[name].requires_grad_(True)",
        MASK,
    ),
    M(
        "heads-of-earlier-layers",
        "circuit_transfer/masking.py",
        "for (at, head) in selected if at == layer]",
        "for (at, head) in selected if at <= layer]",
        MASK,
    ),
    M(
        "default-gqa-never",
        "circuit_transfer/masking.py",
        'gqa_kv: Literal["any-query-head", "never"] = "any-query-head"',
        'gqa_kv: Literal["any-query-head", "never"] = "never"',
        MASK + " tests/discovery/test_defaults.py",
    ),
    M(
        "hook-on-full-tensors-too",
        "circuit_transfer/masking.py",
        "if 0 < n_on < n:",
        "if 0 < n_on <= n:",
        MASK,
        equivalent="a hook whose keep mask is all True returns the gradient unchanged",
    ),
    # ---- delta.py
    M(
        "runs-length-off-by-one",
        "circuit_transfer/delta.py",
        "torch.stack([starts, ends - starts], dim=1)",
        "torch.stack([starts, ends - starts + 1], dim=1)",
        "tests/masking/test_mask_delta.py",
    ),
    M(
        "runs-offsets",
        "circuit_transfer/delta.py",
        "offsets = torch.cumsum(lengths, 0) - lengths",
        "offsets = torch.cumsum(lengths, 0) - lengths[0]",
        "tests/masking/test_mask_delta.py",
    ),
    M(
        "frozen-check-off",
        "circuit_transfer/delta.py",
        "if not torch.equal(frozen_now, frozen_base):",
        "if False:",
        "tests/masking/test_mask_delta.py",
    ),
    M(
        "delta-stores-base-values",
        "circuit_transfer/delta.py",
        "param.detach().reshape(-1)[index].cpu()",
        "base.to(param.device).reshape(-1)[index].cpu()",
        "tests/masking/test_mask_delta.py",
    ),
    M(
        "apply-fit-check-off",
        "circuit_transfer/delta.py",
        "if len(index) != values.numel() or (len(index) and int(index.max()) >= param.numel()):",
        "if len(index) != values.numel():",
        "tests/masking/test_mask_delta.py",
    ),
    # ---- cdt/rules.py
    M(
        "padding-mask-dropped",
        "circuit_transfer/cdt/rules.py",
        'return allowed & einops.rearrange(attention_mask.bool(), "batch key -> batch 1 key")',
        "return allowed.expand(attention_mask.shape[0], -1, -1)",
        CDT,
    ),
    M(
        "bias-share-inverted",
        "circuit_transfer/cdt/rules.py",
        "return torch.where(total > 0, rel / total, 0.5)",
        "return torch.where(total > 0, 1 - rel / total, 0.5)",
        CDT,
    ),
    M(
        "bias-even-split-to-gamma",
        "circuit_transfer/cdt/rules.py",
        "return torch.where(total > 0, rel / total, 0.5)",
        "return torch.where(total > 0, rel / total, 0.0)",
        CDT_ALL,
    ),
    M(
        "stabilize-smaller-wins",
        "circuit_transfer/cdt/rules.py",
        "torch.clamp(full, min=beta.clamp(max=0), max=beta.clamp(min=0))",
        "torch.clamp(full, min=beta.clamp(max=0), max=full.clamp(min=0))",
        CDT,
    ),
    M(
        "layernorm-not-centred",
        "circuit_transfer/cdt/rules.py",
        "beta = beta - beta.mean(-1, keepdim=True)",
        "beta = beta",
        CDT,
    ),
    M(
        "linearize-on-beta",
        "circuit_transfer/cdt/rules.py",
        "return full_post - act_fn(full_pre - beta_pre)",
        "return act_fn(beta_pre)",
        CDT,
    ),
    M(
        "gated-up-not-split",
        "circuit_transfer/cdt/rules.py",
        "gamma_up = full_up - beta_up",
        "gamma_up = full_up",
        CDT,
    ),
    M(
        "masked-softmax-nan",
        "circuit_transfer/cdt/rules.py",
        "return torch.nan_to_num(pattern, nan=0.0)",
        "return pattern",
        CDT,
    ),
    M(
        "bidirectional-swapped",
        "circuit_transfer/cdt/rules.py",
        'if attention_dir == "bidirectional":',
        'if attention_dir == "causal":',
        CDT,
    ),
    M(
        "norm-bias-dropped",
        "circuit_transfer/cdt/rules.py",
        'return linear(beta_hat * n.weight, normalized * n.weight, n.bias, rules, "norm")',
        'return linear(beta_hat * n.weight, normalized * n.weight, None, rules, "norm")',
        CDT,
    ),
    # ---- cdt/engine.py
    M(
        "source-beta-sign",
        "circuit_transfer/cdt/engine.py",
        "return (z_src - mu) *",
        "return (mu - z_src) *",
        CDT,
    ),
    M(
        "source-positions-ignored",
        "circuit_transfer/cdt/engine.py",
        '(z_src - mu) * einops.rearrange(source_mask, "batch pos -> 1 batch pos 1")',
        "(z_src - mu)",
        CDT,
    ),
    M(
        "gqa-repeat-order",
        "circuit_transfer/cdt/engine.py",
        'k, "src batch pos kv d_head -> src batch pos (kv group) d_head", group=attn.repeat',
        'k, "src batch pos kv d_head -> src batch pos (group kv) d_head", group=attn.repeat',
        CDT,
    ),
    M(
        "attn-scale-multiplied",
        "circuit_transfer/cdt/engine.py",
        "R.soft_cap(scores / attn.scale, attn.soft_cap)",
        "R.soft_cap(scores * attn.scale, attn.soft_cap)",
        CDT,
    ),
    M(
        "b_O-share-on-full",
        "circuit_transfer/cdt/engine.py",
        'w_full = _minus(cast(Tensor, self._c(f"blocks.{layer}.hook_attn_out")), b_O)',
        'w_full = cast(Tensor, self._c(f"blocks.{layer}.hook_attn_out"))',
        CDT,
    ),
    M(
        "b_out-share-on-full",
        "circuit_transfer/cdt/engine.py",
        '_minus(cast(Tensor, c(p + "hook_mlp_out")), mlp.b_out)',
        'cast(Tensor, c(p + "hook_mlp_out"))',
        CDT,
    ),
    M(
        "parallel-mlp-reads-mid",
        "circuit_transfer/cdt/engine.py",
        'resid_pre + attn_out + self.mlp(layer, resid_pre, p + "hook_resid_pre")',
        'resid_pre + attn_out + self.mlp(layer, resid_pre + attn_out, p + "hook_resid_pre")',
        CDT,
    ),
    M(
        "source-layer-parallel-mlp",
        "circuit_transfer/cdt/engine.py",
        "if blk.mlp is None or blk.parallel else",
        "if blk.mlp is None else",
        CDT,
    ),
    M(
        "example-chunk-short",
        "circuit_transfer/cdt/engine.py",
        "ex = slice(ex0, ex0 + ex_step)",
        "ex = slice(ex0, ex0 + max(1, ex_step - 1))",
        CDT,
    ),
    M(
        "rotary-ignores-padding",
        "circuit_transfer/cdt/rules.py",
        "shifted = attention_mask.cumsum(dim=1) - 1",
        "shifted = torch.arange(n_pos, device=device).expand(batch, n_pos)",
        CDT,
    ),
    M(
        "rotary-sin-sign",
        "circuit_transfer/cdt/rules.py",
        "_rotate_every_two(x_rot, rotary.adjacent_pairs) * sin",
        "_rotate_every_two(x_rot, rotary.adjacent_pairs) * -sin",
        CDT,
    ),
    M(
        "chunk-positions-unsliced",
        "circuit_transfer/cdt/engine.py",
        "                    position_ids[ex],\n",
        "                    position_ids,\n",
        CDT,
    ),
    M(
        "chunk-score-mask-unsliced",
        "circuit_transfer/cdt/engine.py",
        "[m[ex] if m.shape[0] == batch else m for m in score_masks]",
        "score_masks",
        CDT,
    ),
    M(
        "chunk-size-plus-one",
        "circuit_transfer/cdt/engine.py",
        "src_step = max(1, rows // ex_step)",
        "src_step = max(1, rows // ex_step) + 1",
        CDT,
        equivalent="chunking only bounds memory: every source is still propagated once, in any grouping",
    ),
    # ---- discovery/relevance.py
    M(
        "default-margin-max",
        "circuit_transfer/discovery/relevance.py",
        'score: Score = "directional",\n    margin: Margin = "mean",',
        'score: Score = "directional",\n    margin: Margin = "max",',
        DISC,
    ),
    M(
        "cdt-ratio-over-full",
        "circuit_transfer/discovery/relevance.py",
        "/ gamma.abs().sum(-1).clamp(min=1e-12)",
        "/ (gamma + beta).abs().sum(-1).clamp(min=1e-12)",
        DISC,
    ),
    M(
        "mean-weights-over-n",
        "circuit_transfer/discovery/relevance.py",
        "return gold - (1 - gold) / (n - 1)",
        "return gold - (1 - gold) / n",
        DISC,
    ),
    M(
        "runner-up-argmin",
        "circuit_transfer/discovery/relevance.py",
        'masked_fill(gold.bool(), float("-inf")).argmax(-1)',
        'masked_fill(gold.bool(), float("inf")).argmin(-1)',
        DISC,
    ),
    M(
        "per-layer-norm-axis",
        "circuit_transfer/discovery/relevance.py",
        "scale = mean.abs().mean(-1, keepdim=True)",
        "scale = mean.abs().mean(0, keepdim=True)",
        DISC,
    ),
    M("stderr-no-bessel", "circuit_transfer/discovery/relevance.py", "* n / max(n - 1, 1)", "* 1.0", DISC),
    M(
        "attribution-delta-sign",
        "circuit_transfer/discovery/relevance.py",
        "delta = z.detach() - mu[:, ly].permute(0, 2, 1, 3)",
        "delta = mu[:, ly].permute(0, 2, 1, 3) - z.detach()",
        DISC,
    ),
    M(
        "attribution-padding-unmasked",
        "circuit_transfer/discovery/relevance.py",
        'torch.einsum("bphd,bphd,bp->hb", g, delta, mask)',
        'torch.einsum("bphd,bphd->hb", g, delta)',
        DISC,
        equivalent="the readout is at the last real token, so d readout / d z is exactly 0 at (right) padding",
    ),
    # ---- discovery/selection.py
    M(
        "tie-break-reversed",
        "circuit_transfer/discovery/selection.py",
        "key=lambda i: ((-flat[i] if descending else flat[i]), i))",
        "key=lambda i: ((-flat[i] if descending else flat[i]), -i))",
        DISC,
    ),
    M(
        "near-zero-signed",
        "circuit_transfer/discovery/selection.py",
        "_ranked(scores.scores.abs(), descending=False)",
        "_ranked(scores.scores, descending=False)",
        DISC,
    ),
    M(
        "select-random-seed-ignored",
        "circuit_transfer/discovery/selection.py",
        "random.Random(seed).sample(all_heads, n)",
        "random.Random(0).sample(all_heads, n)",
        DISC,
    ),
    M(
        "fraction-truncated",
        "circuit_transfer/discovery/selection.py",
        "return max(1, round(k * n_total))",
        "return max(1, int(k * n_total))",
        DISC,
    ),
    M(
        "threshold-strict",
        "circuit_transfer/discovery/selection.py",
        "if scores[h] >= t]",
        "if scores[h] > t]",
        DISC,
    ),
    M(
        "iterative-same-layer-targets",
        "circuit_transfer/discovery/selection.py",
        "if lt <= ls:\n                    continue",
        "if lt < ls:\n                    continue",
        DISC,
        equivalent="a candidate's recorded beta at another head of its own layer is exactly 0",
    ),
    M(
        "iterative-rounds-off-by-one",
        "circuit_transfer/discovery/selection.py",
        "for r in range(2, rounds + 1):",
        "for r in range(2, rounds):",
        DISC,
    ),
    # ---- discovery/faithfulness.py
    M(
        "ablate-with-zero",
        "circuit_transfer/discovery/faithfulness.py",
        "ref = mu[:, layer].permute(0, 2, 1, 3).to(z.dtype)",
        "ref = torch.zeros_like(z)",
        DISC,
    ),
    M(
        "random-circuits-same-seed",
        "circuit_transfer/discovery/faithfulness.py",
        "circuit = select_random(n_layers, n_heads, k, s)",
        "circuit = select_random(n_layers, n_heads, k, seed)",
        DISC,
    ),
    M(
        "random-circuits-repeat",
        "circuit_transfer/discovery/faithfulness.py",
        "if circuit.heads in seen and len(seen) < n_possible:",
        "if False:",
        DISC,
    ),
    M(
        "keep-inverted",
        "circuit_transfer/discovery/faithfulness.py",
        "torch.where(keep[layer][None, None, :, None], z, ref)",
        "torch.where(keep[layer][None, None, :, None], ref, z)",
        DISC,
    ),
    M(
        "normalise-by-full",
        "circuit_transfer/discovery/faithfulness.py",
        "return (m_c - m_empty) / gap",
        "return (m_c - m_empty) / m_full",
        DISC,
    ),
    M(
        "faithfulness-margin-ignored",
        "circuit_transfer/discovery/faithfulness.py",
        "task_margin(scores, labels, margin)",
        "task_margin(scores, labels)",
        DISC,
    ),
    # ---- discovery/baseline.py
    M(
        "baseline-not-label-balanced",
        "circuit_transfer/discovery/baseline.py",
        "pooled = (pooled_sum / pooled_n[:, None, None, None]).mean(0)",
        "pooled = pooled_sum.sum(0) / pooled_n.sum()",
        DISC,
    ),
    M(
        "baseline-counts-padding",
        "circuit_transfer/discovery/baseline.py",
        "per_pos = z * mask[:, :, None, None, None]",
        "per_pos = z",
        DISC,
    ),
    M(
        "from-end-not-flipped",
        "circuit_transfer/discovery/baseline.py",
        "rows = z[b, :n].flip(0)",
        "rows = z[b, :n]",
        DISC,
    ),
    M(
        "lay-out-row-sign",
        "circuit_transfer/discovery/baseline.py",
        "row = final_pos[:, None] - pos[None, :]",
        "row = pos[None, :] - final_pos[:, None]",
        DISC,
    ),
    M(
        "from-end-fallback-any",
        "circuit_transfer/discovery/baseline.py",
        "complete = (end_n > 0).all(0)",
        "complete = (end_n > 0).any(0)",
        DISC,
    ),
    M(
        "missing-label-accepted",
        "circuit_transfer/discovery/baseline.py",
        "if counts[label] == 0:",
        "if False:",
        DISC,
    ),
    # ---- discovery/compare.py, circuit.py, pipeline.py
    M(
        "jaccard-over-a",
        "circuit_transfer/discovery/compare.py",
        "len(set_a & set_b) / len(union)",
        "len(set_a & set_b) / len(set_a)",
        DISC,
    ),
    M(
        "spearman-not-centred",
        "circuit_transfer/discovery/compare.py",
        "ra, rb = ra - ra.mean(), rb - rb.mean()",
        "ra, rb = ra, rb",
        DISC,
    ),
    M(
        "rank-ties-first",
        "circuit_transfer/discovery/compare.py",
        "ranks[order[i : j + 1]] = (i + j) / 2 + 1",
        "ranks[order[i : j + 1]] = i + 1",
        DISC,
    ),
    M(
        "circuit-shape-unchecked",
        "circuit_transfer/discovery/circuit.py",
        "if (cfg.n_layers, cfg.n_heads) != (self.n_layers, self.n_heads):",
        "if False:",
        DISC,
    ),
    M(
        "circuit-mask-shifted",
        "circuit_transfer/discovery/circuit.py",
        "out[ly, h] = True",
        "out[ly, (h + 1) % self.n_heads] = True",
        DISC,
    ),
    M(
        "discover-near-zero-is-top-k",
        "circuit_transfer/discovery/pipeline.py",
        "return select_near_zero(scores, k)",
        "return select_top_k(scores, k)",
        DISC,
    ),
    M(
        "discover-random-seed-ignored",
        "circuit_transfer/discovery/pipeline.py",
        "        k,\n        seed,\n",
        "        k,\n        0,\n",
        DISC,
    ),
    # ---- models/access_bridge.py: CD-T's model access on the TransformerBridge
    M(
        "bridge-gemma-norm-no-offset",
        AB,
        'Norm("RMS", 1 + module.weight',
        'Norm("RMS", module.weight',
        BRIDGE_CDT,
    ),
    M(
        "bridge-rotary-adjacent-pairs",
        AB,
        "Rotary(tables[1].shape[-1], False, *tables)",
        "Rotary(tables[1].shape[-1], True, *tables)",
        BRIDGE_CDT,
    ),
    M(
        "bridge-rotary-sin-cos-swapped",
        AB,
        "return sin[0].to(dtype), cos[0].to(dtype)",
        "return cos[0].to(dtype), sin[0].to(dtype)",
        BRIDGE_CDT,
    ),
    M(
        "bridge-rotary-one-table",
        AB,
        "rotaries[layer_types[layer]]),",
        "rotaries[layer_types[0]]),",
        BRIDGE_CDT,
    ),
    M("bridge-window-ignored", AB, "window=_window(config, layer),", "window=None,", BRIDGE_CDT),
    M(
        "bridge-scale-sqrt-d-head",
        AB,
        "scale=1.0 if arch in UNSCALED else 1 / float(attn.scaling),",
        "scale=d_head**0.5,",
        BRIDGE_CDT,
    ),
    M(
        "bridge-olmo2-qk-norm-per-head",
        AB,
        "per_head=arch not in ALL_HEAD_QK_NORM",
        "per_head=True",
        BRIDGE_CDT,
    ),
    M(
        "bridge-attn-soft-cap-dropped",
        AB,
        "soft_cap=soft_cap if soft_cap else None,\n        sinks=None,",
        "soft_cap=None,\n        sinks=None,",
        BRIDGE_CDT,
    ),
    M(
        "bridge-logits-soft-cap-dropped",
        AB,
        "logits_soft_cap=soft_cap if soft_cap else None,",
        "logits_soft_cap=None,",
        BRIDGE_CDT,
    ),
    M(
        "bridge-head-views-interleaved",
        AB,
        "W = weight.view(n, d_head, -1).transpose(1, 2)",
        "W = weight.view(d_head, n, -1).permute(1, 2, 0)",
        BRIDGE_CDT,
    ),
    M(
        "bridge-layer-norm-bias-dropped",
        AB,
        'return Norm("LN", module.weight, _nonzero(module.bias),',
        'return Norm("LN", module.weight, None,',
        BRIDGE_CDT,
    ),
    M(
        "bridge-plain-mlp-act-fn-silu",
        AB,
        "act_fn=getattr(mlp, name_act),",
        "act_fn=torch.nn.functional.silu,",
        BRIDGE_CDT,
    ),
    M(
        "bridge-neox-parallel-dropped",
        AB,
        'parallel=bool(getattr(config, "use_parallel_residual", False)),',
        "parallel=False,",
        BRIDGE_CDT,
    ),
    M(
        "bridge-neox-qkv-as-row-blocks",
        AB,
        "W = fused.weight.view(n_heads, 3, d_head, -1).transpose(2, 3)",
        "W = fused.weight.view(3, n_heads, d_head, -1).transpose(0, 1).transpose(2, 3)",
        BRIDGE_CDT,
    ),
    M(
        "bridge-gpt-neo-local-window-ignored",
        AB,
        'return config.window_size if config.attention_layers[layer] == "local" else None',
        "return None",
        BRIDGE_CDT,
    ),
    M(
        "bridge-phi3-gate-up-swapped",
        AB,
        "gate, up_w = fused.weight.chunk(2)",
        "up_w, gate = fused.weight.chunk(2)",
        BRIDGE_CDT,
    ),
]


def _preload() -> None:
    """Import the heavy libraries once; each mutant's pytest runs in a fork that inherits them.

    `circuit_transfer` itself is never imported here, so every fork reads the mutated source.
    """
    import beartype  # noqa: F401
    import jaxtyping  # noqa: F401
    import pytest  # noqa: F401
    import torch  # noqa: F401
    import transformer_lens  # noqa: F401


def _run(cmd: str, cwd: Path, timeout: int) -> tuple[str, float, str]:
    """Run pytest on `cmd` (test paths and options) in a forked child; (status, seconds, first failure)."""
    started = time.time()
    log = cwd / "pytest.log"
    pid = os.fork()
    if pid == 0:  # child
        code = 3
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(cwd)
            sys.path.insert(0, str(cwd))
            os.environ["PYTHONPATH"] = str(cwd)
            import pytest

            code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *cmd.split()]))
        finally:
            os._exit(code)
    status = None
    while time.time() - started < timeout:
        done, rc = os.waitpid(pid, os.WNOHANG)
        if done:
            status = "survived" if os.waitstatus_to_exitcode(rc) == 0 else "killed"
            break
        time.sleep(0.2)
    if status is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return "timeout", time.time() - started, ""
    tail = log.read_text(errors="replace").strip().splitlines()
    first_fail = next(
        (line for line in tail if line.startswith(("FAILED", "ERROR"))), tail[-1] if tail else ""
    )
    return status, time.time() - started, first_fail


def _copy_tree(dest: Path) -> None:
    for name in ("circuit_transfer", "tests"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated mutant ids")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per mutant (default 600)")
    parser.add_argument(
        "--update", action="store_true", help="merge into the results already in --out (with --only)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip checking the unmutated tests pass")
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"results folder (default {OUT.relative_to(REPO)})"
    )
    args = parser.parse_args(argv)
    ids = [m.id for m in MUTANTS]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise SystemExit(f"duplicate mutant ids: {sorted(dupes)}")
    chosen = MUTANTS
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(ids))
        if unknown:
            raise SystemExit(f"unknown mutant ids: {unknown}; see --list")
        chosen = [m for m in MUTANTS if m.id in wanted]
    if args.list:
        for m in chosen:
            count = (REPO / m.file).read_text().count(m.original)
            print(f"{m.id:36s} {m.file:45s} {'ok' if count == 1 else f'STALE ({count} matches)'}")
        return 0
    os.environ.setdefault("CT_DATA_DIR", str((REPO / ".." / "shared" / "data").resolve()))
    # single-threaded, and no bytecode: a same-size mutant written within the same second as the
    # original would otherwise reuse its stale .pyc
    os.environ.update(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    sys.dont_write_bytecode = True
    _preload()
    results = []
    commit = _commit()
    with tempfile.TemporaryDirectory(prefix="ct-mutants-") as tmp:
        work = Path(tmp)
        _copy_tree(work)
        suites = sorted({m.tests for m in chosen})
        print(f"{len(chosen)} mutants; checking the {len(suites)} test sets pass unmutated ...", flush=True)
        for suite in [] if args.no_baseline else suites:
            status, secs, why = _run(suite, work, args.timeout)
            if status != "survived":
                raise SystemExit(f"the unmutated tests fail ({suite}): {why}; fix them before mutating")
            print(f"  ok in {secs:.0f}s: {suite}", flush=True)
        for m in chosen:
            path = work / m.file
            source = path.read_text()
            count = source.count(m.original)
            if count != 1:
                status, secs, why = "stale", 0.0, f"snippet found {count} times"
            else:
                path.write_text(source.replace(m.original, m.mutated))
                try:
                    status, secs, why = _run(m.tests, work, args.timeout)
                finally:
                    path.write_text(source)
                if status == "survived" and m.equivalent:
                    status = "equivalent"
            results.append(
                {**asdict(m), "status": status, "seconds": round(secs, 1), "detail": why, "commit": commit}
            )
            print(f"{status:10s} {secs:6.0f}s  {m.id}  {why}", flush=True)
    if args.update and (args.out / "results.json").exists():
        fresh = {r["id"]: r for r in results}
        old = {r["id"]: r for r in json.loads((args.out / "results.json").read_text())["mutants"]}
        merged = {**old, **fresh}
        results = [merged[i] for i in ids if i in merged]
    _write(results, args.out)
    return 0


def _commit() -> str:
    """HEAD of the repository, with "+changes" when the copied sources differ from it."""
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "circuit_transfer", "tests"], capture_output=True, text=True
    ).stdout.strip()
    return head[:10] + ("+changes" if dirty else "")


def _write(results: list[dict], out: Path) -> None:
    counts = {
        s: sum(r["status"] == s for r in results)
        for s in ("killed", "timeout", "survived", "equivalent", "stale")
    }
    killed = counts["killed"] + counts["timeout"]
    scored = killed + counts["survived"]
    score = killed / scored if scored else float("nan")
    out.mkdir(parents=True, exist_ok=True)
    commits = sorted({r.get("commit", "?") for r in results})
    summary = {
        "commits": commits,
        "score": score,
        "counts": counts,
        "n_mutants": len(results),
        "mutants": results,
    }
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    tmp.replace(out / "results.json")
    lines = [
        "# Mutation testing: what survives",
        "",
        f"Written by `make mutants` (`tools/mutants.py`) on commit {', '.join(commits)}. Score = killed / (killed + survived) = "
        f"{killed} / {scored} = **{score:.1%}** over {len(results)} mutants "
        f"({counts['equivalent']} equivalent, {counts['stale']} stale, {counts['timeout']} timeouts counted as killed).",
        "",
        "## Survivors (missing tests)",
        "",
    ]
    lines += [
        f"- `{r['id']}` ({r['file']}): `{r['original']!r}` -> `{r['mutated']!r}`"
        for r in results
        if r["status"] == "survived"
    ] or ["None."]
    lines += ["", "## Equivalent mutants (no test can tell them apart)", ""]
    lines += [
        f"- `{r['id']}` ({r['file']}): {r['equivalent']}" for r in results if r["status"] == "equivalent"
    ] or ["None."]
    lines += ["", "## Stale (snippet no longer in the file: update the mutant)", ""]
    lines += [f"- `{r['id']}` ({r['file']}): {r['detail']}" for r in results if r["status"] == "stale"] or [
        "None."
    ]
    lines += [
        "",
        "## Every mutant",
        "",
        "| mutant | file | status | seconds | first failure |",
        "|---|---|---|---:|---|",
    ]
    lines += [
        f"| {r['id']} | {r['file']} | {r['status']} | {r['seconds']} | {r['detail'].replace('|', '/')[:90]} |"
        for r in results
    ]
    tmp = out / "survivors.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out / "survivors.md")
    print(f"score {score:.1%} ({killed}/{scored}); wrote {out / 'survivors.md'} and results.json")


if __name__ == "__main__":
    raise SystemExit(main())
