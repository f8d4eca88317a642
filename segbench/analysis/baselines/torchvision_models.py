"""Our FCN-ResNet50 / DeepLab v3 (ResNet-50, output stride 8) against torchvision's own, in one run.

Both models: 21 classes, random weights, no auxiliary head, same input, same settings. On CUDA: bf16 autocast,
channels_last, optional ``torch.compile``, and MFU = counted FLOPs / time / peak bf16 FLOPs of the card.
GMACs come from ``speed.count_gmacs`` on a copy of the model on the meta device (no compute; torchvision's
convention, the number its weight tables call GFLOPS); FLOPs = 2 x MACs, and a training step counts 3x the
forward (backward = 2x). Note that torchvision's DeepLabHead has an extra 3x3x256 conv that the
paper's head (and ours) does not, so its model does ~0.6M parameters and a few GMACs more work.

DeepLab v3 is measured twice: ``ours`` as the paper builds it (multi-grid (1, 2, 4) in layer4, i.e. dilations
4/8/16 at output stride 8) and ``ours_same_layout`` with torchvision's layer4 (dilation 4 in every block). The two
have the same parameters and FLOPs; on CPUs oneDNN runs the dilation-16 convolutions slower, so only the second is
the equal-settings comparison there.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ...errors import SegbenchError
from ...evaluation.speed import count_gmacs, count_params
from ...models.deeplab import deeplabv3
from ...models.fcn import fcn_resnet50
from .train_loop import PEAK_TFLOPS

NUM_CLASSES = 21

# name -> {tag: builder}; "torchvision" is the baseline every other tag is compared with.
_PAIRS: dict[str, dict[str, Callable[[], nn.Module]]] = {
    "fcn_resnet50": {
        "ours": lambda: fcn_resnet50(num_classes=NUM_CLASSES),
        "torchvision": lambda: torchvision.models.segmentation.fcn_resnet50(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES
        ),
    },
    "deeplabv3": {
        "ours": lambda: deeplabv3(num_classes=NUM_CLASSES, backbone="resnet50", output_stride=8),
        "ours_same_layout": lambda: deeplabv3(num_classes=NUM_CLASSES, backbone="resnet50", output_stride=8,
                                              multi_grid=None),
        "torchvision": lambda: torchvision.models.segmentation.deeplabv3_resnet50(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES
        ),
    },
}


def _step_seconds(step: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def bench_vs_torchvision(
    name: str,
    *,
    device: str = "cpu",
    size: int = 512,
    batch: int = 2,
    steps: int = 3,
    compile: bool = False,
    bf16: bool | None = None,
) -> dict[str, float | int | str | bool | None]:
    """Inference and training images/s of ours vs torchvision's ``name`` ("fcn_resnet50" or "deeplabv3").

    Inputs: float32 [batch,3,size,size] noise, int64 targets in [0,21). ``bf16=None`` means on for CUDA.
    Returns flat numbers: ``{tag}_{params,gmacs,infer_images_per_s,train_images_per_s,infer_mfu,train_mfu}`` for
    each tag (``ours``, ``torchvision``, and ``ours_same_layout`` for deeplabv3; MFU None off a known GPU),
    ``infer_ratio``/``train_ratio`` = ours / torchvision and ``{tag}_{phase}_ratio`` for the other tags.
    """
    if name not in _PAIRS:
        raise SegbenchError(f"bench_vs_torchvision: unknown model '{name}'; use one of {', '.join(_PAIRS)}")
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    bf16 = cuda if bf16 is None else bf16
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    device_name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None) if cuda and bf16 else None
    warmup = 3 if compile else 1

    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=dev).contiguous(memory_format=memory_format)
    target = torch.randint(0, NUM_CLASSES, (batch, size, size), device=dev)
    result: dict[str, float | int | str | bool | None] = {
        "model": name, "device": device_name, "size": size, "batch": batch, "steps": steps, "bf16": bf16,
        "channels_last": cuda, "compile": compile,
    }
    models, runs, optimizers = _prepare(name, dev, memory_format, size=size, compile=compile, result=result)

    @torch.no_grad()
    def infer(tag: str) -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            runs[tag](x)

    def train(tag: str) -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = runs[tag](x)["out"]
        loss = F.cross_entropy(logits.float(), target)
        optimizers[tag].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[tag].step()

    for phase, step in (("infer", infer), ("train", train)):
        _time_phase(phase, step, models, PhaseTiming(dev, batch=batch, steps=steps, warmup=warmup, peak=peak), result)
    _ratios(models, result)
    return result


def _prepare(name: str, dev: torch.device, memory_format: torch.memory_format, *, size: int, compile: bool,
             result: dict) -> tuple[dict, dict, dict]:
    """Build each model of the pair (params and GMACs into ``result``), its runner and its optimiser."""
    models, runs, optimizers = {}, {}, {}
    for tag, build in _PAIRS[name].items():
        torch.manual_seed(0)
        model = build()
        result[f"{tag}_params"] = count_params(model)
        result[f"{tag}_gmacs"] = count_gmacs(
            copy.deepcopy(model).to("meta"), in_channels=3, size=(size, size), device="meta"
        )["gmacs"]
        models[tag] = model.to(dev, memory_format=memory_format)
        runs[tag] = torch.compile(model) if compile else model
        optimizers[tag] = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return models, runs, optimizers


@dataclass(frozen=True)
class PhaseTiming:
    """How a phase is timed: ``steps`` timed steps of ``batch`` images after ``warmup`` untimed ones on ``device``;
    ``peak``: the card's dense bf16 TFLOPS for MFU (None: no MFU)."""

    device: torch.device
    batch: int
    steps: int
    warmup: int
    peak: float | None


def _time_phase(phase: str, step: Callable[[str], None], models: dict, timing: PhaseTiming, result: dict) -> None:
    """images/s (and MFU on a known GPU) of every model for one phase, the models alternating step by step."""
    dev, batch, steps, warmup, peak = timing.device, timing.batch, timing.steps, timing.warmup, timing.peak
    seconds: dict[str, list[float]] = {tag: [] for tag in models}
    for tag, model in models.items():
        model.train(phase == "train")
        try:
            for _ in range(warmup):
                step(tag)
        except ValueError as exc:  # torchvision's image pooling cannot train at batch size 1
            result[f"{tag}_{phase}_error"] = str(exc).splitlines()[0]
            del seconds[tag]
    # Alternate the models step by step so that load from other processes hits both alike.
    for _ in range(steps):
        for tag in seconds:
            seconds[tag].append(_step_seconds(lambda: step(tag), dev))
    for tag in models:
        per_s = batch / statistics.median(seconds[tag]) if tag in seconds else None
        flops = 2 * result[f"{tag}_gmacs"] * 1e9 * (3 if phase == "train" else 1)  # backward = 2x forward
        result[f"{tag}_{phase}_images_per_s"] = per_s
        result[f"{tag}_{phase}_mfu"] = flops * per_s / (peak * 1e12) if peak and per_s else None


def _ratios(models: dict, result: dict) -> None:
    for phase in ("infer", "train"):
        theirs = result[f"torchvision_{phase}_images_per_s"]
        for tag in models:
            if tag == "torchvision":
                continue
            ours = result[f"{tag}_{phase}_images_per_s"]
            key = f"{phase}_ratio" if tag == "ours" else f"{tag}_{phase}_ratio"
            result[key] = ours / theirs if ours and theirs else None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(_PAIRS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    print(json.dumps(bench_vs_torchvision(**vars(args)), indent=1))
