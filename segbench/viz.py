"""Colours and pictures shared by the CLI and the app: palettes, colour masks, overlays.

Masks are int64 [H,W] class maps; images are uint8 [C,H,W] (C = 1 or 3). Pixels equal to the ignore value
(255) are drawn black.
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch
from PIL import Image
from torch import Tensor

IGNORE_COLOUR = (0, 0, 0)


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct colours: black-ish background first, then hues spread by the golden ratio."""
    colours = [(40, 40, 40)]
    for i in range(1, num_classes):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours[:num_classes]


def _lut(palette: list[tuple[int, int, int]] | tuple, ignore_index: int = 255) -> Tensor:
    lut = torch.zeros(256, 3, dtype=torch.uint8)
    lut[: len(palette)] = torch.tensor([list(c) for c in palette], dtype=torch.uint8)
    if 0 <= ignore_index < 256 and ignore_index >= len(palette):
        lut[ignore_index] = torch.tensor(IGNORE_COLOUR, dtype=torch.uint8)
    return lut


def colorize(mask: Tensor, palette, ignore_index: int = 255) -> Tensor:
    """int [H,W] class map -> uint8 [3,H,W] colour image (one table lookup, no loops)."""
    index = mask.to("cpu", torch.int64).clamp(0, 255)
    return _lut(palette, ignore_index)[index].permute(2, 0, 1).contiguous()


def to_rgb(image: Tensor) -> Tensor:
    """uint8 [1|3|4,H,W] -> uint8 [3,H,W]."""
    if image.shape[0] == 1:
        return image.expand(3, -1, -1).contiguous()
    return image[:3]


def overlay(image: Tensor, mask: Tensor, palette, *, alpha: float = 0.5, ignore_index: int = 255) -> Tensor:
    """Blend the colour mask over the image: uint8 [3,H,W]. ``alpha`` = mask opacity in [0, 1]."""
    rgb = to_rgb(image).float()
    colour = colorize(mask, palette, ignore_index).float()
    return (rgb * (1 - alpha) + colour * alpha).round().clamp(0, 255).to(torch.uint8)


def disagreement(masks: list[Tensor]) -> Tensor:
    """bool [H,W]: pixels where not all masks give the same class."""
    stack = torch.stack([m.to(torch.int64) for m in masks])
    return (stack != stack[0]).any(dim=0)


def palette_png(mask: Tensor, palette, ignore_index: int = 255) -> Image.Image:
    """An indexed ('P' mode) PNG whose pixel values are the class indices and whose palette is ``palette``."""
    array = mask.to("cpu", torch.uint8).numpy()
    img = Image.fromarray(array)  # mode L; putpalette turns it into P keeping the values
    flat = np.zeros((256, 3), dtype=np.uint8)
    flat[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    img.putpalette(flat.reshape(-1).tolist())
    return img


def to_pil(image: Tensor) -> Image.Image:
    """uint8 [C,H,W] -> PIL image."""
    array = image.to("cpu").permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
