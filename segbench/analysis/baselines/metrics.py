"""Time ``segbench.evaluation.metrics.ConfusionMatrix`` against torchmetrics' ``MulticlassJaccardIndex`` on the same data, the
bootstrap CI of mIoU over images, and the Boundary IoU pass (against a scipy version of the reference definition)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from segbench.errors import SegbenchError
from segbench.evaluation.metrics import ConfusionMatrix, bootstrap_miou_ci, boundary_dilation, paired_bootstrap


def bench_confusion_matrix(
    *,
    updates: int = 100,
    size: int = 512,
    num_classes: int = 21,
    ignore_fraction: float = 0.1,
    device: str = "cpu",
    seed: int = 0,
) -> dict:
    """Accumulate ``updates`` random class maps ``[1, size, size]`` in both metrics and time each (seconds).

    All data is generated on ``device`` before timing; each metric gets one warm-up update (then a reset), and the
    timed region ends with ``compute()`` (and a CUDA synchronize on GPU). A fraction ``ignore_fraction`` of target
    pixels is 255. torchmetrics runs with its defaults (argument validation on, macro average) plus
    ``ignore_index=255``. Returns seconds for each, the speedup, both mIoUs and their absolute difference, plus
    ``bootstrap`` (``bench_bootstrap()``) and ``boundary`` (``bench_boundary`` at this size and class count).
    """
    try:
        from torchmetrics.classification import MulticlassJaccardIndex
    except ImportError:
        raise SegbenchError("torchmetrics is not installed; pip install torchmetrics") from None

    dev = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    shape = (updates, 1, size, size)
    preds = torch.randint(0, num_classes, shape, generator=gen).to(dev)
    targets = torch.randint(0, num_classes, shape, generator=gen)
    targets[torch.rand(shape, generator=gen) < ignore_fraction] = 255
    targets = targets.to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    ours = ConfusionMatrix(num_classes, ignore_index=255, device=dev)
    ours.update(preds[0], targets[0])
    ours.reset()
    sync()
    start = time.perf_counter()
    for pred, target in zip(preds, targets):
        ours.update(pred, target)
    miou_ours = ours.compute()["miou"]
    sync()
    ours_s = time.perf_counter() - start

    theirs = MulticlassJaccardIndex(num_classes, ignore_index=255).to(dev)
    theirs.update(preds[0], targets[0])
    theirs.reset()
    sync()
    start = time.perf_counter()
    for pred, target in zip(preds, targets):
        theirs.update(pred, target)
    miou_theirs = float(theirs.compute())
    sync()
    theirs_s = time.perf_counter() - start

    return {
        "ours_s": ours_s,
        "torchmetrics_s": theirs_s,
        "speedup": theirs_s / ours_s,
        "miou_ours": miou_ours,
        "miou_torchmetrics": miou_theirs,
        "abs_diff": abs(miou_ours - miou_theirs),
        "device": str(dev),
        "updates": updates,
        "size": size,
        "num_classes": num_classes,
        "bootstrap": bench_bootstrap(num_classes=num_classes, seed=seed),
        "boundary": bench_boundary(size=size, num_classes=num_classes, device=device, seed=seed),
    }


def bench_bootstrap(*, images: int = 500, num_classes: int = 21, resamples: int = 1000, seed: int = 0) -> dict:
    """Seconds for ``bootstrap_miou_ci`` and ``paired_bootstrap`` on random per-image counts ``[images, K]``
    (best of 3 runs each; the bootstrap always runs on the CPU, in float64)."""
    gen = torch.Generator().manual_seed(seed)
    union = torch.randint(1_000, 100_000, (images, num_classes), generator=gen)
    inter = (union * torch.rand(images, num_classes, generator=gen)).long()
    other = (inter * 0.99).long()

    def best(fn) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    return {
        "ci_s": best(lambda: bootstrap_miou_ci(inter, union, resamples=resamples)),
        "paired_s": best(lambda: paired_bootstrap(inter, union, other, union, resamples=resamples)),
        "images": images,
        "num_classes": num_classes,
        "resamples": resamples,
    }


def bench_boundary(
    *, updates: int = 5, size: int = 512, num_classes: int = 21, device: str = "cpu", seed: int = 0
) -> dict:
    """Seconds per image for ``ConfusionMatrix`` with and without ``boundary=True`` on blocky random class maps
    ``[1, size, size]`` (``updates`` of them), and for the same Boundary IoU written as the reference does it:
    per class, scipy ``binary_erosion`` with a 3x3 structure ``d`` times on the zero-padded mask (on the CPU,
    first image only). Also checks that both give the same per-class Boundary IoU on that image."""
    from scipy import ndimage

    dev = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    coarse = torch.randint(0, num_classes, (updates, 1, size // 16, size // 16), generator=gen).float()
    targets = torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].long()
    noise = torch.randint(0, num_classes, targets.shape, generator=gen)
    preds = torch.where(torch.rand(targets.shape, generator=gen) < 0.05, noise, targets.roll(3, dims=2))
    targets, preds = targets.to(dev), preds.to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def per_image(boundary: bool) -> tuple[float, ConfusionMatrix]:
        cm = ConfusionMatrix(num_classes, device=dev, boundary=boundary)
        cm.update(preds[:1], targets[:1])  # warm-up
        cm.reset()
        sync()
        start = time.perf_counter()
        for pred, target in zip(preds, targets):
            cm.update(pred[None], target[None])
        sync()
        return (time.perf_counter() - start) / updates, cm

    plain_s, _ = per_image(False)
    boundary_s, _ = per_image(True)
    single = ConfusionMatrix(num_classes, device=dev, boundary=True)
    single.update(preds[:1], targets[:1])
    ours = single.compute()["boundary_iou"]

    d = boundary_dilation(size, size)
    target, pred = targets[0].cpu().numpy(), preds[0].cpu().numpy()
    start = time.perf_counter()
    reference = []
    for c in range(num_classes):
        rings = []
        for mask in (target == c, pred == c):
            eroded = ndimage.binary_erosion(np.pad(mask, 1), np.ones((3, 3)), iterations=d, border_value=1)
            rings.append(mask & ~eroded[1:-1, 1:-1])
        union = (rings[0] | rings[1]).sum()
        reference.append((rings[0] & rings[1]).sum() / union if union else math.nan)
    scipy_s = time.perf_counter() - start
    same = all((math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-12 for a, b in zip(ours, reference))
    return {
        "update_s_per_image": plain_s,
        "update_with_boundary_s_per_image": boundary_s,
        "scipy_reference_s_per_image": scipy_s,
        "matches_reference": same,
        "dilation_px": d,
        "size": size,
        "num_classes": num_classes,
        "device": str(dev),
    }
