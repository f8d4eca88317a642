"""``segbench speed``: segbench's parts timed against reference implementations, one baseline per module.

``metrics`` (ConfusionMatrix vs torchmetrics, the bootstrap, Boundary IoU), ``torchvision_models`` (FCN-ResNet50 and
DeepLab v3 vs torchvision's), ``maskrcnn`` (batched mask post-processing vs torchvision's), ``predict_path`` (the
predict path vs plain eager PyTorch) and ``train_loop`` (``engine.train`` vs a plain loop). The development
benchmarks of the app and the data (``segbench.bench``) are not part of the product and are not imported here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...device import resolve_device
from ...errors import SegbenchError


@dataclass(frozen=True)
class SpeedOptions:
    """``segbench speed``'s options: input size (px), batch and steps (None: the baseline's own), ``compile``
    (torchvision baseline); ``weights`` and ``image`` (eager baseline: stored weights, a real image)."""

    size: int = 512
    batch: int | None = None
    steps: int | None = None
    compile: bool = False
    weights: str | None = None
    image: str | None = None


def run_speed(model: str | None, *, baseline: str, device: str = "auto",
              options: SpeedOptions = SpeedOptions()) -> dict[str, Any]:
    dev = str(resolve_device(device))
    size, batch, steps = options.size, options.batch, options.steps
    if baseline == "torchmetrics":
        from .metrics import bench_confusion_matrix

        return bench_confusion_matrix(device=dev, size=size)
    if model is None:
        raise SegbenchError(f"--baseline {baseline} needs a model name, e.g. 'segbench speed unet --baseline {baseline}'")
    if baseline == "torchvision":
        if model.startswith("maskrcnn"):
            from .maskrcnn import bench_postprocess

            kwargs = {k: v for k, v in {"batch": batch, "iters": steps}.items() if v is not None}
            return bench_postprocess(device=dev, size=size, **kwargs)
        from .torchvision_models import bench_vs_torchvision

        if model not in ("fcn_resnet50", "deeplabv3"):
            raise SegbenchError(f"--baseline torchvision compares fcn_resnet50, deeplabv3 or maskrcnn, not '{model}'")
        kwargs = {k: v for k, v in {"batch": batch, "steps": steps}.items() if v is not None}
        return bench_vs_torchvision(model, device=dev, size=size, compile=options.compile, **kwargs)
    if baseline == "eager":
        from .predict_path import bench_predict_path

        return bench_predict_path(model, device=dev, size=size, runs=steps or 5, weights=options.weights,
                                  image=options.image)
    if baseline == "plain-loop":
        from .train_loop import bench_train_loop

        return bench_train_loop(model, device=dev, size=size, batch=batch or 4, steps=steps or 10)
    raise SegbenchError(f"unknown baseline '{baseline}'")
