"""Efficiency figures of a result record: parameters, GMACs, latency (forward and end to end).

GMACs follow the convention torchvision, fvcore and ptflops publish under the name "GFLOPS": one multiply-add is
one MAC, GMACs = MACs / 1e9 (``FlopCounterMode`` counts a multiply-add as 2 FLOPs, so its total is halved).
Only convolutions and matrix products count (no BatchNorm, activations, pooling, resizing, RoIAlign or NMS).
The auxiliary head is not in ``gmacs``; ``gmacs_aux`` adds it (None without one). Reference points:
torchvision ResNet-50 at 224 x 224 = 4.09, FCN-ResNet50 at 520 x 520 = 142.7 (152.7 with its aux head).

Semantic models are measured on a random uint8 image of the evaluation size (their cost depends on the size
only). Mask R-CNN's cost depends on how many detections reach the mask head, and noise gives any number of them,
so instance models are measured on a fixed list of real validation images (``first_images``), averaged over the
list, with the mean number of detections recorded next to the figures.

Latency (batch 1, ``runs`` timed passes over the inputs after ``warmup`` untimed ones, CUDA synchronised; each
pass gives the mean time per image; the record holds the median pass and the standard deviation across passes):

- ``forward_ms``: the model's forward on an input already normalised on the device, at the evaluation size;
- ``end_to_end_ms``: ``predict.Predictor`` -- the path of ``segbench predict`` and the app -- from a uint8 host
  image: to the device, normalise, resize to the evaluation size, forward, resize back + argmax (semantic) or
  mask paste + ``to_semantic`` (instance), class map (and instances) copied back to the host. Decoding the image
  file is excluded. Both run in the precision the predict path uses (``Predictor.precision``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ..data.info import DatasetInfo
from ..data.transforms import normalize
from ..device import device_name
from ..errors import SegbenchError
from ..models.inference import forward_full
from ..records.columns import END_TO_END_SCOPE, FOLDED, FORWARD_SCOPE, MACS_CONVENTION
from ..weights.meta import WeightsMeta

SYNTHETIC_INPUTS = "random"
LATENCY_IMAGES = 4  # real validation images an instance model is measured on


# ---------------------------------------------------------------- parameters, aux head, inputs

def count_params(model: nn.Module) -> int:
    """All parameters of ``model`` (an aux head included, as stored in its weights)."""
    return sum(p.numel() for p in model.parameters())


def aux_head(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The auxiliary head and its attribute name: segbench's ``aux`` or torchvision's ``aux_classifier``."""
    for name in ("aux", "aux_classifier"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return name, head
    return None


def is_instance(model: nn.Module) -> bool:
    return getattr(model, "task", "semantic") == "instance"


def first_images(dataset: Any, count: int = LATENCY_IMAGES) -> tuple[list[Tensor], str]:
    """The first ``count`` images (uint8 [C,H,W]) of a dataset whose items start with the image, and the label
    that names them in the record (``"val images [0..3] (4)"``). Fixed and ordered, so reruns see the same set."""
    n = min(count, len(dataset))
    if n < 1:
        raise SegbenchError("first_images: the dataset is empty; efficiency needs at least one validation image")
    return [dataset[i][0] for i in range(n)], images_label(n)


def images_label(n: int, start: int = 0) -> str:
    return f"val images [{start}..{start + n - 1}] ({n})"


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise SegbenchError(f"efficiency: size={size!r}; use a positive int or [H, W] of positive ints (the eval size)")
    return pair


def _check_runs(runs: int) -> None:
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise SegbenchError(f"efficiency: runs={runs!r}; use an integer >= 1 (latency_runs in the config)")


def _stats(info: DatasetInfo | None, channels: int) -> tuple[list[float], list[float]]:
    """The dataset's normalisation mean/std, or 0.5/0.25 per channel when no dataset is given."""
    if info is None:
        return [0.5] * channels, [0.25] * channels
    return list(info.mean), list(info.std)


def _normalised(images: Sequence[Tensor], info: DatasetInfo | None, device: torch.device) -> list[Tensor]:
    """uint8 [C,H,W] images -> float32 [1,C,H,W] on the device, normalised with the dataset's mean/std."""
    return [normalize(img[None].to(device), *_stats(info, img.shape[0])) for img in images]


# ---------------------------------------------------------------- GMACs

def _count(fn: Callable[[], Any]) -> tuple[float, dict[str, float]]:
    """MACs of one call and per module (keys as FlopCounterMode names them: ``RootClass.attr.path``)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    per_module = {name: sum(ops.values()) / 2 for name, ops in counter.get_flop_counts().items()}
    return counter.get_total_flops() / 2, per_module


@torch.no_grad()
def count_gmacs(model: nn.Module, *, in_channels: int, size: int | Sequence[int], device: torch.device | str = "cpu",
                tile: int | None = None, images: Sequence[Tensor] | None = None,
                info: DatasetInfo | None = None) -> dict[str, float | None]:
    """GMACs of one batch-1 forward in eval mode: ``{"gmacs": without the aux head, "gmacs_aux": with it or None,
    "mean_detections": detections per image (instance models; None for semantic ones)}``.

    Semantic models: a float [1, in_channels, *size] input (the meta device works: no compute). Instance models:
    the mean over ``images`` (uint8 [C,H,W], normalised with ``info``'s mean/std), or one noise image of ``size``
    when none are given (then the figure depends on what the noise triggers). Leaves the model in eval mode.
    """
    size, device = _size(size), torch.device(device)
    model.eval()
    if is_instance(model):
        inputs = _normalised(images, info, device) if images else [torch.rand(1, in_channels, *size, device=device)]
        macs, detections = [], []
        for x in inputs:
            preds: list[dict[str, Tensor]] = []
            macs.append(_count(lambda: preds.extend(model([x[0]])))[0])
            detections.append(len(preds[0]["boxes"]))
        return {"gmacs": statistics.mean(macs) / 1e9, "gmacs_aux": None,
                "mean_detections": statistics.mean(detections)}
    x = torch.rand(1, in_channels, *size, device=device)
    head = aux_head(model)
    if head is None:
        return {"gmacs": _count(lambda: forward_full(model, x, tile=tile))[0] / 1e9, "gmacs_aux": None,
                "mean_detections": None}
    # segbench models run their aux head only in training mode: flip the top-level flag alone, so that
    # BatchNorm and dropout stay in eval (running statistics untouched); torchvision's always run it.
    model.training = True
    try:
        total, per_module = _count(lambda: forward_full(model, x, tile=tile))
    finally:
        model.training = False
    aux = per_module.get(f"{type(model).__name__}.{head[0]}")
    if aux is None:  # the head exists but this forward never called it
        return {"gmacs": total / 1e9, "gmacs_aux": None, "mean_detections": None}
    return {"gmacs": (total - aux) / 1e9, "gmacs_aux": total / 1e9, "mean_detections": None}


# ---------------------------------------------------------------- latency

@dataclass(frozen=True)
class Timing:
    """How latency is timed: batch 1 on ``device``, ``runs`` timed passes over the inputs after ``warmup`` untimed
    ones; ``amp``: the predict path's fast settings (folded BatchNorm, channels_last, bf16 where native)."""

    device: torch.device | str = "cpu"
    runs: int = 10
    warmup: int = 2
    amp: bool = True


def timed_ms(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(milliseconds, result) of one call of ``fn``, synchronised on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1000, out


def predict_meta(model: nn.Module, *, in_channels: int, info: DatasetInfo | None = None,
                 eval_size: Sequence[int] | None = None, tile: int | None = None) -> WeightsMeta:
    """The model.json fields ``Predictor`` needs, for a model in memory (the runner passes its own meta instead)."""
    mean, std = _stats(info, in_channels)
    # Without a dataset every detector label is its own class (the class map is only timed, not scored).
    box_predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    labels = box_predictor.cls_score.out_features if box_predictor is not None else 1
    classes = info.num_classes if info is not None else labels
    return WeightsMeta(task=getattr(model, "task", "semantic"), in_channels=in_channels, mean=tuple(mean),
                       std=tuple(std), num_classes=classes, semantic_classes=classes,
                       eval_size=tuple(eval_size) if eval_size is not None else None, eval_tile=tile,
                       score_threshold=0.5, fill=info.background_index if info is not None else 0)


@torch.inference_mode()
def measure_latency(model: nn.Module, *, in_channels: int, size: int | Sequence[int], timing: Timing = Timing(),
                    images: Sequence[Tensor] | None = None, meta: WeightsMeta | None = None) -> dict[str, Any]:
    """Forward and end-to-end latency (module docstring) on ``images`` or one random uint8 image of ``size``, timed
    as ``timing`` says.

    Returns ``forward_ms``, ``forward_ms_std``, ``end_to_end_ms``, ``end_to_end_ms_std`` (ms per image),
    ``precision`` ("bf16" | "fp32"), ``batchnorm_folded`` (BatchNorm layers the fast path folded into their
    convolutions, ``models.fold``) and ``mean_detections`` (instance models: detections per image the model
    returns, which drive the mask head's cost; None for semantic models). ``meta``: the model.json the weights
    were saved with (default: ``predict_meta`` of the model alone: no dataset statistics, its own size). The
    model's memory format is restored afterwards.
    """
    from ..inference.predict import Predictor  # predict imports this package's models; keep speed importable alone

    size, device, warmup = _size(size), torch.device(timing.device), timing.warmup
    _check_runs(timing.runs)
    if images is not None and len(images) == 0:
        raise SegbenchError("measure_latency: images is empty; pass at least one uint8 [C,H,W] image or None")
    meta = meta or predict_meta(model, in_channels=in_channels)
    host = list(images) if images else [torch.randint(0, 256, (in_channels, *size), dtype=torch.uint8,
                                                      generator=torch.Generator().manual_seed(0))]
    predictor = Predictor.from_model(model, meta, device=device, fast=timing.amp)
    try:
        prepared = [predictor.prepare(img) for img in host]
        forward, end_to_end, detections = [], [], []
        for i in range(warmup + timing.runs):
            per_image_forward, per_image_e2e = [], []
            for image, x in zip(host, prepared):  # interleaved, so load from other processes hits both alike
                ms, out = timed_ms(lambda: predictor.forward(x), device)
                per_image_forward.append(ms)
                per_image_e2e.append(timed_ms(lambda: predictor(image), device)[0])
                if i == warmup and predictor.task == "instance":
                    detections.append(len(out["boxes"]))
            if i >= warmup:
                forward.append(statistics.mean(per_image_forward))
                end_to_end.append(statistics.mean(per_image_e2e))
    finally:
        if predictor.channels_last:
            model.to(memory_format=torch.contiguous_format)
    return {"forward_ms": statistics.median(forward), "forward_ms_std": _std(forward),
            "end_to_end_ms": statistics.median(end_to_end), "end_to_end_ms_std": _std(end_to_end),
            "precision": predictor.precision, "batchnorm_folded": predictor.folded_batchnorm,
            "mean_detections": statistics.mean(detections) if detections else None}


def _std(values: list[float]) -> float:
    return statistics.pstdev(values) if len(values) > 1 else 0.0


# ---------------------------------------------------------------- the record's efficiency block

def measure_efficiency(model: nn.Module, *, in_channels: int, size: int | Sequence[int], timing: Timing,
                       images: Sequence[Tensor] | None = None, info: DatasetInfo | None = None,
                       meta: WeightsMeta | None = None, inputs: str | None = None) -> dict[str, Any]:
    """The record's ``efficiency`` dict (schema 2): params, gmacs, gmacs_aux, macs_convention, macs_input,
    receptive_field, output_stride, latency{...}.

    ``size``: the evaluation size [H, W]; ``images``: real validation images (uint8 [C,H,W], e.g. from
    ``first_images``) -- required for instance models, optional for semantic ones (their MACs use ``size``);
    ``inputs``: how the record names them (default ``"val images [0..N-1] (N)"``); ``meta``: the model.json of
    the weights (or ``predict_meta``), so end-to-end runs exactly as ``segbench predict`` and GMACs count its
    ``eval_tile`` (default ``predict_meta`` from ``info``: whole image at ``size``).
    """
    size, device = _size(size), torch.device(timing.device)
    _check_runs(timing.runs)
    meta = meta or predict_meta(model, in_channels=in_channels, info=info)
    tile = meta.eval_tile
    instance = is_instance(model)
    if instance and not images:
        raise SegbenchError("measure_efficiency: instance models are measured on real images; pass "
                            "images=first_images(<val dataset>)[0] (noise makes Mask R-CNN's cost arbitrary)")
    macs = count_gmacs(model, in_channels=in_channels, size=size, device=device, tile=tile,
                       images=images if instance else None, info=info)
    latency = measure_latency(model, in_channels=in_channels, size=size, timing=timing, images=images, meta=meta)
    shapes = {tuple(img.shape[-2:]) for img in images} if images else set()
    image_size = list(shapes.pop()) if instance and len(shapes) == 1 else list(size)
    return {
        "params": count_params(model), "gmacs": round(macs["gmacs"], 4),
        "gmacs_aux": round(macs["gmacs_aux"], 4) if macs["gmacs_aux"] is not None else None,
        "macs_convention": MACS_CONVENTION, "macs_input": [in_channels, *image_size],
        "receptive_field": None if instance else _receptive_field(model, in_channels, size, device),
        "output_stride": getattr(model, "output_stride", None),
        "latency": {
            "device": device_name(device), "batch_size": 1, "image_size": image_size,
            "precision": latency["precision"],
            **{key: round(latency[key], 3) for key in ("forward_ms", "forward_ms_std", "end_to_end_ms",
                                                       "end_to_end_ms_std")},
            "forward_scope": FORWARD_SCOPE + (FOLDED if latency["batchnorm_folded"] else ""),
            "end_to_end_scope": END_TO_END_SCOPE, "batchnorm_folded": latency["batchnorm_folded"],
            "inputs": inputs or (images_label(len(images)) if images else SYNTHETIC_INPUTS),
            "mean_detections": latency["mean_detections"],
        },
    }


def _receptive_field(model: nn.Module, in_channels: int, size: tuple[int, int], device: torch.device) -> int:
    """Theoretical receptive field (px) on an unbounded input, or at ``size`` if that was not reached."""
    from ..analysis.receptive_field import receptive_field

    try:
        found = receptive_field(model.cpu(), input_size=(in_channels, *size))
    finally:
        model.to(device)
    return int(found["theoretical_receptive_field"] or found["receptive_field"])
