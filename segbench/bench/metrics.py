"""Time ``segbench.metrics.ConfusionMatrix`` against torchmetrics' ``MulticlassJaccardIndex`` on the same data."""

from __future__ import annotations

import time

import torch

from segbench.errors import SegbenchError
from segbench.metrics import ConfusionMatrix


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
    ``ignore_index=255``. Returns seconds for each, the speedup, both mIoUs and their absolute difference.
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
    }
