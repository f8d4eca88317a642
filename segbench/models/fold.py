"""Fold BatchNorm into the convolution before it, for inference (the predict path's ``fast`` mode).

In eval mode BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``, so a
``Conv2d`` followed directly by it equals one ``Conv2d`` with scaled weights and a bias (``torch.nn.utils.fusion``'s
``fuse_conv_bn_weights``). Eager PyTorch runs BatchNorm as a separate pass over the activations: on the project's
2-core CPU it is 28 % of EfficientNet-Lite0's forward time in bf16 and more in fp32 (measured with
``torch.profiler``; see README, Speed).

Pairs that are folded, where the data flow is known to be conv -> BN with nothing between:
  * neighbours (``Conv2d`` then ``BatchNorm2d`` / ``FrozenBatchNorm2d``) in an ``nn.Sequential`` or torchvision's
    ``IntermediateLayerGetter`` whose ``forward`` is not overridden: our ``ConvBN``, U-Net's ``DoubleConv``, ASPP
    branches, torchvision's ``Conv2dNormActivation``, ResNet ``downsample`` and the detection backbones' stem;
  * ``convN`` / ``bnN`` attributes of torchvision's ``ResNet``, ``BasicBlock``, ``Bottleneck`` and our
    ``ResNetBackbone`` (their forward is ``bnN(convN(x))``).
Not folded: DeepLab's image-pooling BN (it runs on a 1 x 1 map).
The BN module becomes ``nn.Identity``. Outputs equal the unfolded model's up to float rounding. Only for a model in
eval mode that will not be trained again (the batch statistics are gone): ``Predictor`` folds its own copy.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops.misc import FrozenBatchNorm2d

from ..errors import SegbenchError
from .backbones import ResNetBackbone

__all__ = ["fold_batchnorm", "folded_copy", "has_batchnorm"]

_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)
_IN_ORDER = (nn.Sequential, IntermediateLayerGetter)  # children run one after the other...
_IN_ORDER_FORWARDS = (nn.Sequential.forward, IntermediateLayerGetter.forward)  # ...unless a subclass says otherwise
_RESNET_PARTS = (ResNet, BasicBlock, Bottleneck, ResNetBackbone)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` holds a BatchNorm2d or FrozenBatchNorm2d (something :func:`fold_batchnorm` may fold)."""
    return any(isinstance(m, _NORMS) for m in model.modules())


def folded_copy(model: nn.Module) -> tuple[nn.Module, int]:
    """(a folded deep copy of ``model`` in eval mode, layers folded); ``model`` itself and 0 when it has no
    BatchNorm. The caller's model keeps its BatchNorm, so it can still be trained or saved."""
    if not has_batchnorm(model):
        return model, 0
    model = copy.deepcopy(model.eval())
    return model, fold_batchnorm(model)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every known conv -> BN pair of ``model`` (in eval mode) in place; returns how many were folded."""
    if model.training:
        raise SegbenchError("fold_batchnorm: the model is in training mode; call model.eval() first (folding uses "
                            "the running statistics and removes BatchNorm)")
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, _IN_ORDER) and type(module).forward in _IN_ORDER_FORWARDS:
            names = list(module._modules)
            pairs = list(zip(names, names[1:]))
        elif isinstance(module, _RESNET_PARTS):
            pairs = [(f"conv{i}", f"bn{i}") for i in (1, 2, 3) if hasattr(module, f"conv{i}")]
        else:
            continue
        for conv_name, norm_name in pairs:
            folded += _fold_pair(module, conv_name, norm_name)
    return folded


def _fold_pair(parent: nn.Module, conv_name: str, norm_name: str) -> int:
    conv, norm = parent._modules.get(conv_name), parent._modules.get(norm_name)
    if not isinstance(conv, nn.Conv2d) or not isinstance(norm, _NORMS):
        return 0
    if conv.out_channels != norm.running_var.numel():
        return 0
    if isinstance(norm, nn.BatchNorm2d) and norm.running_mean is None:  # track_running_stats=False: batch stats
        return 0
    eps = norm.eps if isinstance(norm.eps, float) else float(norm.eps)
    gamma = norm.weight if norm.weight is not None else torch.ones_like(norm.running_mean)
    beta = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
    with torch.no_grad():
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var, eps, gamma,
                                            beta)
    conv.weight, conv.bias = weight, bias  # the same module (class and forward kept): a SAME-padded conv stays one
    parent._modules[norm_name] = nn.Identity()
    return 1
