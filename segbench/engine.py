"""The training loop and evaluation, readable top to bottom.

Batches arrive as uint8 from the loaders and are moved to the device, normalised there (``data.transforms
.normalize``: the one place it happens), put in channels_last (semantic models, every device: oneDNN's CPU
convolutions run NHWC natively too) and on CUDA run under bf16 autocast.
Losses and metrics are computed in fp32; the confusion matrix lives on the device.

Semantic loaders yield ``(images uint8 [B,C,H,W], masks int64 [B,H,W])`` (ignore value in masks);
instance loaders yield ``(list[uint8 [C,H,W]], list[target dict])``, each target also carrying its
``"semantic"`` int64 [H,W] mask so every family is scored with the same PA/mPA/mIoU.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import distributed
from .checkpoints import (CHECKPOINT_FORMAT, read_resume_state, restore_rng_state, rng_state,
                          save_checkpoint)
from .data import DatasetInfo
from .data.sharding import first_index, is_sharded
from .data.transforms import normalize
from .device import autocast
from .errors import SegbenchError
from .metrics import ConfusionMatrix, to_semantic
from .models.inference import WHOLE, Evaluation, forward_full, infer
from .optim import Schedule, make_optimizer, make_scheduler  # noqa: F401  (the loop's; callers import them from here)


# ---------------------------------------------------------------- batches on the device

def uses_channels_last(model: nn.Module, channels_last: bool) -> bool:
    """Whether training keeps ``model`` and its batches in channels_last: semantic models when the config asks, on
    every device (measured on the project's 2-core CPU, fp32 train steps: 1.35-1.8x faster than NCHW). Instance
    models stay NCHW (torchvision's detection transform re-batches the images)."""
    return channels_last and getattr(model, "task", "semantic") == "semantic"


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
def evaluate(model: nn.Module, loader: Iterable, *, info: DatasetInfo, device: torch.device, amp: bool = True,
             channels_last: bool = True, eval_size: list[int] | None = None, tile: int | None = None,
             evaluation: Evaluation | None = None, score_threshold: float = 0.5,
             label_to_class: Tensor | None = None, fill: int | None = None, instance_evaluator: Any = None,
             per_image: bool = True, boundary: bool = True, progress: bool = False) -> dict[str, Any]:
    """Dataset-level metrics from one confusion matrix on the device (``ConfusionMatrix.compute``'s dict).

    ``per_image`` also keeps per-image intersection/union counts (for the bootstrap CI of mIoU) and
    ``boundary`` accumulates Boundary IoU; both cost time, so the training loop's curve evaluations skip them.

    Semantic models: run as ``evaluation`` says (whole image by default; sliding window, multi-scale + flip:
    ``models.inference.infer``) at ``eval_size`` (if given), logits resized back to the label's resolution, so
    scores are always at the native label size. Instance models: predictions become a class map with
    :func:`metrics.to_semantic` (highest-scoring mask wins, ``fill`` elsewhere) and, if an
    ``instance_evaluator`` is given, also feed COCO box/mask AP. A DDP-sharded ``loader`` (``data.sharding``)
    scores this rank's slice; the counts of all ranks are then combined, so every rank returns the whole set's.
    """
    model.eval()
    cm = confusion_matrix(info, device, per_image=per_image, boundary=boundary)
    if getattr(model, "task", "semantic") == "instance":
        fill = (info.background_index or 0) if fill is None else fill
        step = partial(instance_eval_step, amp=amp, score_threshold=score_threshold, label_to_class=label_to_class,
                       fill=fill, evaluator=instance_evaluator)
    else:
        step = partial(semantic_eval_step, amp=amp, channels_last=channels_last, eval_size=eval_size, tile=tile,
                       evaluation=evaluation)
    seen = first_index(loader)  # image ids of a DDP shard continue the previous ranks' ones
    for batch in tqdm(loader, desc="eval", leave=False, disable=not progress):
        seen += step(model, batch, cm, info=info, device=device, first_id=seen)
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


def semantic_eval_step(model: nn.Module, batch: Any, cm: ConfusionMatrix, *, info: DatasetInfo, device: torch.device,
                       first_id: int, amp: bool, channels_last: bool, eval_size: list[int] | None,
                       tile: int | None, evaluation: Evaluation | None = None) -> int:
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
        x = to_device_images(imgs, info, device, channels_last)
        target = msk.to(device, non_blocking=True)
        logits = predict_logits(model, x, out_size=tuple(target.shape[-2:]), eval_size=eval_size, tile=tile,
                                evaluation=evaluation, device=device, amp=amp)
        cm.update(logits.argmax(1), target)
        count += imgs.shape[0]
    return count


def instance_eval_step(model: nn.Module, batch: Any, cm: ConfusionMatrix, *, info: DatasetInfo, device: torch.device,
                       first_id: int, amp: bool, score_threshold: float, label_to_class: Tensor | None,
                       fill: int, evaluator: Any) -> int:
    """Score one instance batch: class maps into ``cm`` and, if given, detections into the COCO ``evaluator``
    (images numbered from ``first_id``). Returns the number of images."""
    inputs = prepare_batch(batch, info, device, False, "instance")
    with autocast(device, amp):
        preds = model(inputs.images)
    for pred, target in zip(preds, inputs.targets):
        h, w = target["semantic"].shape
        sem = to_semantic(pred, info.num_classes, h, w, score_threshold=score_threshold,
                          label_to_class=label_to_class, fill=fill)
        cm.update(sem[None], target["semantic"][None])  # batched [1,H,W]: one image for the per-image counts
    if evaluator is not None:
        ids = list(range(first_id, first_id + len(preds)))
        evaluator.update([{k: v.float().cpu() for k, v in p.items()} for p in preds],
                         [{k: v.cpu() for k, v in t.items() if k != "semantic"} for t in inputs.targets], ids)
    return len(preds)

def predict_logits(model: nn.Module, x: Tensor, *, out_size: tuple[int, int], eval_size: list[int] | None = None,
                   tile: int | None = None, evaluation: Evaluation | None = None, device: torch.device | None = None,
                   amp: bool = True) -> Tensor:
    """float32 class scores [B,K,out_H,out_W] for normalised input ``x`` [B,C,H,W]: resize to ``eval_size``, run as
    ``evaluation`` says (default whole image: the logits; with TTA: log mean probabilities), resize back. Scoring
    stays fp32 on the CPU (bf16 autocast on CUDA only); the predict path's CPU bf16 is ``predict.Predictor``'s."""
    device = device or x.device
    if eval_size is not None and tuple(x.shape[-2:]) != tuple(eval_size):
        x = F.interpolate(x, size=tuple(eval_size), mode="bilinear", align_corners=False, antialias=True)
    if x.ndim == 4 and device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, amp):
        return infer(model, x, evaluation or WHOLE, out_size=out_size, tile=tile)


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


def train_one_epoch(model: nn.Module, loader: Any, *, info: DatasetInfo, loss_fn: Callable | None,
                    optimizer: torch.optim.Optimizer, scheduler: Schedule, device: torch.device, amp: bool = True,
                    channels_last: bool = True, aux_weight: float = 0.4, grad_clip: float | None = None,
                    weight_map_fn: Callable | None = None, max_seconds: float | None = None,
                    seconds_before: float = 0.0, time_budget: bool = False, desc: str = "train",
                    progress: bool = False) -> EpochStats:
    """One pass over ``loader``: forward, loss, backward, optimiser step and one scheduler step per batch.

    Stops early once ``seconds_before`` plus this epoch's training time reaches ``max_seconds``. Only with
    ``time_budget`` does the time spent also advance the schedule (``Schedule.time_fraction``).
    """
    task = getattr(model, "task", "semantic")
    model.train()
    t0, seen, steps, stopped = clock(), 0, 0, False
    loss_sum = torch.zeros((), device=device)  # summed on the device: no host sync per step
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    for batch in bar:
        inputs = prepare_batch(batch, info, device, channels_last, task)
        weight_map = weight_map_fn(batch[1]).to(device) if weight_map_fn is not None else None
        with autocast(device, amp):
            loss, _terms = compute_loss(model, inputs, loss_fn, aux_weight, weight_map)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        seen += inputs.count
        steps += 1
        loss_sum += loss.detach().float()
        elapsed = clock() - t0
        if max_seconds is not None:  # under DDP every rank must stop on the same step, with the same schedule
            elapsed = distributed.from_main(elapsed)
        if time_budget:
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


def train(model: nn.Module, *, train_loader: Any, select_loader: Iterable | None = None,
          monitor_loader: Iterable | None = None, info: DatasetInfo, loss_fn: Callable | None,
          optimizer: torch.optim.Optimizer, scheduler: Schedule, device: torch.device, epochs: int,
          eval_every: int = 1, grad_clip: float | None = None, amp: bool = True, channels_last: bool = True,
          compile: bool = False, aux_weight: float = 0.4, max_seconds: float | None = None,
          time_budget: bool = False, checkpoint_dir: Path | None = None, resume: bool = False, seed: int = 0,
          eval_kwargs: dict[str, Any] | None = None, weight_map_fn: Callable | None = None,
          sync_bn: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> TrainResult:
    """Train ``model`` for ``epochs`` epochs (the budget) and leave the selected weights in it.

    Selection: without ``select_loader`` the final weights are the result; with it, the weights of the epoch
    with the best mIoU on it (scored every ``eval_every`` epochs and at the end). ``monitor_loader`` (val) is
    scored on the same epochs for the curve only (``val_miou`` in ``history``), never to choose.
    ``max_seconds`` is a safety stop (``capped``); the schedule follows optimiser steps unless ``time_budget``,
    the time track, where progress is the larger of the step and time fractions of the budget.
    ``checkpoint_dir/last.pt`` is written after every epoch; ``resume=True`` continues from it exactly (model,
    optimiser, schedule, counters, RNG states, selection state) or, for a finished run, returns its result
    without training. Resuming without a checkpoint raises ``NoCheckpoint`` (a ``SegbenchError``).

    Under torchrun (a process group is up) the model trains in DDP (``sync_bn``: with SyncBatchNorm, turned back
    into BatchNorm at the end); loaders give each rank its part of every batch, evaluation loaders its slice of the
    set, and only rank 0 writes checkpoints. ``TrainResult`` counts the images and loss of all ranks.
    """
    if time_budget and not max_seconds:
        raise SegbenchError("time_budget=True needs max_seconds (the time budget); set max_train_seconds")
    model.to(device)
    if uses_channels_last(model, channels_last):
        model.to(memory_format=torch.channels_last)
    generator = getattr(train_loader, "generator", None)
    result, best, finished = TrainResult(), Best(), False
    if resume:  # rank 0 reads the checkpoint and hands it to the others (their nodes need not have it)
        state = distributed.on_main(lambda: read_resume_state(checkpoint_dir, epochs=epochs))
        result, best, finished = restore_training_state(state, model, optimizer, scheduler, generator)
        log(f"resumed from {checkpoint_dir} after epoch {result.epochs_done}" + (", finished" if finished else ""))
    step_model = distributed.wrap_model(model, device=device, sync_bn=sync_bn)
    step_model = torch.compile(step_model) if compile else step_model
    score = partial(evaluate, info=info, device=device, amp=amp, channels_last=channels_last,
                    **{"per_image": False, "boundary": False, **(eval_kwargs or {})})  # a curve needs only mIoU

    for epoch in range(epochs if finished else result.epochs_done, epochs):
        seed_epoch(seed, epoch, train_loader)
        stats = train_one_epoch(step_model, train_loader, info=info, loss_fn=loss_fn, optimizer=optimizer,
                                scheduler=scheduler, device=device, amp=amp, channels_last=channels_last,
                                aux_weight=aux_weight, grad_clip=grad_clip, weight_map_fn=weight_map_fn,
                                max_seconds=max_seconds, seconds_before=result.seconds, time_budget=time_budget,
                                desc=f"epoch {epoch + 1}/{epochs}", progress=progress)
        # A limit reached on the budget's very last step stopped nothing: that run is complete, not capped.
        complete = epoch + 1 == epochs and stats.steps == len(train_loader)
        entry = result.add_epoch(stats, lr=scheduler.get_last_lr()[0], capped=stats.stopped and not complete)
        finished = result.epochs_done == epochs or result.capped
        if result.epochs_done % eval_every == 0 or finished:
            if select_loader is not None:
                metrics = score(model, select_loader)
                entry["select_miou"] = metrics["miou"]
                best.offer(metrics, result.epochs_done, model)
            if monitor_loader is not None:
                metrics = score(model, monitor_loader)
                entry.update(val_miou=metrics["miou"], val_pixel_accuracy=metrics["pixel_accuracy"])
        if checkpoint_dir is not None and distributed.is_main_process():
            save_checkpoint(Path(checkpoint_dir) / "last.pt", training_state(
                model, optimizer, scheduler, generator, result, best, epochs=epochs, finished=finished))
        log(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in entry.items() if isinstance(v, float)))
        if result.capped:
            log(f"stopped after {result.seconds:.1f} s by max_train_seconds ({result.steps_done} steps)")
            break
    if sync_bn:
        distributed.unwrap_sync_bn(model)
    return select_weights(model, result, best, holdout=select_loader is not None)


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
