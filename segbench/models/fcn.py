"""Fully Convolutional Networks (Long, Shelhamer & Darrell, CVPR 2015) and torchvision's FCN-ResNet.

- ``fcn32s`` / ``fcn16s`` / ``fcn8s``: VGG16 with fc6/fc7 as convolutions, ``score_fr``, learned up-sampling
  initialised to bilinear interpolation and skips from pool4 (16s) and pool3 (8s), cropped exactly as the
  reference Caffe nets (Sec. 4.2, Fig. 3), so the output matches the input for any size.
- ``fcn_resnet50`` / ``fcn_resnet101``: ResNet dilated to output stride 8, a 3x3 conv head and bilinear
  up-sampling (torchvision's FCN; Chen et al.'s dilation applied to FCN).

Every model maps ``float32 [B, in_channels, H, W]`` (normalised) to ``{"out": float32 logits [B, K, H, W]}`` plus,
for ResNet models built with ``aux=True``, ``"aux"`` logits of the same shape from layer3 in training mode (the
engine weighs that loss by ``model.aux_weight``). Any H, W >= 1; labels use the dataset's ignore value, not the
model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import ResNetBackbone, VGG16Backbone, load_backbone_weights

__all__ = ["BUILDERS", "FCN", "FCNVGG", "FCNHead", "bilinear_kernel", "resize"]


def resize(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Bilinear resampling of logits/features [B,C,h,w] -> [B,C,*size] (align_corners=False, as torchvision)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _describe(model: nn.Module, *, family: str, output_stride: int, variant: str, aux_weight: float) -> nn.Module:
    """Attach the attributes every segbench model carries (see models/__init__.py)."""
    model.task = "semantic"
    model.family = family
    model.output_stride = output_stride
    model.variant = variant
    model.aux_weight = aux_weight
    return model


def _variant(name: str, width: float) -> str:
    return name if width == 1.0 else f"{name}-w{width:g}"


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
    """FCN-32s/16s/8s: ``backbone`` (VGG16, fc6/fc7 convolutional) -> ``head`` (scores, skips, up-sampling)."""

    def __init__(self, backbone: VGG16Backbone, head: FCNSkipHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"out": self.head(self.backbone(x), x.shape[-2:])}


def _fcn_vgg(
    stride: int, num_classes: int, in_channels: int, backbone_weights: str | None, width: float, fc_channels: int | None
) -> FCNVGG:
    backbone = VGG16Backbone(style="fcn", in_channels=in_channels, width=width, fc_channels=fc_channels)
    load_backbone_weights(backbone, backbone_weights)
    model = FCNVGG(backbone, FCNSkipHead(backbone.channels, num_classes, stride))
    return _describe(model, family="fcn", output_stride=stride, variant=_variant("vgg16", width), aux_weight=0.0)


def fcn32s(
    *,
    num_classes: int,
    in_channels: int = 3,
    backbone_weights: str | None = None,
    width: float = 1.0,
    fc_channels: int | None = None,
) -> FCNVGG:
    """FCN-32s: one 64x64 stride-32 up-sampling of fc7's scores. ``fc_channels`` defaults to 4096 * width."""
    return _fcn_vgg(32, num_classes, in_channels, backbone_weights, width, fc_channels)


def fcn16s(
    *,
    num_classes: int,
    in_channels: int = 3,
    backbone_weights: str | None = None,
    width: float = 1.0,
    fc_channels: int | None = None,
) -> FCNVGG:
    """FCN-16s: FCN-32s plus the pool4 skip; final 32x32 stride-16 up-sampling."""
    return _fcn_vgg(16, num_classes, in_channels, backbone_weights, width, fc_channels)


def fcn8s(
    *,
    num_classes: int,
    in_channels: int = 3,
    backbone_weights: str | None = None,
    width: float = 1.0,
    fc_channels: int | None = None,
) -> FCNVGG:
    """FCN-8s: pool4 and pool3 skips; final 16x16 stride-8 up-sampling. ~134.5M parameters at 21 classes."""
    return _fcn_vgg(8, num_classes, in_channels, backbone_weights, width, fc_channels)


def fcn8s_small(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None) -> FCNVGG:
    """CPU preset: FCN-8s with VGG16 at width 1/8 (8..64 channels) and fc6/fc7 of 256 channels (1/16 of 4096:
    fc6's 7x7 window would otherwise hold ~85% of the parameters). About 1.1M parameters."""
    return _fcn_vgg(8, num_classes, in_channels, backbone_weights, 0.125, 256)


# ----------------------------------------------------------------------------------------------------------------
# FCN-ResNet (torchvision's variant)
# ----------------------------------------------------------------------------------------------------------------


class FCNHead(nn.Sequential):
    """3x3 conv to in/4 channels, BN, ReLU, dropout 0.1, 1x1 class scores (torchvision's FCNHead); also the
    auxiliary head of the ResNet models. [B,C,h,w] -> [B,K,h,w]."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        inter = max(8, in_channels // 4)
        super().__init__(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(inter, num_classes, 1),
        )


class FCN(nn.Module):
    """``backbone`` (dict of features) -> ``head`` on "out" -> bilinear up-sampling; ``aux`` head on "aux"."""

    def __init__(self, backbone: nn.Module, head: nn.Module, aux: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux = aux

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.backbone(x)
        result = {"out": resize(self.head(features["out"]), x.shape[-2:])}
        if self.aux is not None and self.training:
            result["aux"] = resize(self.aux(features["aux"]), x.shape[-2:])
        return result


def _fcn_resnet(
    depth: int,
    num_classes: int,
    in_channels: int,
    backbone_weights: str | None,
    width: float,
    aux: bool,
    aux_weight: float,
) -> FCN:
    backbone = ResNetBackbone(depth, in_channels=in_channels, width=width, output_stride=8)
    load_backbone_weights(backbone, backbone_weights)
    head = FCNHead(backbone.channels["out"], num_classes)
    aux_head = FCNHead(backbone.channels["aux"], num_classes) if aux else None
    variant = _variant(f"resnet{depth}-os8", width)
    return _describe(
        FCN(backbone, head, aux_head), family="fcn", output_stride=8, variant=variant,
        aux_weight=aux_weight if aux else 0.0,
    )


def fcn_resnet50(
    *,
    num_classes: int,
    in_channels: int = 3,
    backbone_weights: str | None = None,
    width: float = 1.0,
    aux: bool = False,
    aux_weight: float = 0.4,
) -> FCN:
    """FCN on ResNet-50 dilated to output stride 8; ``aux`` adds an FCNHead on layer3 (loss weight ``aux_weight``)."""
    return _fcn_resnet(50, num_classes, in_channels, backbone_weights, width, aux, aux_weight)


def fcn_resnet101(
    *,
    num_classes: int,
    in_channels: int = 3,
    backbone_weights: str | None = None,
    width: float = 1.0,
    aux: bool = False,
    aux_weight: float = 0.4,
) -> FCN:
    """FCN on ResNet-101 dilated to output stride 8; options as ``fcn_resnet50``."""
    return _fcn_resnet(101, num_classes, in_channels, backbone_weights, width, aux, aux_weight)


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fcn32s": fcn32s,
    "fcn16s": fcn16s,
    "fcn8s": fcn8s,
    "fcn8s_small": fcn8s_small,
    "fcn_resnet50": fcn_resnet50,
    "fcn_resnet101": fcn_resnet101,
}
