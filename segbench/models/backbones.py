"""Feature extractors for the FCN and DeepLab families, built from torchvision layers.

Every backbone maps ``float32 [B, in_channels, H, W]`` (normalised) to a dict of feature maps and records
``channels: dict[str, int]`` for each key and ``output_stride: int`` (input size / size of ``"out"``):

- ``ResNetBackbone``: ``{"low": layer1 (stride 4), "aux": layer3, "out": layer4}``; output stride 8/16/32 by
  dilating layer3/layer4 instead of striding them (DeepLab v2 Sec. 3.1), optional multi-grid in layer4
  (DeepLab v3 Sec. 3.2).
- ``MobileNetV3Backbone``: ``{"low": stride 4, "aux": stride 16, "out": last conv}``; output stride 16 (last stage
  dilated, torchvision's ``dilated=True``) or 32.
- ``VGG16Backbone``: ``{"pool3", "pool4", "out"}`` where "out" is fc7 run as a convolution: FCN (Long et al. 2015,
  Sec. 3.1) or DeepLab-LargeFOV (Chen et al. 2015, Sec. 3.1 and 4.1).

Parameter and buffer names equal torchvision's (``conv1``, ``layer1.0.conv1``, ``features.0`` ...), so ImageNet
state dicts load directly; ``load_backbone_weights`` does that offline only and adapts the first convolution to
``in_channels`` other than 3. ``width`` scales every channel count (never below 8) for small CPU models.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck

from ..errors import SegbenchError

__all__ = [
    "ResNetBackbone",
    "MobileNetV3Backbone",
    "VGG16Backbone",
    "load_backbone_weights",
    "scaled",
]


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 8 (the width multiplier of every builder)."""
    return max(8, int(round(channels * width)))


def _dilations(output_stride: int) -> tuple[int, int]:
    """Dilation of ResNet layer3 and layer4 that yields ``output_stride`` (DeepLab v2 Sec. 3.1)."""
    table = {8: (2, 4), 16: (1, 2), 32: (1, 1)}
    if output_stride not in table:
        raise SegbenchError(f"output_stride={output_stride}: not supported; use 8, 16 or 32")
    return table[output_stride]


def _kaiming_init(module: nn.Module) -> None:
    """torchvision's ResNet/VGG init: He-normal (fan_out) convs, zero biases, unit BN (He et al. 2015)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------------------------
# ResNet
# ----------------------------------------------------------------------------------------------------------------


class ResNetBackbone(nn.Module):
    """ResNet-50/101 (torchvision's v1.5 bottleneck: stride in the 3x3) without the classifier.

    ``output_stride`` 8 dilates layer3 by 2 and layer4 by 4, 16 dilates layer4 by 2, 32 is the plain network;
    dilation changes no parameter. As in torchvision, the first block of a dilated layer keeps the previous
    dilation. ``multi_grid`` (DeepLab v3 Sec. 3.2: "Multi-grid = (1, 2, 4)") multiplies layer4's dilation per
    block; it only applies when layer4 is dilated, so output stride 32 stays the undilated reference.
    Returns ``{"low": [B,256w,H/4,W/4], "aux": [B,1024w,...], "out": [B,2048w,H/os,W/os]}`` (sizes rounded up).
    """

    def __init__(
        self,
        depth: int,
        *,
        in_channels: int = 3,
        width: float = 1.0,
        output_stride: int = 8,
        multi_grid: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
        d3, d4 = _dilations(output_stride)
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        stem = scaled(64, width)
        self.name = f"resnet{depth}"
        self.weights_name = f"ResNet{depth}_Weights"
        self.first_conv = "conv1.weight"
        self.output_stride = output_stride

        self.conv1 = nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        # Per-block dilations. The first block of a newly dilated layer keeps the previous rate (torchvision).
        layer4 = [d3] + [d4] * (blocks[3] - 1)
        if multi_grid is not None and d4 > 1:
            if len(multi_grid) != blocks[3]:
                raise SegbenchError(
                    f"multi_grid={tuple(multi_grid)}: layer4 has {blocks[3]} blocks; give {blocks[3]} rates, "
                    "e.g. (1, 2, 4)"
                )
            layer4 = [d4 * int(m) for m in multi_grid]
        dil = [[1] * blocks[0], [1] * blocks[1], [1] + [d3] * (blocks[2] - 1), layer4]
        strides = [1, 2, 2 if d3 == 1 else 1, 2 if d4 == 1 else 1]
        inplanes = stem
        for i, (p, s, d) in enumerate(zip(planes, strides, dil)):
            setattr(self, f"layer{i + 1}", _resnet_layer(inplanes, p, stride=s, dilations=d))
            inplanes = p * Bottleneck.expansion
        self.channels = {"low": planes[0] * 4, "aux": planes[2] * 4, "out": planes[3] * 4}
        _kaiming_init(self)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        aux = self.layer3(self.layer2(low))
        return {"low": low, "aux": aux, "out": self.layer4(aux)}


def _resnet_layer(inplanes: int, planes: int, *, stride: int, dilations: list[int]) -> nn.Sequential:
    """One ResNet stage of torchvision ``Bottleneck`` blocks with a per-block dilation (for multi-grid)."""
    out = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
    blocks = [Bottleneck(inplanes, planes, stride, downsample, dilation=dilations[0])]
    blocks += [Bottleneck(out, planes, dilation=d) for d in dilations[1:]]
    return nn.Sequential(*blocks)


# ----------------------------------------------------------------------------------------------------------------
# MobileNetV3-Large
# ----------------------------------------------------------------------------------------------------------------


class MobileNetV3Backbone(nn.Module):
    """torchvision's MobileNetV3-Large ``features`` (Howard et al. 2019) without the classifier.

    ``output_stride`` 16 dilates the last stage (torchvision ``dilated=True``, as its DeepLab v3 does); 32 keeps
    it strided. Returns ``{"low": [B,24w,H/4,W/4], "aux": [B,112w,H/16,W/16], "out": [B,960w,H/os,W/os]}``.
    """

    def __init__(self, *, in_channels: int = 3, width: float = 1.0, output_stride: int = 16) -> None:
        super().__init__()
        if output_stride not in (16, 32):
            raise SegbenchError(
                f"output_stride={output_stride}: mobilenet_v3_large supports 16 or 32 (torchvision dilates only "
                "its last stage); use a resnet backbone for 8"
            )
        net = torchvision.models.mobilenet_v3_large(weights=None, width_mult=width, dilated=output_stride == 16)
        self.features = net.features
        # torchvision builds these BatchNorms with momentum 0.01 (its long ImageNet recipe): in a short run the
        # running statistics barely leave their init and eval-mode outputs collapse. Segmentation recipes use 0.1.
        for module in self.features.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
        if in_channels != 3:
            old = self.features[0][0]
            self.features[0][0] = nn.Conv2d(in_channels, old.out_channels, 3, stride=2, padding=1, bias=False)
            nn.init.kaiming_normal_(self.features[0][0].weight, mode="fan_out")
        self.name = "mobilenet_v3_large"
        self.weights_name = "MobileNet_V3_Large_Weights"
        self.first_conv = "features.0.0.weight"
        self.output_stride = output_stride
        # Blocks flagged _is_cn start a new stage (stride 2, or dilation in place of it): 4, 8, 16, 32.
        starts = [i for i, block in enumerate(self.features) if getattr(block, "_is_cn", False)]
        self._low, self._aux = starts[1] - 1, starts[3] - 1
        self.channels = {
            "low": self.features[self._low].out_channels,
            "aux": self.features[self._aux].out_channels,
            "out": self.features[-1].out_channels,
        }

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        result = {}
        for i, block in enumerate(self.features):
            x = block(x)
            if i == self._low:
                result["low"] = x
            elif i == self._aux:
                result["aux"] = x
        result["out"] = x
        return result


# ----------------------------------------------------------------------------------------------------------------
# VGG16 with fc6/fc7 as convolutions
# ----------------------------------------------------------------------------------------------------------------

_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16Backbone(nn.Module):
    """VGG16 (Simonyan & Zisserman 2015) whose fully connected fc6/fc7 are convolutions.

    ``style="fcn"`` (FCN Sec. 3.1, 4.1; the reference Caffe net): conv1_1 padded by 100 and 2x2 max-pools that
    round up, so that pool5 is never smaller than fc6's 7x7 window and the up-sampled scores always cover the
    input; fc6 = 7x7x4096 (valid), fc7 = 1x1x4096. Every later crop offset follows from these numbers.

    ``style="largefov"`` (DeepLab v1 Sec. 3.1, 4.1, "DeepLab-LargeFOV"): 3x3 max-pools with stride 2, 2, 2, 1, 1,
    conv5 dilated by 2 and fc6 = 3x3x1024 dilated by 12, fc7 = 1x1x1024: output stride 8 with a large field of view.

    ``fc_channels`` defaults to 4096 (fcn) or 1024 (largefov) times ``width``. Dropout 0.5 follows fc6 and fc7.
    Returns ``{"pool3": [B,256w,~H/8,~W/8], "pool4": [B,512w,...], "out": [B,fc,...]}``.
    """

    def __init__(
        self, *, style: str = "fcn", in_channels: int = 3, width: float = 1.0, fc_channels: int | None = None
    ) -> None:
        super().__init__()
        if style not in ("fcn", "largefov"):
            raise SegbenchError(f"VGG16Backbone: style='{style}'; use 'fcn' or 'largefov'")
        fcn = style == "fcn"
        fc = fc_channels or scaled(4096 if fcn else 1024, width)
        layers: list[nn.Module] = []
        c_in, pool = in_channels, 0
        for v in _VGG16:
            if v == "M":
                pool += 1
                if fcn:
                    layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
                else:  # DeepLab: pool4/pool5 at stride 1 keep output stride 8
                    layers.append(nn.MaxPool2d(3, stride=2 if pool <= 3 else 1, padding=1, ceil_mode=True))
                continue
            first, conv5 = not layers, pool == 4
            dilation = 2 if conv5 and not fcn else 1
            padding = 100 if first and fcn else dilation
            layers += [nn.Conv2d(c_in, scaled(v, width), 3, padding=padding, dilation=dilation), nn.ReLU(inplace=True)]
            c_in = scaled(v, width)
        self.features = nn.Sequential(*layers)  # torchvision's indices: pool3 = 16, pool4 = 23, pool5 = 30
        if fcn:
            self.fc6 = nn.Conv2d(c_in, fc, 7)
        else:
            self.fc6 = nn.Conv2d(c_in, fc, 3, padding=12, dilation=12)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.name = "vgg16"
        self.weights_name = "VGG16_Weights"
        self.first_conv = "features.0.weight"
        self.output_stride = 32 if fcn else 8
        self.channels = {"pool3": scaled(256, width), "pool4": scaled(512, width), "out": fc}
        _kaiming_init(self)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        result = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == 16:
                result["pool3"] = x
            elif i == 23:
                result["pool4"] = x
        x = self.drop(self.relu(self.fc6(x)))
        result["out"] = self.drop(self.relu(self.fc7(x)))
        return result

    def convert_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Map torchvision's VGG16 ``classifier.0/3`` (Linear) onto fc6/fc7 (conv), FCN's "convolutionalization".

        A 4096x25088 fc6 is the 7x7x512 convolution reshaped (FCN Sec. 3.1). For LargeFOV's smaller fc6/fc7 the
        weights are decimated: every 4th filter and every 3rd tap of the 7x7 window (DeepLab v1 Sec. 4.1).
        """
        if "classifier.0.weight" not in state or "fc6.weight" in state:
            return state
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")} | {
            "fc6.weight": state["classifier.0.weight"].reshape(4096, -1, 7, 7),
            "fc6.bias": state["classifier.0.bias"],
            "fc7.weight": state["classifier.3.weight"].reshape(4096, 4096, 1, 1),
            "fc7.bias": state["classifier.3.bias"],
        }
        if self.fc6.kernel_size == (3, 3) and self.fc6.out_channels * 4 == 4096:
            state["fc6.weight"] = state["fc6.weight"][::4, :, ::3, ::3]
            state["fc6.bias"] = state["fc6.bias"][::4]
            state["fc7.weight"] = state["fc7.weight"][::4, ::4]
            state["fc7.bias"] = state["fc7.bias"][::4]
        return state


# ----------------------------------------------------------------------------------------------------------------
# Pretrained weights (offline only)
# ----------------------------------------------------------------------------------------------------------------


def load_backbone_weights(backbone: nn.Module, source: str | os.PathLike | None) -> None:
    """Load ImageNet (or any) weights into ``backbone`` in place; ``None`` keeps the random init.

    ``source``: ``"imagenet"`` (torchvision's default weights for this backbone), a torchvision weights name such
    as ``"ResNet50_Weights.IMAGENET1K_V1"`` (both only if the file is already in the torch hub cache; nothing is
    downloaded), or a path to a state dict (``.pth``/``.pt`` read with ``weights_only=True``, or ``.safetensors``).
    Keys may carry a ``backbone.`` prefix; extra keys (a classifier) are ignored. A first convolution trained on
    RGB is adapted to ``in_channels`` (summed for 1 channel, else tiled and rescaled as timm does).
    Raises SegbenchError when the file is missing or its keys/shapes do not match.
    """
    if source is None:
        return
    source = str(source)
    if source == "imagenet" or re.fullmatch(r"\w+_Weights\.\w+", source):
        state, where = _torchvision_state(backbone, source)
    else:
        state, where = _file_state(source), source
    if not any(k in state for k in backbone.state_dict()):
        state = {k.removeprefix("backbone."): v for k, v in state.items()}
    if hasattr(backbone, "convert_state"):
        state = backbone.convert_state(state)
    own = backbone.state_dict()
    first = backbone.first_conv
    if first in state and first in own and state[first].dim() == 4:
        state[first] = _adapt_first_conv(state[first], own[first].shape[1])
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        detail = f"{len(missing)} missing (e.g. '{missing[0]}')" if missing else ""
        if wrong:
            k = wrong[0]
            detail += (", " if detail else "") + (
                f"{len(wrong)} of another shape (e.g. '{k}': {tuple(state[k].shape)} in the file, "
                f"{tuple(own[k].shape)} here)"
            )
        raise SegbenchError(
            f"{where}: keys do not match the {backbone.name} backbone ({detail}); pass a state dict of "
            f"torchvision's {backbone.name} and build the model with width=1.0"
        )
    backbone.load_state_dict({k: state[k] for k in own if k in state}, strict=False)


def _torchvision_state(backbone: nn.Module, source: str) -> tuple[dict[str, Tensor], str]:
    """The state dict of a torchvision weights enum, read from the hub cache; never downloads."""
    try:
        name = f"{backbone.weights_name}.DEFAULT" if source == "imagenet" else source
        weights = torchvision.models.get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise SegbenchError(
            f"backbone_weights='{source}': unknown torchvision weights; use 'imagenet', e.g. "
            f"'{backbone.weights_name}.IMAGENET1K_V1', or a local file path"
        ) from None
    filename = os.path.basename(urlparse(weights.url).path)
    path = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    # Checked before asking torchvision, whose loader would otherwise download the file.
    if not os.path.isfile(path):
        raise SegbenchError(
            f"{weights} is not available offline: put the file at {path} or pass backbone_weights=PATH"
        )
    return _file_state(path), str(weights)


def _file_state(path: str) -> dict[str, Tensor]:
    if not os.path.isfile(path):
        raise SegbenchError(
            f"{path}: backbone weights file not found; pass an existing .pth/.safetensors state dict or "
            "backbone_weights='imagenet'"
        )
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: one line, not a traceback
        raise SegbenchError(
            f"{path}: cannot read backbone weights ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
            "pass a state dict saved with torch.save(model.state_dict()) or safetensors"
        ) from None
    for key in ("state_dict", "model"):  # checkpoints that wrap the state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise SegbenchError(f"{path}: not a state dict of tensors; save one with torch.save(model.state_dict())")
    return dict(state)


def _adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """Adapt RGB filters [O,3,k,k] to ``in_channels``: sum for grey (R=G=B gives the same response), else tile
    the RGB filters and rescale by 3/in_channels so activations keep their magnitude (timm's adapt_input_conv)."""
    if weight.shape[1] == in_channels or weight.shape[1] != 3:
        return weight
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    repeats = math.ceil(in_channels / 3)
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (3 / in_channels)
