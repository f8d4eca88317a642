"""ONNX export of semantic models (``segbench export``) with a parity check against PyTorch; the graph writer and
the ONNX Runtime model live in ``onnx_runtime``.

Parity: the exported model and the PyTorch model (float32, eager) predict the same class for at least
``MIN_EQUAL`` (99.9%) of the pixels of real validation images at their own sizes (several sizes, so a shape baked
into the graph fails), else the file is deleted and SegbenchError says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SegbenchError
from ..weights.meta import WeightsMeta
from ..weights.store import LocalStore, load_model
from .onnx_runtime import (  # noqa: F401  (re-exported: the ONNX names callers know from here)
    ONNX_FILE, WEIGHTS_KEY, OnnxModel, default_onnx_path, graph_weights_sha256, load_onnx_model, require_onnx,
    require_onnxruntime, write_graph,
)
from .predict import Predictor, list_images, load_image

MIN_EQUAL = 0.999
PARITY_IMAGES = 4


def export_onnx(weights: str | Path, *, out: str | Path | None = None, store: LocalStore | None = None,
                images: str | Path | None = None, opset: int = 17, parity: bool = True) -> dict[str, Any]:
    """Export a semantic model's weights to ONNX (dynamic H/W) and check argmax parity with the eager model on
    real images (``images``: a file or folder; default the weights' dataset's val images, else smoothed noise).
    Returns {onnx, bytes, opset, seconds, parity: {equal, images, pixels, sizes}}."""
    require_onnx()
    if parity:
        require_onnxruntime()
    model, meta = load_model(weights, store=store)
    if meta.task != "semantic":
        raise SegbenchError(f"{weights}: {meta.model} is an instance model; ONNX export covers semantic models")
    target, seconds = write_graph(model, meta, weights, out=out, store=store, opset=opset)
    result = {"onnx": str(target), "bytes": target.stat().st_size, "opset": opset,
              "seconds": round(seconds, 2), "parity": None}
    if parity:
        result["parity"] = check_parity(model, meta, target, _parity_images(meta, images))
        if result["parity"]["equal"] < MIN_EQUAL:
            target.unlink(missing_ok=True)
            raise SegbenchError(f"{target}: ONNX and PyTorch agree on {100 * result['parity']['equal']:.3f}% of "
                                f"pixels (< {100 * MIN_EQUAL:.1f}%); the export is not faithful and was deleted")
    return result


def check_parity(model: nn.Module, meta: WeightsMeta, onnx_path: Path, images: list[Tensor]) -> dict[str, Any]:
    """Fraction of pixels where the ONNX Runtime and eager float32 predictions (argmax, the full predictor path)
    agree, over ``images`` (uint8 [C,H,W])."""
    eager = Predictor.from_model(model, meta, fast=False)
    onnx = Predictor.from_model(OnnxModel.like(onnx_path, model), meta, fast=False)
    equal = total = 0
    for image in images:
        a, b = eager(image).mask, onnx(image).mask
        equal += int((a == b).sum())
        total += a.numel()
    return {"equal": equal / max(total, 1), "images": len(images), "pixels": total,
            "sizes": sorted({tuple(i.shape[-2:]) for i in images})}


def _parity_images(meta: WeightsMeta, source: str | Path | None) -> list[Tensor]:
    if source is not None:
        return [load_image(p) for p in list_images(source)[:PARITY_IMAGES]]
    from ..data import build_dataset, default_root

    dataset = meta.dataset
    if dataset and (dataset == "synthetic" or default_root(dataset) is not None):
        try:
            data = build_dataset(dataset, split="val")
            return [data[i][0] for i in range(min(PARITY_IMAGES, len(data)))]
        except SegbenchError:
            pass
    # No data here: smoothed noise at a few odd sizes (the dynamic axes are still exercised).
    generator = torch.Generator().manual_seed(0)
    images = []
    for h, w in [(96, 128), (75, 101), (128, 64)]:
        noise = torch.rand(1, meta.in_channels, h // 4, w // 4, generator=generator)
        smooth = torch.nn.functional.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)[0]
        images.append((smooth * 255).round().to(torch.uint8))
    return images
