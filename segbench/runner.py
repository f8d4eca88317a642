"""Run a suite: for each (model, dataset) config, train (or reuse weights with the same config hash),
evaluate, measure, and write one validated result record plus the weights.
"""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch.utils.data import DataLoader, Dataset

from . import __version__
from .config import RunConfig
from .data import DatasetInfo, build_dataset
from .data.resident import DeviceAugment, NotResident, ResidentLoader, resident_budget
from .data.transforms import TrainTransform, collate_instance, collate_semantic
from .device import cpu_name, device_name, resolve_device
from .engine import evaluate, make_optimizer, make_scheduler, seed_everything, train
from .errors import SegbenchError
from .losses import build_loss, median_frequency_weights
from .models import build_model, model_task
from .records import DEFAULT_ROOT, write_record
from .speed import first_images, measure_efficiency
from .store import LocalStore, read_meta


# ---------------------------------------------------------------- data

class WithSemantic(Dataset):
    """Instance samples whose target also carries the semantic mask of the same image (for PA/mPA/mIoU)."""

    def __init__(self, instances: Dataset, semantic: Dataset) -> None:
        if len(instances) != len(semantic):
            raise SegbenchError(f"instance and semantic views differ in length ({len(instances)} vs {len(semantic)})")
        self.instances, self.semantic, self.info = instances, semantic, semantic.info

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, i: int):
        image, target = self.instances[i]
        return image, {**target, "semantic": self.semantic[i][1]}


class Limited(Dataset):
    """The first ``n`` samples of a dataset, keeping its ``info`` (and instance-view attributes)."""

    def __init__(self, dataset: Dataset, n: int | None) -> None:
        self.dataset, self.n = dataset, len(dataset) if n is None else min(n, len(dataset))
        self.info = dataset.info

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if i >= self.n:
            raise IndexError(i)
        return self.dataset[i]

    def __getattr__(self, name: str):
        if name in ("dataset", "n", "info"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def collate_eval(batch: list) -> tuple[Any, Any]:
    """Stack when all images share a size; otherwise keep lists (evaluated one by one)."""
    shapes = {tuple(img.shape) for img, _ in batch}
    if len(shapes) == 1:
        return collate_semantic(batch)
    return [img for img, _ in batch], [m for _, m in batch]


def train_transform(cfg: RunConfig, info: DatasetInfo):
    if cfg.crop_size is None and cfg.scale_min == cfg.scale_max == 1.0 and not cfg.hflip and not cfg.color_jitter:
        return None
    return TrainTransform(crop_size=cfg.crop_size, scale=(cfg.scale_min, cfg.scale_max), hflip=cfg.hflip,
                          color_jitter=cfg.color_jitter, ignore_index=info.ignore_index)


@dataclass
class Data:
    info: DatasetInfo
    train: DataLoader | None
    val: DataLoader
    label_to_class: torch.Tensor | None
    fill: int | None
    model_classes: int
    label_names: list[str] | None = None


def build_data(cfg: RunConfig, task: str, *, need_train: bool, device: torch.device | None = None,
               log: Callable[[str], None] = print) -> Data:
    """Loaders for one config. Instance models get instance views plus the semantic masks for scoring."""
    common = dict(root=cfg.data_root, **cfg.dataset_args)
    def build(split: str, **kwargs: Any) -> Dataset:
        dataset = build_dataset(cfg.dataset, split=split, **common, **kwargs)
        return Limited(dataset, cfg.limit_images) if cfg.limit_images else dataset

    if task == "instance" and cfg.loader == "device":
        raise SegbenchError(f"loader=device holds semantic splits only; '{cfg.model}' is an instance model: use loader=auto")
    device = device or torch.device("cpu")
    val_sem = build(cfg.eval_split)
    info = val_sem.info
    generator = torch.Generator().manual_seed(cfg.seed)
    if task == "instance":
        val_inst = build(cfg.eval_split, task="instance")
        val = DataLoader(WithSemantic(val_inst, val_sem), batch_size=cfg.batch_size, shuffle=False,
                         num_workers=cfg.num_workers, collate_fn=collate_instance)
        train_loader = None
        if need_train:
            train_ds = build(cfg.train_split, task="instance", transform=train_transform(cfg, info))
            train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                                      collate_fn=collate_instance, generator=generator, drop_last=False)
        l2c = getattr(val_inst, "label_to_class", None)
        fill = getattr(val_inst, "fill", None)
        model_classes = int(getattr(val_inst, "num_labels", len(l2c) if l2c is not None else info.num_classes))
        names = getattr(val_inst, "label_names", None)
        return Data(info, train_loader, val, l2c, fill, model_classes, list(names) if names is not None else None)
    val = DataLoader(val_sem, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers, collate_fn=collate_eval)
    train_loader: Any = None
    if need_train:
        train_loader = _resident_loader(cfg, info, build, device, log)
        if train_loader is None:
            train_ds = build(cfg.train_split, transform=train_transform(cfg, info))
            if len(train_ds) == 0:
                raise SegbenchError(f"dataset '{cfg.dataset}' split '{cfg.train_split}' is empty; check data_root")
            train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                                      collate_fn=collate_semantic, generator=generator,
                                      drop_last=len(train_ds) > cfg.batch_size)
    return Data(info, train_loader, val, None, None, info.num_classes)


def _resident_loader(cfg: RunConfig, info: DatasetInfo, build: Callable[..., Dataset], device: torch.device,
                     log: Callable[[str], None]) -> ResidentLoader | None:
    """``loader=device`` (or ``auto`` on a GPU): the training split on the device, augmented there; else None."""
    if cfg.loader == "host" or (cfg.loader == "auto" and device.type != "cuda"):
        return None
    try:
        augment = DeviceAugment(cfg.crop_size, (cfg.scale_min, cfg.scale_max), hflip=cfg.hflip,
                                color_jitter=cfg.color_jitter, ignore_index=info.ignore_index)
        t0 = time.perf_counter()
        loader = ResidentLoader(build(cfg.train_split), batch_size=cfg.batch_size, device=device, augment=augment,
                                seed=cfg.seed, num_workers=cfg.num_workers, max_bytes=resident_budget(device))
    except NotResident as exc:
        if cfg.loader == "device":
            raise SegbenchError(f"loader=device: {exc}; use loader=host") from None
        log(f"training batches from the host loader ({exc})")
        return None
    log(f"training split on {device_name(device)}: {loader.images.shape[0]} images, "
        f"{loader.nbytes / 2**20:.0f} MiB, loaded in {time.perf_counter() - t0:.1f} s")
    return loader


def class_weights(cfg: RunConfig, data: Data) -> torch.Tensor | None:
    if cfg.class_weights is None:
        return None
    if cfg.class_weights == "auto":
        masks = ([data.train.masks] if isinstance(data.train, ResidentLoader)  # already decoded: one batch
                 else (mask for _, mask in data.train.dataset))
        return median_frequency_weights(masks, data.info.num_classes, data.info.ignore_index)
    if isinstance(cfg.class_weights, list) and len(cfg.class_weights) == data.info.num_classes:
        return torch.tensor(cfg.class_weights, dtype=torch.float32)
    raise SegbenchError(f"class_weights must be null, 'auto' or a list of {data.info.num_classes} numbers")


def border_weight_fn(cfg: RunConfig, info: DatasetInfo) -> Callable | None:
    """U-Net eq. 2 weight maps from the connected components of the non-background classes of each mask."""
    if not cfg.border_weight:
        return None
    from scipy import ndimage

    from .losses import unet_weight_map

    background = info.background_index if info.background_index is not None else 0

    def fn(masks: torch.Tensor) -> torch.Tensor:
        maps = []
        for mask in masks:
            fg = ((mask != background) & (mask != info.ignore_index)).cpu().numpy()
            ids, _ = ndimage.label(fg)
            maps.append(unet_weight_map(torch.from_numpy(ids).long(), w0=cfg.w0, sigma=cfg.sigma))
        return torch.stack(maps)

    return fn


# ---------------------------------------------------------------- records

def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "segbench": __version__}


def named(values: list[float], names: tuple[str, ...]) -> dict[str, float | None]:
    return {n: (None if v != v else float(v)) for n, v in zip(names, values)}


def eval_size_of(cfg: RunConfig, data: Data) -> tuple[int, int]:
    if cfg.eval_size:
        return int(cfg.eval_size[0]), int(cfg.eval_size[1])
    sample = data.val.dataset[0][0]
    return int(sample.shape[-2]), int(sample.shape[-1])


def model_meta(cfg: RunConfig, info: DatasetInfo, model_args: dict[str, Any], model_classes: int, task: str,
               data: Data) -> dict[str, Any]:
    return {
        "model": cfg.model, "model_args": model_args, "num_classes": model_classes, "in_channels": info.in_channels,
        "class_names": list(info.class_names), "semantic_classes": info.num_classes, "mean": list(info.mean),
        "std": list(info.std), "ignore_index": info.ignore_index, "dataset": cfg.dataset,
        "palette": [list(c) for c in info.palette], "eval_size": cfg.eval_size, "eval_tile": cfg.eval_tile,
        "task": task, "name": cfg.display_name(), "score_threshold": cfg.score_threshold,
        "label_to_class": data.label_to_class.tolist() if data.label_to_class is not None else None,
        "fill": data.fill, "label_names": data.label_names, "license": info.license, "run_id": cfg.run_id(),
    }


# ---------------------------------------------------------------- one pair

def run_one(cfg: RunConfig, *, store: LocalStore, leaderboard: str | Path = DEFAULT_ROOT, retrain: bool = False,
            resume: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or reuse) + evaluate + measure one config; returns the written record."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    name, run_id = cfg.display_name(), cfg.run_id()
    task = model_task(cfg.model)
    reuse = store.has(cfg.dataset, name, run_id) and not retrain
    data = build_data(cfg, task, need_train=not reuse, device=device, log=log)
    info = data.info
    model_args = {"in_channels": info.in_channels, **cfg.model_args}
    seed_everything(cfg.seed)
    model = build_model(cfg.model, num_classes=data.model_classes, **model_args)
    if model.task != task:
        raise SegbenchError(f"model '{cfg.model}' reports task '{model.task}'")
    previous_training: dict[str, Any] | None = None
    if reuse:
        from .store import load_model

        log(f"[{name} / {cfg.dataset}] reusing weights {store.run_dir(cfg.dataset, name, run_id)} (same config hash {run_id})")
        model, _ = load_model(store.run_dir(cfg.dataset, name, run_id), store=store)
        previous_training = read_meta(store.run_dir(cfg.dataset, name, run_id)).get("training")
        result = None
    else:
        log(f"[{name} / {cfg.dataset}] training on {device_name(device)}: {len(data.train.dataset)} images x {cfg.epochs} epochs")
        steps = len(data.train) * cfg.epochs
        optimizer = make_optimizer(model, cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        scheduler = make_scheduler(optimizer, cfg.schedule, total_steps=steps, warmup_steps=int(cfg.warmup_epochs * len(data.train)))
        loss_fn = None
        if task == "semantic":
            loss_fn = build_loss(cfg.loss, num_classes=info.num_classes, ignore_index=info.ignore_index,
                                 class_weights=class_weights(cfg, data))
            loss_fn = loss_fn.to(device)
        result = train(
            model, train_loader=data.train, val_loader=data.val, info=info, loss_fn=loss_fn, optimizer=optimizer,
            scheduler=scheduler, device=device, epochs=cfg.epochs, eval_every=cfg.eval_every, grad_clip=cfg.grad_clip,
            amp=cfg.amp, channels_last=cfg.channels_last, compile=cfg.compile, aux_weight=cfg.aux_weight,
            max_seconds=cfg.max_train_seconds, checkpoint_dir=store.root / "checkpoints" / cfg.dataset / f"{name}--{run_id}",
            resume=resume, seed=cfg.seed, weight_map_fn=border_weight_fn(cfg, info), progress=progress, log=log,
            eval_kwargs=_eval_kwargs(cfg, data, task, with_ap=False),
        )
    training = previous_training or {
        "epochs": result.epochs_done, "seconds": round(result.seconds, 2), "images_per_s": round(result.images_per_s, 2),
        "device": device_name(device), "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
        "loader": "device" if isinstance(data.train, ResidentLoader) else "host", "history": result.history,
    }
    meta = model_meta(cfg, info, model_args, data.model_classes, task, data)
    meta["training"] = training
    weights = store.save(model.cpu(), meta, cfg.dataset, name, run_id) if not reuse else _weights_entry(store, cfg, name, run_id)
    model.to(device)

    if task == "semantic" and result is not None and result.best_metrics is not None:
        # The model now holds the best epoch's weights, already scored on this split with the same settings.
        metrics = result.best_metrics
    else:  # reused weights, or an instance model (its COCO AP is only computed here)
        log(f"[{name} / {cfg.dataset}] evaluating on '{cfg.eval_split}' ({len(data.val.dataset)} images)")
        metrics = evaluate(model, data.val, info=info, device=device, amp=cfg.amp, channels_last=cfg.channels_last,
                           **_eval_kwargs(cfg, data, task, with_ap=True))
    size = eval_size_of(cfg, data)
    images, inputs = first_images(data.val.dataset) if task == "instance" else (None, None)
    efficiency = measure_efficiency(model, in_channels=info.in_channels, size=size, device=device,
                                    runs=cfg.latency_runs, amp=cfg.amp, tile=cfg.eval_tile, images=images,
                                    info=info, eval_size=cfg.eval_size, meta=meta, inputs=inputs)
    record = {
        "schema": 1, "id": run_id, "model": name, "family": model.family, "variant": model.variant, "task": task,
        "dataset": cfg.dataset, "split": cfg.eval_split, "num_classes": info.num_classes,
        "class_names": list(info.class_names),
        "metrics": {
            "pixel_accuracy": metrics["pixel_accuracy"], "mean_pixel_accuracy": metrics["mean_pixel_accuracy"],
            "miou": metrics["miou"], "fwiou": metrics["fwiou"], "mean_dice": metrics["mean_dice"],
            "iou": named(metrics["iou"], info.class_names), "accuracy": named(metrics["accuracy"], info.class_names),
            "dice": named(metrics["dice"], info.class_names),
            "absent": [info.class_names[i] for i in metrics["absent"]],
            "mask_ap": metrics.get("mask_ap"), "box_ap": metrics.get("box_ap"),
            "coco": {k: v for k, v in metrics.items() if k.startswith(("mask_", "box_"))} or None,
            "score_threshold": cfg.score_threshold if task == "instance" else None,
        },
        "efficiency": efficiency, "training": training, "config": cfg.to_dict(), "seed": cfg.seed,
        "versions": versions(), "git_commit": git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "weights": weights,
        "hardware": {"device": device_name(device), "cpu": cpu_name(), "cpu_count": torch.get_num_threads(),
                     "platform": platform.platform()},
    }
    path = write_record(record, leaderboard)
    log(f"[{name} / {cfg.dataset}] mIoU {metrics['miou']:.4f}  PA {metrics['pixel_accuracy']:.4f}  -> {path}")
    return record


def _eval_kwargs(cfg: RunConfig, data: Data, task: str, *, with_ap: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"eval_size": cfg.eval_size, "tile": cfg.eval_tile}
    if task == "instance":
        kwargs = {"score_threshold": cfg.score_threshold, "label_to_class": data.label_to_class, "fill": data.fill}
        if with_ap:
            from .instance_eval import InstanceEvaluator

            kwargs["instance_evaluator"] = InstanceEvaluator()
    return kwargs


def _weights_entry(store: LocalStore, cfg: RunConfig, name: str, run_id: str) -> dict[str, str]:
    from .store import WEIGHTS_FILE, sha256_file

    uri = store.uri(cfg.dataset, name, run_id)
    return {"sha256": sha256_file(store.run_dir(cfg.dataset, name, run_id) / WEIGHTS_FILE), "uri": uri,
            "config_uri": f"{uri}/model.json"}


# ---------------------------------------------------------------- suite

def run_suite(configs: list[RunConfig], *, store: LocalStore, leaderboard: str | Path = DEFAULT_ROOT,
              retrain: bool = False, progress: bool = True, on_record: Callable[[dict], None] | None = None,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    records = []
    for i, cfg in enumerate(configs, 1):
        log(f"== {i}/{len(configs)}: {cfg.display_name()} on {cfg.dataset}")
        record = run_one(cfg, store=store, leaderboard=leaderboard, retrain=retrain, progress=progress, log=log)
        if on_record is not None:
            on_record(record)
        records.append(record)
    return records
