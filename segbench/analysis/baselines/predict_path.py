"""Latency of segbench's predict path vs plain fp32 eager PyTorch on the same weights and image.

The predict path is ``predict.Predictor`` (BatchNorm folded, channels_last, bf16 autocast where the device runs
bf16 natively, inference mode, overlap-tile for valid U-Nets). The baseline is the textbook ``model.eval()`` +
``no_grad`` fp32 forward of the same weights on the same input. Agreement = fraction of pixels whose argmax class is equal.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from ...data.transforms import normalize
from ...device import device_name
from ...evaluation.speed import timed_ms
from ...inference.predict import Predictor
from ...models import build_model
from ...models.inference import forward_full
from ...weights.meta import WeightsMeta
from ...weights.store import save_weights


def _time(fn, runs: int, device: torch.device) -> tuple[float, Any]:
    """Median seconds of ``runs`` calls after one warm-up, and the last result."""
    out = fn()  # warm-up
    times = []
    for _ in range(runs):
        ms, out = timed_ms(fn, device)
        times.append(ms / 1000)
    return statistics.median(times), out


def bench_predict_path(model_name: str = "unet", *, device: str = "cpu", size: int = 512, runs: int = 5,
                       in_channels: int = 1, num_classes: int = 2, weights: str | None = None,
                       image: str | None = None) -> dict[str, Any]:
    """``weights``: a trained model (folder or ``local:`` URI) instead of a random ``model_name``; ``image``: a real
    image file instead of smoothed noise (agreement on random weights is pessimistic: their logits nearly tie)."""
    dev = torch.device(device)
    torch.manual_seed(0)
    trained = weights is not None
    with tempfile.TemporaryDirectory() as tmp:
        if weights is None:
            model = build_model(model_name, num_classes=num_classes, in_channels=in_channels)
            meta = WeightsMeta(model=model_name, model_args={"in_channels": in_channels}, num_classes=num_classes,
                               in_channels=in_channels, mean=(0.5,) * in_channels, std=(0.25,) * in_channels,
                               palette=((0, 0, 0),) * num_classes, task="semantic")
            save_weights(model, meta, Path(tmp))
            weights = tmp
        predictor = Predictor(weights, device=str(dev))
        if image is not None:
            from ...inference.predict import adapt_channels, load_image

            picture = adapt_channels(load_image(image), predictor.in_channels)
        else:
            picture = torch.randint(0, 256, (predictor.in_channels, size, size), dtype=torch.uint8)
            # smooth the noise a little so the image has structure at several scales
            picture = torch.nn.functional.avg_pool2d(picture[None].float(), 5, 1, 2)[0].to(torch.uint8)

        plain = Predictor(weights, device=str(dev), fast=False).model  # unfolded, NCHW
        x = normalize(picture[None].to(dev), predictor.meta.mean, predictor.meta.std)

        def eager():
            with torch.no_grad():
                return forward_full(plain, x)["out"].argmax(1)[0].cpu()

        eager_s, eager_mask = _time(eager, runs, dev)
        ours_s, pred = _time(lambda: predictor(picture), runs, dev)
    agreement = float((pred.mask == eager_mask).float().mean())
    return {"model": predictor.meta.name or model_name, "weights": "trained" if trained else "random init",
            "device": device_name(dev), "image": list(picture.shape),
            "eager_fp32_s": eager_s, "ours_s": ours_s, "speedup": eager_s / ours_s, "pixel_agreement": agreement,
            "ours_precision": predictor.precision}
