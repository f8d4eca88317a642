"""Training and evaluation settings as objects, built from a ``RunConfig`` and the weights' meta in one place
(``runner.train_settings`` / ``runner.eval_settings``) and read by ``engine.train`` and ``engine.evaluate``
(as torchvision's ``references/segmentation`` pass their ``args``). Flat and frozen: a loop never changes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data import DatasetInfo
from ..models.inference import WHOLE, Evaluation


@dataclass(frozen=True)
class EvalSettings:
    """How ``engine.evaluate`` runs a model over a split and what it keeps.

    Semantic models: batches normalised, in channels_last when ``channels_last``, resized to ``eval_size`` (if
    set), run as ``evaluation`` says (whole image, sliding window with ``tile``, scales + flip), logits resized
    back to the label size; bf16 autocast on CUDA under ``amp``, fp32 on CPUs. Instance models: detections with a
    score >= ``score_threshold`` become a class map (``label_to_class``, ``fill`` where no mask wins; None: the
    dataset's background). ``per_image`` keeps per-image counts (bootstrap CI), ``boundary`` Boundary IoU.
    """

    amp: bool = True
    channels_last: bool = True
    eval_size: list[int] | None = None  # [H, W] the model runs at; None: each image's own size
    tile: int | None = None  # output tile (px) of overlap-tile models
    evaluation: Evaluation = WHOLE
    score_threshold: float = 0.5
    label_to_class: Tensor | None = None  # int64 [labels]: detector label -> semantic class
    fill: int | None = None
    per_image: bool = True
    boundary: bool = True


@dataclass(frozen=True)
class Loaders:
    """What ``engine.train`` reads: the training loader, the holdout it selects on (optional) and the loader it
    scores for the curve only (optional, ``val_miou`` in the history)."""

    train: Any
    select: Iterable | None = None
    monitor: Iterable | None = None


@dataclass(frozen=True)
class TrainSettings:
    """Where and how ``engine.train`` trains (see its docstring for selection, budgets and resuming)."""

    device: torch.device
    info: DatasetInfo  # the inputs' normalisation and the classes
    epochs: int  # the budget
    eval_every: int = 1  # epochs between selection / monitoring scores (and always at the end)
    grad_clip: float | None = None  # max gradient norm; None: no clipping
    amp: bool = True  # bf16 autocast on CUDA (CPUs train fp32)
    channels_last: bool = True  # semantic models and batches in channels_last
    compile: bool = False  # torch.compile the step model
    aux_weight: float = 0.4  # weight of the auxiliary head's loss
    weight_map_fn: Callable[[Tensor], Tensor] | None = None  # host masks -> per-pixel loss weights (U-Net eq. 2)
    max_seconds: float | None = None  # training-time safety stop (s); the time track's budget
    time_budget: bool = False  # the time track: time spent also advances the schedule
    seed: int = 0
    sync_bn: bool = False  # SyncBatchNorm under DDP
    checkpoint_dir: Path | None = None  # last.pt is written here after every epoch
    resume: bool = False  # continue from checkpoint_dir/last.pt
    progress: bool = True  # tqdm bars
    eval: EvalSettings = field(default_factory=EvalSettings)  # selection / monitoring (per_image, boundary off)
