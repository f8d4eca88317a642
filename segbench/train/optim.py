"""The optimiser (SGD or AdamW; parameter groups for a pretrained encoder) and the per-step learning-rate schedule
of the training loop."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import SegbenchError


def make_optimizer(model: nn.Module, name: str, *, lr: float, momentum: float, weight_decay: float,
                   encoder_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """SGD (the papers' choice) or AdamW; no weight decay on norms and biases.

    ``encoder_lr_mult`` != 1 needs a model with ``param_groups()`` (``{"encoder": [...], "decoder": [...]}``): the
    encoder then trains at ``lr * encoder_lr_mult`` (a pretrained encoder: e.g. 0.1), the rest at ``lr``, each part
    split again into decayed weights and undecayed norms/biases. Groups are named ("encoder/decay", ...); the
    schedule scales every group's LR by the same factor. At 1 the two groups are the whole model's.
    """
    if encoder_lr_mult == 1.0:
        parts = {"all": [p for p in model.parameters() if p.requires_grad]}
    elif callable(getattr(model, "param_groups", None)):
        parts = model.param_groups()
    else:
        raise SegbenchError(f"encoder_lr_mult={encoder_lr_mult}: model {type(model).__name__} has no encoder/decoder "
                            "split (param_groups); use encoder_lr_mult=1 or a model with a backbone (e.g. *_lite0)")
    groups = []
    for part, params in parts.items():
        part_lr = lr * encoder_lr_mult if part == "encoder" else lr
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups += [{"params": decay, "weight_decay": weight_decay, "lr": part_lr, "name": f"{part}/decay"},
                   {"params": no_decay, "weight_decay": 0.0, "lr": part_lr, "name": f"{part}/no_decay"}]
    if encoder_lr_mult != 1.0:
        groups = [g for g in groups if g["params"]]  # a part without biases (say) gives no empty group
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=False)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise SegbenchError(f"unknown optimizer '{name}'; use sgd or adamw")


class Schedule(torch.optim.lr_scheduler.LRScheduler):
    """Per-step learning-rate multiplier: linear warm-up, then poly (1 - t)^0.9 (DeepLab v2, Sec. 4.1), cosine
    or constant, where t is the training progress in [0, 1].

    Progress is steps / total_steps, or, under a wall-time budget, the larger of that and the fraction of the
    budget spent (``time_fraction``, set by the training loop), so a time-boxed run still decays to zero.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, name: str, *, total_steps: int, warmup_steps: int) -> None:
        self.name, self.total_steps, self.warmup_steps = name, max(total_steps, 1), warmup_steps
        self.time_fraction = 0.0
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        t = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        t = min(max(t, self.time_fraction), 1.0)
        if self.name == "poly":
            return (1.0 - t) ** 0.9
        if self.name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return 1.0

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, *, total_steps: int, warmup_steps: int) -> Schedule:
    if name not in ("poly", "cosine", "constant"):
        raise SegbenchError(f"unknown schedule '{name}'; use poly, cosine or constant")
    return Schedule(optimizer, name, total_steps=total_steps, warmup_steps=warmup_steps)
