"""Model lookup: one plain dict from public name to keyword-only builder.

Every builder takes ``num_classes`` plus its own options (``OPTIONS[name]``: option -> default) and returns a
module with ``task`` ("semantic" or "instance"), ``family`` (a key of ``families.FAMILIES``, the table of families)
and ``variant`` attributes. Semantic models are
``Segmenter``s (segmenter.py; FCN-ResNet, DeepLab), ``FCNVGG`` or ``UNet``; instance models are ``MaskRCNN``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import SegbenchError, nearest
from . import deeplab, fcn, maskrcnn, unet
from .families import FAMILIES
from .options import merge_options

__all__ = ["FAMILIES", "FAMILY_OF", "MODELS", "OPTIONS", "TASKS", "build_model", "check_model_args", "get_builder",
           "model_options", "model_task"]  # fmt: skip

_FILES = {module.__name__.rpartition(".")[2]: module for module in (deeplab, fcn, maskrcnn, unet)}
_FAMILIES = tuple(_FILES[key] for key in FAMILIES)  # in the table's order; a row without its file fails here

MODELS: dict[str, Callable[..., nn.Module]] = {
    name: builder for family in _FAMILIES for name, builder in family.BUILDERS.items()
}
TASKS: dict[str, str] = {name: family.TASK for family in _FAMILIES for name in family.BUILDERS}
FAMILY_OF: dict[str, str] = {name: key for key in FAMILIES for name in _FILES[key].BUILDERS}
OPTIONS: dict[str, dict[str, object]] = {
    name: family.DEFAULTS[name] for family in _FAMILIES for name in family.BUILDERS
}


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The builder of model ``name``; an unknown name raises SegbenchError listing the valid ones."""
    if name not in MODELS:
        raise SegbenchError(
            f"unknown model '{name}'{nearest(name, MODELS)}; valid models: {', '.join(sorted(MODELS))}"
        )
    return MODELS[name]


def model_options(name: str) -> dict[str, object]:
    """The keyword options of model ``name`` with their defaults (``num_classes`` excluded)."""
    get_builder(name)
    return dict(OPTIONS[name])


def check_model_args(name: str, kwargs: dict[str, object]) -> None:
    """Reject options that model ``name`` does not take, suggesting the nearest one."""
    merge_options(name, model_options(name), kwargs)


def model_task(name: str) -> str:
    """"semantic" or "instance", from the builder table (known without building the model)."""
    get_builder(name)
    return TASKS[name]


def build_model(name: str, *, num_classes: int, **kwargs: object) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs; unknown names or options raise SegbenchError."""
    return get_builder(name)(num_classes=num_classes, **kwargs)
