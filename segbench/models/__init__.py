"""Model lookup: one plain dict from public name to keyword-only builder.

Every builder takes ``num_classes`` and ``in_channels`` plus its own options and returns a module with
``task`` ("semantic" or "instance"), ``family`` and ``variant`` attributes (see each family's file).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from ..errors import SegbenchError, nearest
from .unet import BUILDERS as _UNET

MODELS: dict[str, Callable[..., nn.Module]] = {**_UNET}

for _module in ("fcn", "deeplab", "maskrcnn"):
    # Families land one by one; each file exposes BUILDERS.
    try:
        MODELS.update(__import__(f"{__name__}.{_module}", fromlist=["BUILDERS"]).BUILDERS)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{_module}":
            raise


def model_options(name: str) -> dict[str, object]:
    """The keyword options of model ``name`` with their defaults (``num_classes`` excluded)."""
    builder = get_builder(name)
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(builder).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "num_classes"
    }


def get_builder(name: str) -> Callable[..., nn.Module]:
    if name not in MODELS:
        raise SegbenchError(
            f"unknown model '{name}'{nearest(name, MODELS)}; valid models: {', '.join(sorted(MODELS))}"
        )
    return MODELS[name]


def check_model_args(name: str, kwargs: dict[str, object]) -> None:
    """Reject options that model ``name`` does not take, suggesting the nearest one."""
    options = model_options(name)
    for key in kwargs:
        if key not in options:
            raise SegbenchError(
                f"model '{name}' has no option '{key}'{nearest(key, options)}; "
                f"its options: {', '.join(sorted(options))}"
            )


def model_task(name: str) -> str:
    """"instance" for Mask R-CNN builders, else "semantic" (known without building the model)."""
    return "instance" if get_builder(name).__module__.endswith(".maskrcnn") else "semantic"


def build_model(name: str, *, num_classes: int, **kwargs: object) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs; unknown names or options raise SegbenchError."""
    builder = get_builder(name)
    check_model_args(name, kwargs)
    return builder(num_classes=num_classes, **kwargs)
