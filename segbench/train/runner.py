"""Run a suite: for each (model, dataset) config, train (or reuse weights with the same run id), evaluate,
measure, and write one validated schema-2 result record plus the weights. ``segbench eval`` scores weights
through the same :func:`score` as a run, so the two cannot disagree.

Budgets are epochs (the ``steps`` track; ``max_train_seconds`` is a safety stop that marks the record
``capped``) unless a config opts into the separately labelled ``time`` track. The reported checkpoint is the
final one, or the best on a recorded holdout slice of train (``select_on=holdout``) — never chosen on the split
it is reported on.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..config.run import RunConfig
from ..config.settings import EvalSettings, Loaders, TrainSettings
from ..data import DatasetInfo, build_dataset
from ..data.resident import ResidentLoader
from ..device import device_name, resolve_device
from ..errors import SegbenchError
from ..files import path_lock
from ..models import build_model, model_task
from ..models.inference import evaluation_from
from ..models.pretrained import input_normalisation
from ..records.build import Measured, build_record, metrics_entry, model_meta, selection_entry, training_entry
from ..records.io import DEFAULT_ROOT, previous_record, read_record, reproduction_report, write_record
from ..weights.meta import WeightsMeta
from ..weights.store import CONFIG_FILE, LocalStore, read_meta, read_meta_json
from . import distributed
from .data import Data, _with_fill, build_data, eval_loader, find_test_split
from .engine import evaluate, seed_everything, train
from .losses import build_loss, median_frequency_weights
from .optim import make_optimizer, make_scheduler

LATENCY_IMAGES = 8  # instance models: latency and GMACs on the first N val images (their cost depends on content)


# ---------------------------------------------------------------- training pieces

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


def max_dets_for(model: torch.nn.Module) -> list[int] | None:
    """COCO ``max_dets`` for an instance model: (1, 10, M) with M its detections per image, so AP counts every
    detection the model may return (COCO's fixed 100 would drop some on crowded images); None for semantic."""
    if getattr(model, "task", "semantic") != "instance":
        return None
    found = [int(m.detections_per_img) for m in model.modules() if hasattr(m, "detections_per_img")]
    most = max(found) if found else 100
    return sorted({1, 10, most})


# ---------------------------------------------------------------- evaluation (shared by run and eval)

def eval_settings(meta: WeightsMeta) -> EvalSettings:
    """How weights are scored, from the settings stored in their ``meta`` (eval size and tile, evaluation mode,
    precision, memory format; instance models: score threshold, label -> class map, fill class)."""
    l2c = meta.label_to_class if meta.task == "instance" else None
    return EvalSettings(amp=meta.amp, channels_last=meta.channels_last,
                        eval_size=meta.eval_size, tile=meta.eval_tile,
                        evaluation=evaluation_from(meta.evaluation),
                        score_threshold=float(meta.score_threshold),
                        label_to_class=torch.tensor(l2c) if l2c is not None else None, fill=meta.fill)


def score(model: torch.nn.Module, meta: WeightsMeta, loader: DataLoader, *, info: DatasetInfo,
          device: torch.device, progress: bool = False) -> dict[str, Any]:
    """Metrics of ``model`` on ``loader`` with the evaluation settings stored in its ``meta``
    (:func:`eval_settings`; instance models also COCO AP with the weights' ``max_dets``)."""
    evaluator = None
    if meta.task == "instance":
        from ..evaluation.coco import InstanceEvaluator

        evaluator = InstanceEvaluator(max_dets=meta.max_dets or (1, 10, 100))
    return evaluate(model, loader, info=info, device=device, settings=eval_settings(meta),
                    instance_evaluator=evaluator, progress=progress)


@dataclasses.dataclass(frozen=True)
class DataSplit:
    """The split ``segbench eval`` scores weights on: ``dataset`` (None: the one the weights were trained on), its
    ``split``, the data root (None: the dataset's default) and the dataset builder's options."""

    dataset: str | None = None
    split: str = "val"
    data_root: str | None = None
    dataset_args: dict[str, Any] = dataclasses.field(default_factory=dict)


def evaluate_weights(weights: str, *, store: LocalStore, on: DataSplit = DataSplit(), batch_size: int = 4,
                     device: str = "auto", progress: bool = False) -> tuple[dict[str, Any], DatasetInfo, WeightsMeta, int]:
    """``segbench eval``: (metrics, info, meta, number of images) of stored weights on one split."""
    from ..weights.store import load_model

    dev = resolve_device(device)
    model, meta = load_model(weights, store=store, map_location=str(dev))
    name, split, data_root = on.dataset or meta.dataset, on.split, on.data_root
    options = dict(on.dataset_args)
    semantic = build_dataset(name, split=split, root=data_root, **options)
    info = with_stats(semantic.info, meta.mean, meta.std)  # what the weights were trained with
    expected = meta.semantic_classes
    if info.num_classes != expected:
        raise SegbenchError(f"{weights}: weights predict {expected} classes but dataset '{name}' has "
                            f"{info.num_classes}; evaluate on the dataset the model was trained on")
    instances = None
    if meta.task == "instance":
        instances = _with_fill(build_dataset(name, split=split, root=data_root, task="instance", **options),
                               meta.fill)
    loader = eval_loader(semantic, task=meta.task, batch_size=batch_size, instances=instances)
    return score(model, meta, loader, info=info, device=dev, progress=progress), info, meta, len(semantic)


# ---------------------------------------------------------------- one pair

def train_settings(cfg: RunConfig, info: DatasetInfo, meta: WeightsMeta, *, device: torch.device,
                   sync_bn: bool, checkpoint_dir: Path, resume: bool, progress: bool) -> TrainSettings:
    """The engine's settings for ``cfg``: the one place a config becomes a ``TrainSettings`` (selection and
    monitoring score as :func:`score` does, from ``meta``)."""
    return TrainSettings(
        device=device, info=info, epochs=cfg.epochs, eval_every=cfg.eval_every, grad_clip=cfg.grad_clip,
        amp=cfg.amp, channels_last=cfg.channels_last, compile=cfg.compile, aux_weight=cfg.aux_weight,
        weight_map_fn=border_weight_fn(cfg, info), max_seconds=cfg.max_train_seconds,
        time_budget=cfg.track == "time", seed=cfg.seed, sync_bn=sync_bn, checkpoint_dir=checkpoint_dir,
        resume=resume, progress=progress, eval=eval_settings(meta))


def _train(cfg: RunConfig, model: torch.nn.Module, data: Data, settings: TrainSettings, *,
           log: Callable[[str], None]):
    """Train ``model`` for the config's budget; returns the engine's TrainResult."""
    checkpoint_dir, task = settings.checkpoint_dir, model.task
    if settings.resume and not distributed.on_main((checkpoint_dir / "last.pt").is_file):
        raise SegbenchError(f"--resume: no checkpoint of this config in {checkpoint_dir}; "
                            "run without --resume to train from scratch")
    steps = len(data.train) * cfg.epochs
    optimizer = make_optimizer(model, cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               encoder_lr_mult=cfg.encoder_lr_mult)
    scheduler = make_scheduler(optimizer, cfg.schedule, total_steps=steps,
                               warmup_steps=int(cfg.warmup_epochs * len(data.train)))
    loss_fn = None
    if task == "semantic":
        loss_fn = build_loss(cfg.loss, num_classes=data.info.num_classes, ignore_index=data.info.ignore_index,
                             class_weights=class_weights(cfg, data)).to(settings.device)
    monitor = data.val if task == "semantic" and cfg.eval_every < cfg.epochs else None  # the curve only
    loaders = Loaders(train=data.train, select=data.select, monitor=monitor)
    # One trainer per run: a second `train`/`run` of the same config stops at once, naming the one that holds it,
    # instead of both writing last.pt (rank 0 holds it under DDP).
    lock = path_lock(checkpoint_dir, timeout=0, log=log) if distributed.is_main_process() else nullcontext()
    with lock:
        return train(model, loaders, loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler, settings=settings,
                     log=log)


def run_one(cfg: RunConfig, *, store: LocalStore, leaderboard: str | Path = DEFAULT_ROOT, retrain: bool = False,
            resume: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Train (or reuse) + evaluate + measure one config; returns the written record.

    Under torchrun every rank trains and scores its part; rank 0 alone measures, writes the weights and the
    record, and returns it (the other ranks return None). ``batch_size`` is the global batch.
    """
    log, progress = distributed.main_only(log), progress and distributed.is_main_process()
    device = distributed.check_device(resolve_device(cfg.device))
    per_device = distributed.per_device_batch(cfg.batch_size)
    sync_bn = distributed.resolve_sync_bn(cfg.sync_bn, device=device, per_device=per_device)
    name, run_id, task = cfg.display_name(), cfg.run_id(), model_task(cfg.model)
    run_dir = store.run_dir(cfg.dataset, name, run_id)
    reuse = not retrain and distributed.on_main(
        lambda: store.has(cfg.dataset, name, run_id) and read_meta(run_dir).selection is not None)
    data = build_data(cfg, task, need_train=not reuse, device=device, log=log)
    test = find_test_split(cfg)  # before training: a test split that is there but unreadable stops the run now
    model_args = {"in_channels": data.info.in_channels, **cfg.model_args}
    seed_everything(cfg.seed)
    model = build_model(cfg.model, num_classes=data.model_classes, **model_args)
    if model.task != task:
        raise SegbenchError(f"model '{cfg.model}' reports task '{model.task}'")
    # The one place a pretrained encoder's input statistics replace the dataset's: training, selection, scoring,
    # the latency measurement and the weights' meta (hence the predictor and `segbench eval`) all read data.info.
    stats = input_normalisation(model)
    if stats is not None:
        data = dataclasses.replace(data, info=with_stats(data.info, *stats))
    info = data.info
    meta = model_meta(cfg, data, model_args=model_args, task=task, max_dets=max_dets_for(model))
    if reuse:
        from ..weights.store import load_model

        log(f"[{name} / {cfg.dataset}] reusing weights {run_dir} (same run id {run_id})")
        model, _ = load_model(run_dir, store=store)
        stored = read_meta_json(run_dir / CONFIG_FILE)  # its keys win; keys older weights lack come from cfg
        meta = WeightsMeta.from_dict({**meta.to_dict(), **stored}, source=run_dir / CONFIG_FILE)
        weights = _weights_entry(store, cfg.dataset, name, run_id)
    else:
        log(f"[{name} / {cfg.dataset}] training on {device_name(device)}: {len(data.train.dataset)} images x "
            f"{cfg.epochs} epochs" + (f", {len(data.holdout)} train images held out for selection" if data.holdout else ""))
        settings = train_settings(cfg, info, meta, device=device, sync_bn=sync_bn, resume=resume, progress=progress,
                                  checkpoint_dir=store.root / "checkpoints" / cfg.dataset / f"{name}--{run_id}")
        result = _train(cfg, model, data, settings, log=log)
        loader = "device" if isinstance(data.train, ResidentLoader) else "host"
        training = {**training_entry(cfg, result, steps_per_epoch=len(data.train), device=device, loader=loader,
                                     model=model, data=data),
                    "world_size": distributed.world_size(), "per_device_batch": per_device, "sync_bn": sync_bn}
        meta = dataclasses.replace(meta, training=training, selection=selection_entry(cfg, result, data.holdout))
        weights = store.save(model.cpu(), meta, cfg.dataset, name, run_id) if distributed.is_main_process() else {}
    model.to(device)
    metrics, test_metrics = _score_splits(cfg, model, meta, data, test, task=task, device=device, log=log)
    if not distributed.is_main_process():
        return None
    measured = Measured(metrics=metrics, test_metrics=test_metrics, selection=meta.selection,
                        efficiency=measure(model, cfg, meta, data, device), training=meta.training, weights=weights)
    record = build_record(cfg, model, data.info, measured=measured, device=device)
    previous = previous_record(leaderboard, record)
    path = write_record(record, leaderboard)
    log(f"[{name} / {cfg.dataset}] mIoU {record['metrics']['miou']:.4f}  PA {record['metrics']['pixel_accuracy']:.4f}"
        f"{'  (capped by max_train_seconds)' if record['training']['capped'] else ''}  -> {path}")
    if previous is not None:
        for line in reproduction_report(previous, read_record(path)):
            log(f"[{name} / {cfg.dataset}] {line}")
    return record


def _score_splits(cfg: RunConfig, model: torch.nn.Module, meta: WeightsMeta, data: Data, test: Any, *,
                  task: str, device: torch.device,
                  log: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The record's ``metrics`` on the reported split and ``test_metrics`` on ``test`` (``find_test_split``; None
    when the data has no test split). Under DDP every rank scores its slice and the counts are reduced."""
    info = data.info
    log(f"[{cfg.display_name()} / {cfg.dataset}] evaluating on '{cfg.eval_split}' ({len(data.val.dataset)} images)")
    entry = dict(task=task, score_threshold=cfg.score_threshold, max_dets=meta.max_dets)
    metrics = metrics_entry(score(model, meta, data.val, info=info, device=device), info, **entry)
    test_metrics = None
    if test is not None:
        log(f"[{cfg.display_name()} / {cfg.dataset}] evaluating on 'test' ({len(test)} images)")
        instances = None
        if task == "instance":
            instances = _with_fill(build_dataset(cfg.dataset, split="test", root=cfg.data_root, task="instance",
                                                 **cfg.dataset_args), meta.fill)
        loader = eval_loader(test, task=task, batch_size=cfg.batch_size, instances=instances)
        test_metrics = metrics_entry(score(model, meta, loader, info=info, device=device), info, **entry)
    return metrics, test_metrics


def measure(model: torch.nn.Module, cfg: RunConfig, meta: WeightsMeta, data: Data,
            device: torch.device) -> dict[str, Any]:
    """The record's ``efficiency`` at the evaluation size; instance models on the first val images (their
    cost depends on how many objects they find), named in ``latency.inputs``."""
    from ..evaluation.speed import Timing, measure_efficiency

    val = data.val.dataset
    if cfg.eval_size:
        size = (int(cfg.eval_size[0]), int(cfg.eval_size[1]))
    else:
        size = tuple(int(v) for v in val[0][0].shape[-2:])
    images = None
    if model.task == "instance":
        n = min(LATENCY_IMAGES, len(val))
        images = [val[i][0] for i in range(n)]
    inputs = f"val images [0..{len(images) - 1}] ({len(images)})" if images else None
    return measure_efficiency(model, in_channels=data.info.in_channels, size=size, images=images, info=data.info,
                              timing=Timing(device=device, runs=cfg.latency_runs, amp=cfg.amp), meta=meta,
                              inputs=inputs)


def with_stats(info: DatasetInfo, mean: Any, std: Any) -> DatasetInfo:
    """``info`` normalising with ``mean``/``std`` (per channel, 0..1 scale) instead of the dataset's; unchanged
    when either is None."""
    if mean is None or std is None:
        return info
    return dataclasses.replace(info, mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))


def _weights_entry(store: LocalStore, dataset: str, name: str, run_id: str) -> dict[str, str]:
    from ..weights.store import CONFIG_FILE, WEIGHTS_FILE, sha256_file

    uri = store.uri(dataset, name, run_id)
    return {"sha256": sha256_file(store.run_dir(dataset, name, run_id) / WEIGHTS_FILE), "uri": uri,
            "config_uri": f"{uri}/{CONFIG_FILE}"}


# ---------------------------------------------------------------- suite

def expand_seeds(configs: list[RunConfig], seeds: int) -> list[RunConfig]:
    """Each config with seeds seed..seed+seeds-1 (the runs of one config share a ``group``)."""
    if seeds < 1:
        raise SegbenchError(f"--seeds {seeds}: give at least 1")
    return [dataclasses.replace(cfg, seed=cfg.seed + i) for cfg in configs for i in range(seeds)]


def group_summary(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per group: model, dataset, runs, mean and (sample) std of mIoU across its seeds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(record["group"], []).append(record)
    rows = []
    for group, members in groups.items():
        mious = [r["metrics"]["miou"] for r in members]
        rows.append({"model": members[0]["model"], "dataset": members[0]["dataset"], "group": group,
                     "runs": len(members), "seeds": sorted(r["seed"] for r in members),
                     "miou_mean": statistics.fmean(mious), "miou_std": statistics.stdev(mious) if len(mious) > 1 else 0.0})
    return rows


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; a one-line error otherwise."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index, count = -1, 0
    if count < 1 or not 0 <= index < count:
        raise SegbenchError(f"--shard {text!r}: use i/n with 0 <= i < n, e.g. --shard 0/2 on one machine and "
                            "--shard 1/2 on another")
    return index, count


def shard(configs: list[RunConfig], index: int, count: int) -> list[RunConfig]:
    """Every ``count``-th pair from position ``index`` (positions after seed expansion): ``count`` machines or
    job-array tasks split a suite without overlap, and their records (ids differ) merge into one leaderboard."""
    return configs[index::count]


def suite_status(configs: list[RunConfig], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per pair of a suite (after seed expansion): its position and the hardware classes that have its
    record (none: still missing). A pair's id is computed for each hardware class, since the machines differ."""
    found: dict[str, str] = {r["id"]: r["hardware_class"] for r in records}
    rows = []
    for position, cfg in enumerate(configs):
        ids = {dataclasses.replace(cfg, device=hw).run_id() for hw in ("cpu", "cuda")}
        rows.append({"position": position, "model": cfg.display_name(), "dataset": cfg.dataset, "seed": cfg.seed,
                     "ids": sorted(ids), "done": sorted(found[i] for i in ids if i in found)})
    return rows


def run_suite(configs: list[RunConfig], *, store: LocalStore, leaderboard: str | Path = DEFAULT_ROOT,
              retrain: bool = False, progress: bool = True, on_record: Callable[[dict], None] | None = None,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every config; returns the written records (none on DDP ranks other than 0, which write nothing)."""
    records, log = [], distributed.main_only(log)
    for i, cfg in enumerate(configs, 1):
        log(f"== {i}/{len(configs)}: {cfg.display_name()} on {cfg.dataset} (seed {cfg.seed})")
        record = run_one(cfg, store=store, leaderboard=leaderboard, retrain=retrain, progress=progress, log=log)
        if record is None:
            continue
        if on_record is not None:
            on_record(record)
        records.append(record)
    return records
