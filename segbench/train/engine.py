"""The training loop and evaluation, readable top to bottom.

Batches arrive as uint8 from the loaders and are moved to the device, normalised there (``data.transforms
.normalize``), put in channels_last (semantic models, every device: oneDNN's CPU convolutions run NHWC natively
too) and on CUDA run under bf16 autocast. Evaluation runs the model through ``predict.Predictor`` (the path of
``segbench predict``, the app and the latency figures), on whole batches. How to train and score is a
``TrainSettings`` / ``EvalSettings`` (``settings.py``), built from a config in ``runner`` only.
Losses and metrics are computed in fp32; the confusion matrix lives on the device.

Semantic loaders yield ``(images uint8 [B,C,H,W], masks int64 [B,H,W])`` (ignore value in masks);
instance loaders yield ``(list[uint8 [C,H,W]], list[target dict])``, each target also carrying its
``"semantic"`` int64 [H,W] mask so every family is scored with the same PA/mPA/mIoU.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..config.settings import EvalSettings, Loaders, TrainSettings  # noqa: F401  (callers import them from here too)
from ..data import DatasetInfo
from ..data.sharding import first_index, is_sharded
from ..data.transforms import normalize
from ..device import autocast, uses_channels_last
from ..errors import SegbenchError
from ..evaluation.metrics import ConfusionMatrix
from ..inference.predict import Predictor
from ..models.inference import forward_full
from . import distributed
from .checkpoints import CHECKPOINT_FORMAT, read_resume_state, restore_rng_state, rng_state, save_checkpoint
from .optim import Schedule, make_optimizer, make_scheduler  # noqa: F401  (the loop's; callers import them from here)

# ---------------------------------------------------------------- batches on the device

def to_device_images(images: Tensor, info: DatasetInfo, device: torch.device, channels_last: bool) -> Tensor:
    """uint8 [B,C,H,W] on the host -> normalised float32 on ``device`` (in channels_last when asked)."""
    x = normalize(images.to(device, non_blocking=True), info.mean, info.std)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- one step

@dataclass
class StepInputs:
    """Device-side batch: normalised images and targets."""

    images: Tensor | list[Tensor]
    targets: Tensor | list[dict[str, Tensor]]
    count: int


def prepare_batch(batch: Any, info: DatasetInfo, device: torch.device, channels_last: bool, task: str) -> StepInputs:
    images, targets = batch
    if task == "instance":
        imgs = [to_device_images(img[None], info, device, False)[0] for img in images]
        tgts = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        return StepInputs(imgs, tgts, len(imgs))
    return StepInputs(to_device_images(images, info, device, channels_last), targets.to(device, non_blocking=True), images.shape[0])


def compute_loss(model: nn.Module, inputs: StepInputs, loss_fn: Callable | None, aux_weight: float,
                 weight_map: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Forward + loss. Semantic: loss_fn(out) (+ aux_weight * loss_fn(aux)); instance: sum of torchvision's loss dict."""
    if getattr(model, "task", "semantic") == "instance":
        targets = [{k: v for k, v in t.items() if k != "semantic"} for t in inputs.targets]
        losses = model(inputs.images, targets)
        total = sum(v.float() for v in losses.values())
        return total, {k: v.detach() for k, v in losses.items()}
    out = forward_full(model, inputs.images)
    loss = loss_fn(out["out"], inputs.targets, weight_map)
    terms = {"main": loss.detach()}
    if out.get("aux") is not None and aux_weight > 0:
        aux = loss_fn(out["aux"], inputs.targets, weight_map)
        terms["aux"] = aux.detach()
        loss = loss + aux_weight * aux
    return loss, terms


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, info: DatasetInfo, device: torch.device,
             settings: EvalSettings = EvalSettings(), instance_evaluator: Any = None,
             progress: bool = False) -> dict[str, Any]:
    """Dataset-level metrics from one confusion matrix on the device (``ConfusionMatrix.compute``'s dict).

    The model runs through the inference path of ``segbench predict`` (``Predictor.for_scoring``), as
    ``settings`` say (``EvalSettings``): semantic models at ``eval_size`` (if given), whole image or sliding window
    with scales + flip, logits resized back to the label's resolution, so scores are always at the native label
    size. Instance models: predictions become a class map (highest-scoring mask wins, ``fill`` elsewhere) and, if
    an ``instance_evaluator`` is given, also feed COCO box/mask AP. ``settings.per_image`` also keeps per-image
    intersection/union counts (for the bootstrap CI of mIoU) and ``settings.boundary`` accumulates Boundary IoU;
    both cost time, so the training loop's curve evaluations skip them. A DDP-sharded ``loader``
    (``data.sharding``) scores this rank's slice; the counts of all ranks are then combined, so every rank
    returns the whole set's.
    """
    model.eval()
    cm = confusion_matrix(info, device, per_image=settings.per_image, boundary=settings.boundary)
    predictor = Predictor.for_scoring(model, info=info, device=device, settings=settings)
    seen = first_index(loader)  # image ids of a DDP shard continue the previous ranks' ones
    for batch in tqdm(loader, desc="eval", leave=False, disable=not progress):
        if predictor.task == "instance":
            seen += instance_eval_step(predictor, batch, cm, first_id=seen, evaluator=instance_evaluator)
        else:
            seen += semantic_eval_step(predictor, batch, cm)
    if is_sharded(loader):  # each rank scored its slice: sum the counts (per-image ones come back in dataset order)
        cm.all_reduce()
        if instance_evaluator is not None:
            distributed.gather_instance_evaluator(instance_evaluator)
    metrics = cm.compute()
    if instance_evaluator is not None:
        metrics.update(instance_evaluator.compute())
    return metrics


def confusion_matrix(info: DatasetInfo, device: torch.device, *, per_image: bool, boundary: bool) -> ConfusionMatrix:
    """An empty matrix for ``info``'s classes, on ``device``."""
    return ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index, device=device, per_image=per_image,
                           boundary=boundary)


def semantic_eval_step(predictor: Predictor, batch: Any, cm: ConfusionMatrix) -> int:
    """Score one semantic batch into ``cm``; returns the number of images.

    ``batch`` is ``(uint8 [B,C,H,W], int64 [B,H,W])`` or, for images of different sizes, two lists of
    ``[C,H,W]`` / ``[H,W]`` tensors (each scored at its own size).
    """
    images, masks = batch
    pairs = zip(images, masks) if isinstance(images, list) else [(images, masks)]
    count = 0
    for imgs, msk in pairs:
        if imgs.ndim == 3:
            imgs, msk = imgs[None], msk[None]
        x = predictor.prepare_batch(imgs)
        target = msk.to(predictor.device, non_blocking=True)
        logits = predictor.scores(x, out_size=tuple(target.shape[-2:]))
        cm.update(logits.argmax(1), target)
        count += imgs.shape[0]
    return count


def instance_eval_step(predictor: Predictor, batch: Any, cm: ConfusionMatrix, *, first_id: int,
                       evaluator: Any) -> int:
    """Score one instance batch: class maps into ``cm`` and, if given, detections into the COCO ``evaluator``
    (images numbered from ``first_id``). Returns the number of images."""
    images, targets = batch
    device = predictor.device
    preds = predictor.detect([predictor.prepare_batch(img[None])[0] for img in images])
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    for pred, target in zip(preds, targets):
        sem = predictor.class_map(pred, tuple(target["semantic"].shape))
        cm.update(sem[None], target["semantic"][None])  # batched [1,H,W]: one image for the per-image counts
    if evaluator is not None:
        ids = list(range(first_id, first_id + len(preds)))
        evaluator.update([{k: v.float().cpu() for k, v in p.items()} for p in preds],
                         [{k: v.cpu() for k, v in t.items() if k != "semantic"} for t in targets], ids)
    return len(preds)


# ---------------------------------------------------------------- training

clock = time.perf_counter  # the wall clock the loop reads (tests put a fake one here)


@dataclass
class EpochStats:
    """What one pass over the training loader did."""

    loss: float  # mean training loss over the epoch's steps
    images: int
    steps: int
    seconds: float  # training time only (no evaluation)
    stopped: bool  # the wall-clock limit was reached inside the epoch


@dataclass
class TrainResult:
    """What a training run did and which weights it left in the model.

    ``selection``: ``"final"`` (the last epoch's weights) or ``"holdout"`` (the epoch with the best mIoU on
    ``select_loader``, a slice of train; ``select_metrics`` are that epoch's metrics there). ``capped``: the
    ``max_seconds`` limit stopped the run before its epoch budget, so the last epoch in ``history`` is partial.
    ``seconds`` counts training steps only (no evaluation); ``steps_done`` counts optimiser steps.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    selection: str = "final"
    selected_epoch: int = 0
    select_metrics: dict[str, Any] | None = None
    seconds: float = 0.0
    images: int = 0
    epochs_done: int = 0
    steps_done: int = 0
    capped: bool = False

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def add_epoch(self, stats: EpochStats, *, lr: float, capped: bool) -> dict[str, Any]:
        """Count one (possibly partial) epoch; returns its new ``history`` entry."""
        self.seconds += stats.seconds
        self.images += stats.images
        self.steps_done += stats.steps
        self.epochs_done += 1
        self.capped = capped
        entry = {"epoch": self.epochs_done, "loss": stats.loss, "lr": lr,
                 "images_per_s": stats.images / max(stats.seconds, 1e-9), "seconds": round(self.seconds, 3)}
        self.history.append(entry)
        return entry


@dataclass
class Best:
    """Selection state: the best holdout mIoU so far, its epoch, its metrics and its weights (a CPU copy)."""

    score: float = -1.0
    epoch: int = 0
    metrics: dict[str, Any] | None = None
    weights: dict[str, Tensor] | None = None

    def offer(self, metrics: dict[str, Any], epoch: int, model: nn.Module) -> None:
        score = metrics["miou"] if metrics["miou"] == metrics["miou"] else 0.0  # NaN: nothing scored, never wins
        if score > self.score:  # strictly better: ties keep the earlier epoch
            self.score, self.epoch, self.metrics = score, epoch, metrics
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def seed_epoch(seed: int, epoch: int, loader: Any) -> None:
    """Reseed Python's and torch's RNGs and the loader's generator from (seed, epoch): epoch e draws the same
    batches and augmentations whether the run was resumed or not, and whatever was evaluated in between."""
    seed_everything(seed * 100_003 + epoch + 1_000_003 * distributed.rank())  # ranks augment differently
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(seed * 100_003 + epoch)


def train_one_epoch(model: nn.Module, loader: Any, *, loss_fn: Callable | None, optimizer: torch.optim.Optimizer,
                    scheduler: Schedule, settings: TrainSettings, seconds_before: float = 0.0,
                    desc: str = "train") -> EpochStats:
    """One pass over ``loader``: forward, loss, backward, optimiser step and one scheduler step per batch.

    Stops early once ``seconds_before`` plus this epoch's training time reaches ``settings.max_seconds``. Only
    with ``settings.time_budget`` does the time spent also advance the schedule (``Schedule.time_fraction``).
    """
    task, device, max_seconds = getattr(model, "task", "semantic"), settings.device, settings.max_seconds
    model.train()
    t0, seen, steps, stopped = clock(), 0, 0, False
    loss_sum = torch.zeros((), device=device)  # summed on the device: no host sync per step
    bar = tqdm(loader, desc=desc, leave=False, disable=not settings.progress)
    for batch in bar:
        inputs = prepare_batch(batch, settings.info, device, settings.channels_last, task)
        weight_map = settings.weight_map_fn(batch[1]).to(device) if settings.weight_map_fn is not None else None
        with autocast(device, settings.amp):
            loss, _terms = compute_loss(model, inputs, loss_fn, settings.aux_weight, weight_map)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        scheduler.step()
        seen += inputs.count
        steps += 1
        loss_sum += loss.detach().float()
        elapsed = clock() - t0
        if max_seconds is not None:  # under DDP every rank must stop on the same step, with the same schedule
            elapsed = distributed.from_main(elapsed)
        if settings.time_budget:
            scheduler.time_fraction = (seconds_before + elapsed) / max_seconds
        if steps % 10 == 1 or steps == len(loader):  # reading the loss syncs the device: not every step
            running = float(distributed.reduce_sum(loss_sum)) / (steps * distributed.world_size())
            check_finite(running, desc)  # the mean over ranks: every rank stops together
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}",
                            img_s=f"{seen / max(elapsed, 1e-9):.1f}")
        if max_seconds is not None and seconds_before + elapsed >= max_seconds:
            stopped = True
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = clock() - t0
    mean_loss = float(distributed.reduce_sum(loss_sum)) / (max(steps, 1) * distributed.world_size())
    seen = int(distributed.reduce_sum(torch.tensor(seen, device=device)))  # the images of all ranks
    check_finite(mean_loss, desc)
    return EpochStats(loss=mean_loss, images=seen, steps=steps, seconds=seconds, stopped=stopped)


def check_finite(loss: float, where: str) -> None:
    if not math.isfinite(loss):
        raise SegbenchError(f"loss became {loss} at {where}; lower lr or set grad_clip")


def train(model: nn.Module, loaders: Loaders, *, loss_fn: Callable | None, optimizer: torch.optim.Optimizer,
          scheduler: Schedule, settings: TrainSettings, log: Callable[[str], None] = print) -> TrainResult:
    """Train ``model`` for ``settings.epochs`` epochs (the budget) and leave the selected weights in it.

    Selection: without ``loaders.select`` the final weights are the result; with it, the weights of the epoch
    with the best mIoU on it (scored every ``settings.eval_every`` epochs and at the end, as ``settings.eval``
    says). ``loaders.monitor`` (val) is scored on the same epochs for the curve only (``val_miou`` in
    ``history``), never to choose. ``settings.max_seconds`` is a safety stop (``capped``); the schedule follows
    optimiser steps unless ``settings.time_budget``, the time track, where progress is the larger of the step and
    time fractions of the budget. ``settings.checkpoint_dir/last.pt`` is written after every epoch;
    ``settings.resume`` continues from it exactly (model, optimiser, schedule, counters, RNG states, selection
    state) or, for a finished run, returns its result without training. Resuming without a checkpoint raises
    ``NoCheckpoint`` (a ``SegbenchError``).

    Under torchrun (a process group is up) the model trains in DDP (``settings.sync_bn``: with SyncBatchNorm,
    turned back into BatchNorm at the end); loaders give each rank its part of every batch, evaluation loaders its
    slice of the set, and only rank 0 writes checkpoints. ``TrainResult`` counts the images and loss of all ranks.
    """
    if settings.time_budget and not settings.max_seconds:
        raise SegbenchError("time_budget=True needs max_seconds (the time budget); set max_train_seconds")
    device, epochs, checkpoint_dir = settings.device, settings.epochs, settings.checkpoint_dir
    model.to(device)
    if uses_channels_last(model, settings.channels_last):
        model.to(memory_format=torch.channels_last)
    generator = getattr(loaders.train, "generator", None)
    result, best, finished = TrainResult(), Best(), False
    if settings.resume:  # rank 0 reads the checkpoint and hands it to the others (their nodes need not have it)
        state = distributed.on_main(lambda: read_resume_state(checkpoint_dir, epochs=epochs))
        result, best, finished = restore_training_state(state, model, optimizer, scheduler, generator)
        log(f"resumed from {checkpoint_dir} after epoch {result.epochs_done}" + (", finished" if finished else ""))
    step_model = distributed.wrap_model(model, device=device, sync_bn=settings.sync_bn)
    step_model = torch.compile(step_model) if settings.compile else step_model
    curve = dataclasses.replace(settings.eval, per_image=False, boundary=False)  # a curve needs only mIoU

    for epoch in range(epochs if finished else result.epochs_done, epochs):
        seed_epoch(settings.seed, epoch, loaders.train)
        stats = train_one_epoch(step_model, loaders.train, loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler,
                                settings=settings, seconds_before=result.seconds, desc=f"epoch {epoch + 1}/{epochs}")
        # A limit reached on the budget's very last step stopped nothing: that run is complete, not capped.
        complete = epoch + 1 == epochs and stats.steps == len(loaders.train)
        entry = result.add_epoch(stats, lr=scheduler.get_last_lr()[0], capped=stats.stopped and not complete)
        finished = result.epochs_done == epochs or result.capped
        if result.epochs_done % settings.eval_every == 0 or finished:
            if loaders.select is not None:
                metrics = evaluate(model, loaders.select, info=settings.info, device=device, settings=curve)
                entry["select_miou"] = metrics["miou"]
                best.offer(metrics, result.epochs_done, model)
            if loaders.monitor is not None:
                metrics = evaluate(model, loaders.monitor, info=settings.info, device=device, settings=curve)
                entry.update(val_miou=metrics["miou"], val_pixel_accuracy=metrics["pixel_accuracy"])
        if checkpoint_dir is not None and distributed.is_main_process():
            save_checkpoint(Path(checkpoint_dir) / "last.pt", training_state(
                model, optimizer, scheduler, generator, result, best, epochs=epochs, finished=finished))
        log(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in entry.items() if isinstance(v, float)))
        if result.capped:
            log(f"stopped after {result.seconds:.1f} s by max_train_seconds ({result.steps_done} steps)")
            break
    if settings.sync_bn:
        distributed.unwrap_sync_bn(model)
    return select_weights(model, result, best, holdout=loaders.select is not None)


def select_weights(model: nn.Module, result: TrainResult, best: Best, *, holdout: bool) -> TrainResult:
    """Leave the selected weights in ``model`` and record which they are."""
    if not holdout:
        result.selection, result.selected_epoch = "final", result.epochs_done
        return result
    if best.weights is None:
        raise SegbenchError("no holdout score was recorded (a checkpoint from a run without select_loader?); "
                            "delete the checkpoint to start over")
    model.load_state_dict(best.weights)
    result.selection, result.selected_epoch, result.select_metrics = "holdout", best.epoch, best.metrics
    return result


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Schedule,
                   generator: torch.Generator | None, result: TrainResult, best: Best, *, epochs: int,
                   finished: bool) -> dict[str, Any]:
    """Everything ``train(resume=True)`` needs to continue exactly: the layout of ``last.pt``."""
    return {
        "format": CHECKPOINT_FORMAT, "epochs": epochs, "finished": finished,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "result": dict(vars(result)), "best": dict(vars(best)), "rng": rng_state(generator),
    }


def restore_training_state(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: Schedule, generator: torch.Generator | None) -> tuple[TrainResult, Best, bool]:
    """Load a ``training_state`` back; returns the run's result and selection state so far, and whether it
    had finished (its epoch budget done, or capped)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng_state(state["rng"], generator)
    return TrainResult(**state["result"]), Best(**state["best"]), bool(state["finished"])
