"""Assemble a schema-2 result record (``records.io`` validates and writes it) and the weights' JSON meta.

Every number carries how it was measured: metrics name their split, CI method and ``max_dets``, and
``evaluation`` ({mode, crop, stride, scales, flip}) says how the model was run over each image; the training
entry states its budget (epochs and optimizer steps), track and whether a wall-clock safety stop hit; the
selection entry says which checkpoint is reported and on what it was chosen.
"""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision

from .. import __version__
from ..config.run import RunConfig
from ..data import DatasetInfo
from ..device import cpu_name, device_name, uses_channels_last
from ..models.pretrained import pretrained_weights
from ..weights.meta import WeightsMeta
from .columns import SCORE_KEYS
from .schema import SCHEMA_VERSION


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parents[1])
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "segbench": __version__}


def named(values: list[float] | None, names: tuple[str, ...] | list[str]) -> dict[str, float | None] | None:
    """Per-class list -> {class name: value}, NaN (absent class) -> None."""
    if values is None:
        return None
    return {n: (None if v is None or v != v else float(v)) for n, v in zip(names, values)}


def metrics_entry(metrics: dict[str, Any], info: DatasetInfo, *, task: str, score_threshold: float,
                  max_dets: list[int] | None) -> dict[str, Any]:
    """The record's ``metrics`` (or ``test_metrics``) from engine.evaluate's dict: per-class values by name."""
    names = info.class_names
    return {
        **{key: metrics.get(key) for key in SCORE_KEYS},  # every score of columns.COLUMNS (None where not computed)
        "iou": named(metrics["iou"], names), "accuracy": named(metrics["accuracy"], names),
        "dice": named(metrics["dice"], names), "absent": [names[i] for i in metrics["absent"]],
        "miou_ci": metrics.get("miou_ci"), "ci": metrics.get("ci"), "per_image": metrics.get("per_image"),
        "boundary_iou": named(metrics.get("boundary_iou"), names),
        "boundary_dilation_ratio": metrics.get("boundary_dilation_ratio"),
        "coco": {k: v for k, v in metrics.items() if k.startswith(("mask_", "box_"))} or None,
        "max_dets": list(max_dets) if task == "instance" and max_dets else None,
        "score_threshold": score_threshold if task == "instance" else None,
    }


def model_meta(cfg: RunConfig, data: Any, *, model_args: dict[str, Any], task: str,
               max_dets: list[int] | None) -> WeightsMeta:
    """The weights' ``model.json``: enough to rebuild the model and to evaluate it as the run did. ``data``: the
    run's ``train.data.Data`` (its info, model classes, label -> class map, fill class and label names)."""
    info, label_to_class = data.info, data.label_to_class
    return WeightsMeta(
        model=cfg.model, model_args=model_args, num_classes=data.model_classes, in_channels=info.in_channels,
        class_names=tuple(info.class_names), semantic_classes=info.num_classes, mean=tuple(info.mean),
        std=tuple(info.std), ignore_index=info.ignore_index, dataset=cfg.dataset,
        palette=tuple(tuple(c) for c in info.palette),
        eval_size=tuple(cfg.eval_size) if cfg.eval_size is not None else None, eval_tile=cfg.eval_tile,
        evaluation=cfg.evaluation().to_dict(),  # whole / slide + TTA: predict and the app run the same
        amp=cfg.amp, channels_last=cfg.channels_last, task=task, name=cfg.display_name(),
        score_threshold=cfg.score_threshold, max_dets=tuple(max_dets) if max_dets is not None else None,
        label_to_class=tuple(label_to_class.tolist()) if label_to_class is not None else None,
        fill=data.fill, label_names=tuple(data.label_names) if data.label_names is not None else None,
        license=info.license, run_id=cfg.run_id(), group=cfg.group_id(), hardware_class=cfg.hardware_class(),
    )


def batchnorm_policy(model: torch.nn.Module) -> str:
    """How the model's BatchNorm layers trained, for ``training.bn``: "trainable, momentum 0.1 (52 layers)",
    "frozen (FrozenBatchNorm2d, 49 layers); trainable, momentum 0.1 (3 layers)", or "none"."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    frozen = sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    momenta: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            key = "cumulative average" if m.momentum is None else f"momentum {m.momentum:g}"
            key = key if m.track_running_stats else "batch statistics only"
            momenta[key] = momenta.get(key, 0) + 1
    parts = [f"frozen (FrozenBatchNorm2d, {frozen} layers)"] if frozen else []
    parts += [f"trainable, {key} ({n} layers)" for key, n in sorted(momenta.items())]
    return "; ".join(parts) or "none"


def labelled_entry(cfg: RunConfig, data: Any) -> dict[str, Any]:
    """``labelled_images`` (train images trained on plus any holdout slice: every label the run used) and
    ``labelled_subset`` (``{"fraction", "seed"}`` of a ``train_fraction`` subset, else None)."""
    subset = None
    if cfg.train_fraction is not None:
        subset = {"fraction": cfg.train_fraction, "seed": cfg.train_fraction_seed}
    return {"labelled_images": len(data.train.dataset) + len(data.holdout), "labelled_subset": subset}


def training_entry(cfg: RunConfig, result: Any, *, steps_per_epoch: int, device: torch.device,
                   loader: str, model: torch.nn.Module, data: Any) -> dict[str, Any]:
    """The record's ``training``: what was done against the budget, whether a safety stop hit, the labelled images
    trained on, the BatchNorm policy, the encoder's LR multiplier and the memory format the steps ran in
    (``memory_format``; records written before it existed trained NCHW on CPUs)."""
    seconds = float(result.seconds)
    return {
        "epochs": result.epochs_done, "steps": result.steps_done,
        "budget": {"epochs": cfg.epochs, "steps": steps_per_epoch * cfg.epochs}, "track": cfg.track,
        "max_train_seconds": cfg.max_train_seconds, "capped": bool(result.capped), "seconds": round(seconds, 2),
        "images_per_s": round(result.images / seconds, 2) if seconds > 0 else 0.0, "device": device_name(device),
        "loader": loader, "world_size": 1, **labelled_entry(cfg, data), "bn": batchnorm_policy(model),
        "encoder_lr_mult": cfg.encoder_lr_mult,
        "memory_format": "channels_last" if uses_channels_last(model, cfg.channels_last) else "contiguous",
        "history": result.history,
    }


def selection_entry(cfg: RunConfig, result: Any, holdout: list[int]) -> dict[str, Any]:
    """The record's ``selection``: the final checkpoint, or the best on the recorded holdout slice of train."""
    return {
        "checkpoint": result.selection, "holdout_images": len(holdout) or None,
        "holdout_seed": cfg.holdout_seed if holdout else None, "holdout_indices": holdout or None,
        "selected_epoch": result.selected_epoch, "recipe": cfg.recipe,
    }


@dataclass(frozen=True)
class Measured:
    """What a run measured, one record section each (``metrics_entry``, ``selection_entry``, ``training_entry``,
    ``speed.measure_efficiency``; ``weights``: sha256 and URIs of the stored weights)."""

    metrics: dict[str, Any]
    test_metrics: dict[str, Any] | None
    selection: dict[str, Any]
    efficiency: dict[str, Any]
    training: dict[str, Any]
    weights: dict[str, str]


def build_record(cfg: RunConfig, model: torch.nn.Module, info: DatasetInfo, *, measured: Measured,
                 device: torch.device) -> dict[str, Any]:
    """A schema-2 record (see the contract in records/io.py / records/schema.py); ``device``: where it trained and
    was measured. The task is the model's."""
    return {
        "schema": SCHEMA_VERSION, "id": cfg.run_id(), "group": cfg.group_id(), "hardware_class": cfg.hardware_class(),
        "model": cfg.display_name(), "family": model.family, "variant": model.variant, "task": model.task,
        "dataset": cfg.dataset, "split": cfg.eval_split, "num_classes": info.num_classes,
        "class_names": list(info.class_names), "evaluation": cfg.evaluation().to_dict(),
        "metrics": measured.metrics, "test_metrics": measured.test_metrics, "selection": measured.selection,
        "efficiency": measured.efficiency, "training": measured.training, "config": cfg.to_dict(),
        "seed": cfg.seed, "versions": versions(), "git_commit": git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "weights": measured.weights,
        "pretrained": pretrained_weights(model),
        # cpu_count is the number of threads torch ran with (the name is kept for readers of older records);
        # the CPU's vector extension picks oneDNN's kernels: both can move scores by float rounding
        "hardware": {"device": device_name(device), "cpu": cpu_name(), "cpu_count": torch.get_num_threads(),
                     "cpu_capability": torch.backends.cpu.get_cpu_capability(), "platform": platform.platform()},
    }
