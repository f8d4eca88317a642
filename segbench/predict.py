"""Inference on single images: shared by ``segbench predict`` and the app.

``Predictor(weights)`` loads a model once (safetensors + model.json) and maps any image to a class map at
the image's own size: channels are adapted to the model (grey <-> RGB, alpha dropped), the image is
normalised on the device, resized to the model's evaluation size if it has one, run as the weights were
evaluated (``meta["evaluation"]``: whole image or sliding window, with their test-time scales and flip; see
``models.inference``), and the logits are resized back. Instance models (Mask R-CNN) also return their instances.

Large images: with ``slide_above=N`` (the app uses 2048) a model evaluated whole-image runs inputs whose longer
side exceeds N in sliding windows (``LARGE_WINDOW`` with ``LARGE_STRIDE``), so memory grows with the logit canvas
only, not with the activations of one huge forward pass; nothing is downscaled.
"""

from __future__ import annotations

import dataclasses
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .data.transforms import normalize
from .device import autocast, cpu_bf16_supported, resolve_device
from .errors import SegbenchError
from .metrics import to_semantic
from .models.inference import Evaluation, evaluation_from, infer
from .store import LocalStore, load_model

MAX_PIXELS = 64_000_000  # refuse decompression bombs above ~8000 x 8000
BACKENDS = ("torch", "onnx")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif"}
# Windows for large images of whole-image models (slide_above): 1 MP each, a quarter overlapping on each side.
LARGE_WINDOW, LARGE_STRIDE = (1024, 1024), (768, 768)


def load_image(source: str | Path | bytes, *, max_pixels: int = MAX_PIXELS) -> Tensor:
    """Decode an image file (or its bytes) to uint8 [C,H,W] with C in {1, 3}.

    Grey, RGB, RGBA (alpha dropped), palette, 16-bit (scaled to 8 bits) and TIFF are accepted. A corrupt,
    non-image or over-large file raises SegbenchError naming it.
    """
    label = "upload" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise SegbenchError(f"{label}: file not found; check the path")
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                if img.width * img.height > max_pixels:
                    raise SegbenchError(f"{label}: {img.width}x{img.height} is too large (limit {max_pixels} pixels); downscale it first")
                img.load()
                return _pil_to_tensor(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise SegbenchError(f"{label}: image is too large (decompression bomb guard, limit {max_pixels} pixels); downscale it first") from None
    except UnidentifiedImageError:
        raise SegbenchError(f"{label}: not an image file PIL can read (PNG, JPEG, TIFF, BMP, WebP); check the file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise SegbenchError(f"{label}: unreadable or truncated image ({exc}); re-export the file") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _pil_to_tensor(img: Image.Image) -> Tensor:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.array(img, dtype=np.float64)
        hi = array.max() if array.max() > 255 else 255.0
        array = np.clip(array / max(hi, 1e-9) * 255.0, 0, 255).round().astype(np.uint8)[..., None]
    elif img.mode in ("L", "1"):
        array = np.array(img.convert("L"))[..., None]
    elif img.mode == "LA":
        array = np.array(img.convert("L"))[..., None]
    else:
        array = np.array(img.convert("RGB"))
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()


def adapt_channels(image: Tensor, in_channels: int) -> Tensor:
    """uint8 [C,H,W] -> uint8 [in_channels,H,W]: grey repeated to RGB, RGB to grey by ITU-R 601 luma."""
    c = image.shape[0]
    if c == 4:
        image, c = image[:3], 3
    if c == in_channels:
        return image
    if in_channels == 3 and c == 1:
        return image.expand(3, -1, -1).contiguous()
    if in_channels == 1 and c == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        return (image.float() * weights).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise SegbenchError(f"image has {c} channels but the model expects {in_channels}")


@dataclass
class Prediction:
    mask: Tensor  # int64 [H,W] class indices at the input's size
    probs: Tensor | None  # float32 [K,H,W] softmax probabilities (semantic models)
    instances: dict[str, Tensor] | None  # boxes [N,4], labels [N], scores [N], masks bool [N,H,W] (instance models)
    latency_ms: float


class Predictor:
    """A loaded model ready for single images (see module docstring).

    The path is three steps, also used one by one by ``speed.measure_latency`` so that its figures are this path:
    ``prepare`` (host uint8 image -> normalised device tensor at the evaluation size), ``forward`` (the model alone)
    and ``__call__`` (all of it, plus resize back / argmax or to_semantic, and the copy back to the host).
    Precision: bf16 autocast on GPUs; on CPUs that run bf16 natively only for semantic models (Mask R-CNN's
    detection ops stay fp32 there, as in evaluation); fp32 otherwise or with ``fast=False``. Semantic models run in
    channels_last unless ``fast=False``. The ONNX backend is always fp32, NCHW.
    """

    def __init__(self, weights: str | Path, *, store: LocalStore | None = None, device: str = "cpu",
                 fast: bool = True, backend: str = "torch", slide_above: int | None = None) -> None:
        """``backend``: "torch" (eager PyTorch) or "onnx" (ONNX Runtime on the CPU, semantic models only; the
        weights' ``model.onnx`` is exported on first use, see ``segbench.export``)."""
        if backend not in BACKENDS:
            raise SegbenchError(f"backend '{backend}' is unknown; use one of: {', '.join(BACKENDS)}")
        if backend == "onnx":
            from .export import load_onnx_model

            model, meta = load_onnx_model(weights, store=store)
            self._setup(model, meta, torch.device("cpu"), fast, slide_above)
            return
        device_ = resolve_device(device)
        model, meta = load_model(weights, store=store, map_location=str(device_))
        self._setup(model, meta, device_, fast, slide_above)

    @classmethod
    def from_model(cls, model: torch.nn.Module, meta: dict[str, Any], *, device: torch.device | str = "cpu",
                   fast: bool = True, slide_above: int | None = None) -> Predictor:
        """Wrap a model already in memory; ``meta`` holds what model.json holds (task, in_channels, mean, std,
        num_classes, eval_size, eval_tile, evaluation; instance models: semantic_classes, score_threshold,
        label_to_class, fill). A semantic model run in bf16 is put in channels_last (in place)."""
        predictor = cls.__new__(cls)
        predictor._setup(model, meta, torch.device(device), fast, slide_above)
        return predictor

    def _setup(self, model: torch.nn.Module, meta: dict[str, Any], device: torch.device, fast: bool,
               slide_above: int | None) -> None:
        self.device, self.meta = device, meta
        self.evaluation = evaluation_from(meta.get("evaluation"))  # whole for weights saved before it was recorded
        self.slide_above = slide_above
        self.model = model.to(device).eval()
        self.task = meta.get("task", "semantic")
        # An ONNX Runtime session runs its own float32 graph: no autocast, no memory-format change.
        self.backend = "onnx" if hasattr(model, "session") else "torch"
        fast = fast and self.backend == "torch"
        semantic = self.task == "semantic"
        # bf16 where the hardware runs it natively (GPU, AVX512-BF16/AMX CPU); fp32 otherwise.
        self.cpu_bf16 = fast and semantic and device.type == "cpu" and cpu_bf16_supported()
        self.precision = "bf16" if fast and (device.type == "cuda" or self.cpu_bf16) else "fp32"
        # channels_last: oneDNN's convolutions run NHWC natively (1.2-1.6x faster in fp32 on this project's CPU).
        self.channels_last = fast and semantic
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.in_channels = int(meta.get("in_channels", 3))
        self.class_names = list(meta.get("class_names", []))
        self.palette = [tuple(c) for c in meta.get("palette", [])]
        self.num_classes = int(meta.get("semantic_classes", meta["num_classes"]))
        l2c = meta.get("label_to_class")
        self.label_to_class = torch.tensor(l2c, dtype=torch.int64) if l2c is not None else None

    def prepare(self, image: Tensor) -> Tensor:
        """uint8 [C,H,W] host image -> float32 [1,in_channels,h,w] on the device, normalised with the training
        mean/std; semantic models: resized to ``meta["eval_size"]`` when set (instance models resize inside)."""
        image = adapt_channels(image, self.in_channels)
        x = normalize(image[None].to(self.device), self.meta["mean"], self.meta["std"])
        eval_size = self.meta.get("eval_size")
        if self.task == "semantic" and eval_size is not None and tuple(x.shape[-2:]) != tuple(eval_size):
            x = F.interpolate(x, size=tuple(eval_size), mode="bilinear", align_corners=False, antialias=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def evaluation_for(self, size: tuple[int, int]) -> Evaluation:
        """How a prepared input of ``size`` (H, W) runs: the weights' evaluation; for a whole-image model with
        ``slide_above`` set and a longer side above it, ``LARGE_WINDOW`` windows (same scales and flip)."""
        if self.evaluation.mode == "whole" and self.slide_above is not None and max(size) > self.slide_above:
            return dataclasses.replace(self.evaluation, mode="slide", crop=LARGE_WINDOW, stride=LARGE_STRIDE)
        return self.evaluation

    def forward(self, x: Tensor, *, out_size: tuple[int, int] | None = None) -> Any:
        """The model on a prepared input, as :meth:`evaluation_for` says: semantic float32 scores [1,K,H,W] at
        ``out_size`` (default the input's size; logits, or log mean probabilities with test-time augmentation),
        or Mask R-CNN's prediction dict for the one image (masks [N,1,H,W] probabilities at the image's size)."""
        with autocast(self.device, self.precision == "bf16", cpu_bf16=self.cpu_bf16):
            if self.task == "instance":
                return self.model([x[0]])[0]
            return infer(self.model, x, self.evaluation_for(tuple(x.shape[-2:])), out_size=out_size,
                         tile=self.meta.get("eval_tile"))

    @torch.inference_mode()
    def __call__(self, image: Tensor, *, with_probs: bool = False) -> Prediction:
        t0 = time.perf_counter()
        h, w = image.shape[-2:]
        out = self.forward(self.prepare(image), out_size=(h, w))
        if self.task == "instance":
            pred = {k: v.float() if v.is_floating_point() else v for k, v in out.items()}
            threshold = float(self.meta.get("score_threshold", 0.5))
            fill = self.meta.get("fill")
            mask = to_semantic(pred, self.num_classes, h, w, score_threshold=threshold,
                               label_to_class=self.label_to_class, fill=0 if fill is None else int(fill))
            keep = pred["scores"] >= threshold
            instances = {"boxes": pred["boxes"][keep].cpu(), "labels": pred["labels"][keep].cpu(),
                         "scores": pred["scores"][keep].cpu(), "masks": (pred["masks"][keep, 0] > 0.5).cpu()}
            return Prediction(mask.cpu(), None, instances, (time.perf_counter() - t0) * 1000)
        logits = out.float()
        if tuple(logits.shape[-2:]) != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        mask = logits.argmax(1)[0].cpu()
        probs = torch.softmax(logits, 1)[0].cpu() if with_probs else None
        return Prediction(mask, probs, None, (time.perf_counter() - t0) * 1000)


def list_images(path: str | Path) -> list[Path]:
    """The image files of a folder (sorted) or the single file given."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SegbenchError(f"{path}: no such file or folder; give an image or a folder of images")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SegbenchError(f"{path}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def describe(meta: dict[str, Any]) -> str:
    return f"{meta.get('name', meta['model'])} ({meta['model']}) trained on {meta.get('dataset')}"
