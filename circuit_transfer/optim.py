"""AdamW under which masked parameter entries never move, bit for bit; schedule and resumable state.

Why plain `torch.optim.AdamW` is not enough even when every masked gradient is zero: its
*decoupled* weight decay multiplies the whole tensor by `1 - lr * weight_decay` regardless of the
gradient, so a head-masked `W_Q` would shrink in its frozen heads. `MaskedAdamW` therefore runs
torch's AdamW with `weight_decay=0` and applies the decay itself, through the mask (a frozen entry
is multiplied by exactly 1.0, which is the identity in IEEE arithmetic). The Adam update of an
entry is `-lr * m / (sqrt(v) + eps)`; it is exactly zero, so the entry stays bit-identical, as
long as its gradient and its moments m, v are zero. The optimizer enforces both:

- gradients are masked again in `step()` before clipping (the hooks of
  `masking.masked_training` already do it; this makes the optimizer correct on its own and
  keeps masked entries out of the global norm used for clipping);
- moments loaded from a checkpoint (`load_state_dict`) are zeroed at masked entries, so a state
  saved by an unmasked run cannot leak momentum into frozen heads.

Weight decay follows torch's AdamW, not "masked" semantics: in a step, a tensor whose gradient
is None (backward did not reach it) is neither decayed nor updated, and a tensor with a gradient
is decayed over every entry its mask allows, including entries whose gradient happens to be 0.
Why: with no mask, `MaskedAdamW` is then torch's AdamW bit for bit (tested, also on steps with
missing and all-zero gradients), so the methods compared in `transfer` differ only by their
masks; decaying only entries with a non-zero gradient would make the update depend on which
tokens a batch happens to hold, and decaying tensors without a gradient would shrink weights that
the data never touched.

Parameters with no trainable entry must have `requires_grad=False` (as `masked_training` sets
it): they are left out of the optimizer and hold no state. Partially trainable tensors (head-
masked W_Q, ...) hold full-size state; `optimizer_state_bytes()` reports the total.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from circuit_transfer.io import atomic_write
from circuit_transfer.masking import ParamMasks
from circuit_transfer.models.backend import Model


@dataclass(frozen=True)
class OptimConfig:
    """AdamW hyper-parameters, clipping and learning-rate schedule.

    Attributes:
        lr: peak learning rate.
        weight_decay: decoupled (AdamW) weight decay, applied only where the mask is 1.
        betas, eps: Adam's.
        max_grad_norm: clip the global gradient norm to this; None or <= 0: no clipping.
        schedule: decay after warm-up: "cosine" (to 0), "linear" (to 0) or "constant".
        warmup_fraction: fraction of total_steps with a linear warm-up from lr/(W+1) to lr.
        foreach, fused: passed to `torch.optim.AdamW` (None: torch's default).
    """

    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_fraction: float = 0.1
    foreach: bool | None = None
    fused: bool | None = None

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(
                f"OptimConfig.schedule must be cosine, linear or constant, got {self.schedule!r}"
            )
        if not 0.0 <= self.warmup_fraction <= 1.0:
            raise ValueError(f"OptimConfig.warmup_fraction must be in [0, 1], got {self.warmup_fraction}")
        if self.lr < 0 or self.weight_decay < 0:
            raise ValueError(
                f"OptimConfig: lr and weight_decay must be >= 0, got {self.lr}, {self.weight_decay}"
            )


def lr_multiplier(
    step: int, total_steps: int, schedule: Literal["cosine", "linear", "constant"], warmup_fraction: float
) -> float:
    """Multiplier of the peak learning rate at (0-based) optimizer step `step`.

    Warm-up: W = round(warmup_fraction * total_steps) steps at (step + 1) / (W + 1); then
    `schedule` over the remaining steps, evaluated at progress (step - W) / (total_steps - W), so
    the last step still has a non-zero rate. Steps past total_steps keep the final value's limit
    (0 for cosine and linear).
    """
    warmup = int(round(warmup_fraction * total_steps))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


class MaskedAdamW:
    """AdamW over a model's trainable parameters that leaves every masked entry bit-identical.

    One `step()` = mask gradients, clip by global norm, decoupled weight decay through the mask,
    Adam update (torch's AdamW with weight_decay=0), advance the schedule, `zero_grad(set_to_none=True)`.

    Args:
        model: the model; its parameters with `requires_grad=True` are optimised.
        config: hyper-parameters.
        total_steps: length of the schedule, in optimizer steps.
        masks: 0/1 masks by parameter name (`masking.head_grad_masks`); None: every entry of
            every `requires_grad` parameter is trainable. Parameters whose mask is all zero
            are left out even if they require grad.

    Raises:
        ValueError: a parameter has trainable entries but `requires_grad=False` (it would
            silently not train; use `masking.masked_training`), or a mask does not match.
    """

    def __init__(
        self,
        model: Model,
        config: OptimConfig = OptimConfig(),
        total_steps: int = 1,
        masks: ParamMasks | None = None,
    ):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.config = config
        self.total_steps = total_steps
        self.step_count = 0
        self.last_grad_norm: float | None = None
        self.names: list[str] = []
        self.params: list[torch.nn.Parameter] = []
        # Per optimised parameter: None (fully trainable) or a bool tensor (True = may change).
        self._keep: list[torch.Tensor | None] = []
        for name, param in model.named_parameters():
            mask = None if masks is None else masks.get(name)
            if masks is not None and mask is None:
                raise ValueError(f"no mask for parameter {name}")
            if mask is not None and mask.shape != param.shape:
                raise ValueError(
                    f"mask for {name} has shape {tuple(mask.shape)}, parameter {tuple(param.shape)}"
                )
            n_on = param.numel() if mask is None else int(mask.count_nonzero())
            if n_on == 0:
                continue
            if not param.requires_grad:
                if masks is None:
                    continue
                raise ValueError(
                    f"{name} has {n_on} trainable entries but requires_grad=False; "
                    "build the optimizer inside masking.masked_training(...)"
                )
            self.names.append(name)
            self.params.append(param)
            keep = None if mask is None or n_on == param.numel() else mask.to(device=param.device).bool()
            self._keep.append(keep)
        if not self.params:
            raise ValueError("nothing to optimise: no parameter has a trainable entry")
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=config.lr * lr_multiplier(0, total_steps, config.schedule, config.warmup_fraction),
            betas=config.betas,
            eps=config.eps,
            weight_decay=0.0,
            foreach=config.foreach,
            fused=config.fused,
        )

    @property
    def lr(self) -> float:
        """Learning rate the next `step()` will use."""
        cfg = self.config
        return cfg.lr * lr_multiplier(self.step_count, self.total_steps, cfg.schedule, cfg.warmup_fraction)

    @torch.no_grad()
    def step(self) -> None:
        """Mask grads, clip, decay through the mask, Adam update, advance schedule, zero grads."""
        lr = self.lr
        with_grad = []
        for param, keep in zip(self.params, self._keep):
            if param.grad is None:
                continue
            if keep is not None:
                param.grad.masked_fill_(~keep, 0.0)
            with_grad.append((param, keep))
        if self.config.max_grad_norm is not None and self.config.max_grad_norm > 0 and with_grad:
            norm = torch.nn.utils.clip_grad_norm_([p for p, _ in with_grad], self.config.max_grad_norm)
            self.last_grad_norm = float(norm)
        decay = lr * self.config.weight_decay
        if decay:
            # As torch's AdamW: decay only parameters that have a gradient, before the Adam update.
            for param, keep in with_grad:
                if keep is None:
                    param.mul_(1.0 - decay)
                else:
                    # Frozen entries are multiplied by exactly 1.0: the identity, bit for bit.
                    one = torch.ones((), dtype=param.dtype, device=param.device)
                    param.mul_(torch.where(keep, one - decay, one))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.step_count += 1
        self.zero_grad()

    def zero_grad(self) -> None:
        """Drop the gradients (set to None)."""
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        """Optimizer moments, step count (the schedule's position), and the names it optimises."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "step_count": self.step_count,
            "total_steps": self.total_steps,
            "param_names": list(self.names),
            "config": asdict(self.config),
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()`; moments at masked entries are zeroed.

        Raises:
            ValueError: the state was saved for a different set of parameters.
        """
        if list(state["param_names"]) != self.names:
            missing = sorted(set(state["param_names"]) ^ set(self.names))
            raise ValueError(f"optimizer state is for a different parameter set (differs in: {missing[:8]})")
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = int(state["step_count"])
        self.total_steps = int(state.get("total_steps", self.total_steps))
        for param, keep in zip(self.params, self._keep):
            if keep is None:
                continue
            for value in self.optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    value.masked_fill_(~keep, 0.0)

    def optimizer_state_bytes(self) -> int:
        """Total bytes of the optimizer's state tensors (Adam moments and step counters)."""
        total = 0
        for per_param in self.optimizer.state.values():
            for value in per_param.values():
                if isinstance(value, torch.Tensor):
                    total += value.numel() * value.element_size()
        return total

    def expected_state_bytes(self) -> int:
        """Bytes of the two Adam moments once every optimised parameter has state (before step 1)."""
        return sum(2 * p.numel() * p.element_size() for p in self.params)


def save_training_state(
    path: str | os.PathLike, model: Model, opt: MaskedAdamW, extra: dict[str, Any] | None = None
) -> Path:
    """Atomically save model weights, optimizer state and `extra` (plain data: numbers, strings, lists,
    dicts, tensors) so a run can resume mid-way."""
    payload = {"format": 1, "model": model.state_dict(), "optimizer": opt.state_dict(), "extra": extra or {}}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_training_state(path: str | os.PathLike, model: Model, opt: MaskedAdamW) -> dict[str, Any]:
    """Load what `save_training_state` wrote into `model` (in place) and `opt`; returns `extra`.

    Build `opt` the same way as the saved one (same masks, inside the same `masked_training`).
    """
    device = next(model.parameters()).device
    payload = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(payload["model"])
    opt.load_state_dict(payload["optimizer"])
    return payload["extra"]
