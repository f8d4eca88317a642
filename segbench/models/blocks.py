"""Small layers shared by the model families: the U-Net conv block, centre crop and any-size mirror padding."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by (optional BatchNorm and) ReLU: one U-Net level (Ronneberger et al.
    2015, Sec. 2). ``padding=0`` is the paper's unpadded ("valid") conv, which trims 4 pixels per block;
    ``padding=1`` keeps the size. Maps float [B,in,H,W] -> [B,out,H-4+4*padding,W-4+4*padding]."""

    def __init__(self, in_channels: int, out_channels: int, *, padding: int, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            # BN makes the conv bias redundant (its shift is learnt by BN's beta).
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=padding, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def he_normal_(module: nn.Module) -> None:
    """Paper init (Sec. 3): weights ~ N(0, sqrt(2/N)), N = inputs of one output unit; biases 0.

    For a 2x2 stride-2 up-convolution every output unit sees exactly one tap per input channel, so N = in_channels.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels // m.groups * math.prod(m.kernel_size)
        elif isinstance(m, nn.ConvTranspose2d):
            taps = math.prod(math.ceil(k / s) for k, s in zip(m.kernel_size, m.stride))
            fan_in = m.in_channels // m.groups * taps
        else:
            continue
        nn.init.normal_(m.weight, std=math.sqrt(2.0 / fan_in))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def center_crop(x: Tensor, height: int, width: int) -> Tensor:
    """The central ``height x width`` window of the last two dims (U-Net "copy and crop", Fig. 1).

    When the size difference is odd the extra pixel is cut from the bottom/right.
    """
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


def mirror_pad(x: Tensor, pad: tuple[int, int, int, int]) -> Tensor:
    """Reflect-pad the last two dims of x [B,C,H,W] (or [C,H,W]) by ``pad = (left, right, top, bottom)`` >= 0.

    Same values as ``F.pad(x, pad, mode="reflect")``, which needs every pad smaller than its dimension; larger pads
    keep reflecting (the image is mirrored back and forth, period 2*(n-1)), so a 5-pixel image can be padded by 92
    as the U-Net overlap-tile strategy needs (paper Fig. 2). A 1-pixel axis is repeated. Built from F.pad calls
    only, so it is differentiable and runs on the meta device (shape-only analysis).
    """
    left, right, top, bottom = pad
    height, width = x.shape[-2:]
    if width == 1 and (left or right):  # a 1-pixel axis has nothing to mirror: repeat it
        x, left, right = F.pad(x, (left, right, 0, 0), mode="replicate"), 0, 0
    if height == 1 and (top or bottom):
        x, top, bottom = F.pad(x, (0, 0, top, bottom), mode="replicate"), 0, 0
    while left or right or top or bottom:
        # Mirror about the current edges by whole periods of (n - 1): every new edge is again a turning point of
        # the periodic reflection, so the next step stays exact; a last, shorter step ends that side.
        size_h, size_w = x.shape[-2:]
        full_w = (size_w - 1) // (width - 1) * (width - 1) if width > 1 else 0
        full_h = (size_h - 1) // (height - 1) * (height - 1) if height > 1 else 0
        step = (min(left, full_w), min(right, full_w), min(top, full_h), min(bottom, full_h))
        x = F.pad(x, step, mode="reflect")
        left, right, top, bottom = left - step[0], right - step[1], top - step[2], bottom - step[3]
    return x
