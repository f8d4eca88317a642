"""Uploaded files: the image to compare (size guard, any common format, downscaling) and an optional ground-truth
mask (class indices, a binary {0, 255} mask, or colours of the legend).

Images come back as ``uint8 [C,H,W]`` (C 1 or 3), masks as ``int64 [H,W]`` with the domain's ignore value. Every
refusal is one SegbenchError naming the file (the name the user gave it, never the server's temporary path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.io import mask_pixels, read_header, read_image
from ..errors import SegbenchError
from .config import AppConfig


def upload_path(payload: Any) -> tuple[str, str] | None:
    """(local path, name the user gave it) of a raw Gradio file payload (events run with ``preprocess=False``, so a
    payload is a path string or a FileData dict); None when nothing was uploaded."""
    if not payload:
        return None
    if isinstance(payload, str):
        return payload, Path(payload).name
    path = payload.get("path")
    return (path, payload.get("orig_name") or Path(path).name) if path else None


def check_image_header(path: str | Path, *, name: str, max_pixels: int) -> tuple[int, int]:
    """Open the file's header only (nothing decoded): its (width, height) as shown (EXIF orientation applied).
    A non-image, an empty image or one above ``max_pixels`` (a decompression bomb) raises SegbenchError naming
    ``name``."""
    if not Path(path).is_file():
        raise SegbenchError(f"{name}: the file is gone (uploads are deleted after a while); upload it again")
    return read_header(path, name=name, limit=max_pixels).size


def read_upload(path: str | Path, *, name: str | None = None, cfg: AppConfig | None = None) -> tuple[Tensor, list[str]]:
    """Decode an uploaded image to uint8 [C,H,W] with the reader datasets and ``predict`` use (data.io.read_image:
    grey, RGB, RGBA, palette, 16-bit, EXIF orientation). Refuses non-images and bombs (``cfg.max_pixels``);
    downscales (antialiased) images whose long side exceeds ``cfg.max_side`` when that is set (by default it is not:
    large images run in sliding windows). Returns (image, notices for the user)."""
    from torchvision.transforms.v2.functional import resize

    cfg = cfg or AppConfig()
    name = name or Path(path).name
    check_image_header(path, name=name, max_pixels=cfg.max_pixels)
    image = read_image(path, name=name, limit=cfg.max_pixels)
    notices = []
    h, w = image.shape[-2:]
    if cfg.max_side is not None and max(h, w) > cfg.max_side:
        scale = cfg.max_side / max(h, w)
        size = [max(1, round(h * scale)), max(1, round(w * scale))]
        image = resize(image, size, antialias=True)
        notices.append(f"{name} is {w}x{h}; it was downscaled to {size[1]}x{size[0]} for the comparison.")
    return image, notices


def read_ground_truth(path: str | Path, *, name: str, size: tuple[int, int], num_classes: int, ignore_index: int,
                      palette) -> tuple[Tensor, list[str]]:
    """A ground-truth mask for an image of ``size`` (H, W) -> (int64 [H,W], notices).

    Accepted: a class-index image (grey 8/16-bit or palette PNG, values in [0, K) or ``ignore_index``); a binary
    {0, 255} mask when K = 2 (255 read as class 1); a colour mask drawn in the domain's palette (unknown colours are
    an error, black is the ignore value unless black is a class). A mask larger than the image with the same aspect
    (the image was downscaled) is resized with nearest neighbour."""
    check_image_header(path, name=name, max_pixels=AppConfig().max_pixels)
    # label values as stored, EXIF orientation applied as to the image (data.io, as datasets read masks)
    array, mode = mask_pixels(path, name=name, limit=AppConfig().max_pixels)
    notices = []
    if array.ndim == 3:
        if mode in ("LA", "La", "PA"):
            array = array[..., 0]
        else:
            array = _colours_to_classes(array, palette, ignore_index, name)
            notices.append(f"{name}: colour mask read through the legend's colours.")
    if array.dtype.kind == "f":
        raise SegbenchError(f"{name}: mask holds floating-point values; upload integer class indices (PNG)")
    mask = torch.from_numpy(array.astype(np.int64))
    values = set(mask.unique().tolist())
    if num_classes == 2 and values <= {0, 255} and 255 in values:
        mask = torch.where(mask == 255, 1, mask)
        notices.append(f"{name}: binary {{0, 255}} mask read as classes {{0, 1}} (255 = class 1).")
        values = set(mask.unique().tolist())
    bad = sorted(v for v in values if not (0 <= v < num_classes or v == ignore_index))
    if bad:
        raise SegbenchError(
            f"{name}: mask values {bad[:10]} are not classes of this domain (0..{num_classes - 1}, ignore "
            f"{ignore_index}); upload a grey or palette PNG of class indices, or a colour mask in the legend's colours"
        )
    h, w = size
    mh, mw = mask.shape
    if (mh, mw) != (h, w):
        if mh >= h and mw >= w and abs(mw / mh - w / h) < 0.01 * (w / h):
            # nearest neighbour by index arithmetic (as F.interpolate's 'nearest'), keeping the labels integer
            mask = mask[(torch.arange(h) * mh) // h][:, (torch.arange(w) * mw) // w]
            notices.append(f"{name}: mask resized from {mw}x{mh} to the image's {w}x{h} (nearest neighbour).")
        else:
            raise SegbenchError(f"{name}: mask is {mw}x{mh} (WxH) but the image is {w}x{h}; upload the mask that "
                                "belongs to this image")
    if jpeg_like(name):
        notices.append(f"{name}: JPEG masks are lossy; edge pixels may hold wrong classes (use PNG).")
    return mask, notices


def jpeg_like(name: str) -> bool:
    return Path(name).suffix.lower() in (".jpg", ".jpeg")


def _colours_to_classes(rgb: np.ndarray, palette, ignore_index: int, name: str) -> np.ndarray:
    """uint8 [H,W,3] drawn in ``palette`` -> class indices [H,W] (one table lookup over 24-bit colour codes)."""
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in reversed(list(enumerate(palette)))}
    table.setdefault(0, ignore_index)  # black is how viz draws ignored pixels
    keys = np.array(sorted(table), dtype=np.int64)
    found = np.searchsorted(keys, codes).clip(0, len(keys) - 1)
    known = keys[found] == codes
    if not known.all():
        unknown = np.unique(codes[~known])[:5]
        shown = ", ".join(f"#{c:06x}" for c in unknown)
        raise SegbenchError(f"{name}: colours {shown} are not in this domain's legend; upload a mask of class indices "
                            "or one drawn in the legend's colours")
    return np.array([table[k] for k in keys.tolist()], dtype=np.int64)[found]
