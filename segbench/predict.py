"""Inference on single images: shared by ``segbench predict`` and the app.

``Predictor(weights)`` loads a model once (safetensors + model.json) and maps any image to a class map at
the image's own size: channels are adapted to the model (grey <-> RGB, alpha dropped), the image is
normalised on the device, resized to the model's evaluation size if it has one, and the logits are
resized back. Instance models (Mask R-CNN) also return their instances.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .data.transforms import normalize
from .device import cpu_bf16_supported, resolve_device
from .engine import predict_logits
from .errors import SegbenchError
from .metrics import to_semantic
from .store import LocalStore, load_model

MAX_PIXELS = 64_000_000  # refuse decompression bombs above ~8000 x 8000
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif"}


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
    """A loaded model ready for single images (see module docstring)."""

    def __init__(self, weights: str | Path, *, store: LocalStore | None = None, device: str = "cpu",
                 fast: bool = True) -> None:
        self.device = resolve_device(device)
        self.model, self.meta = load_model(weights, store=store, map_location=str(self.device))
        # bf16 + channels_last where the hardware runs bf16 natively (GPU, AVX512-BF16/AMX CPU); fp32 otherwise.
        self.cpu_bf16 = fast and self.device.type == "cpu" and cpu_bf16_supported()
        self.precision = "bf16" if fast and (self.device.type == "cuda" or self.cpu_bf16) else "fp32"
        if self.precision == "bf16" and self.meta.get("task", "semantic") == "semantic":
            self.model.to(memory_format=torch.channels_last)
        self.task = self.meta.get("task", "semantic")
        self.in_channels = int(self.meta.get("in_channels", 3))
        self.class_names = list(self.meta.get("class_names", []))
        self.palette = [tuple(c) for c in self.meta.get("palette", [])]
        self.num_classes = int(self.meta.get("semantic_classes", self.meta["num_classes"]))
        l2c = self.meta.get("label_to_class")
        self.label_to_class = torch.tensor(l2c, dtype=torch.int64) if l2c is not None else None

    @torch.inference_mode()
    def __call__(self, image: Tensor, *, with_probs: bool = False) -> Prediction:
        t0 = time.perf_counter()
        image = adapt_channels(image, self.in_channels)
        h, w = image.shape[-2:]
        x = normalize(image[None].to(self.device), self.meta["mean"], self.meta["std"])
        if self.task == "instance":
            pred = self.model([x[0]])[0]
            fill = self.meta.get("fill")
            mask = to_semantic(pred, self.num_classes, h, w, score_threshold=float(self.meta.get("score_threshold", 0.5)),
                               label_to_class=self.label_to_class, fill=0 if fill is None else int(fill))
            keep = pred["scores"] >= float(self.meta.get("score_threshold", 0.5))
            instances = {"boxes": pred["boxes"][keep].cpu(), "labels": pred["labels"][keep].cpu(),
                         "scores": pred["scores"][keep].cpu(), "masks": (pred["masks"][keep, 0] > 0.5).cpu()}
            return Prediction(mask.cpu(), None, instances, (time.perf_counter() - t0) * 1000)
        logits = predict_logits(self.model, x, out_size=(h, w), eval_size=self.meta.get("eval_size"),
                                tile=self.meta.get("eval_tile"), device=self.device, amp=self.precision == "bf16",
                                cpu_bf16=self.cpu_bf16)
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
