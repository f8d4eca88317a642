"""Datasets: one plain dict from public name to a keyword-only factory (``registry.DATASETS``), and the
``DatasetInfo`` every dataset carries.

Semantic sample: ``(image uint8 [C,H,W], mask int64 [H,W])``, mask values in ``[0, num_classes)`` or
``info.ignore_index`` (255). Instance sample (``task="instance"``): ``(image uint8 [C,H,W], {"boxes": float32 [N,4]
xyxy, "labels": int64 [N] (>= 1), "masks": uint8 [N,H,W]})``, N = 0 allowed.

A factory in ``DATASETS`` is called as ``factory(split=..., root=..., task=..., transform=..., **options)`` and
returns a ``torch.utils.data.Dataset`` with an ``.info: DatasetInfo``; ``root`` is the dataset's own folder (e.g.
``.../data/camvid``) and may be None for datasets that read nothing from disk.

The names below are imported on first use (PEP 562), so that torch-free modules of this package (``info``,
``formats``) can be imported by the command line's parser without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports on first use
    from .info import DatasetInfo
    from .registry import DATASETS, build_dataset, dataset_info, default_root

_LAZY = {"DATASETS": "registry", "build_dataset": "registry", "dataset_info": "registry",
         "default_root": "registry", "DatasetInfo": "info"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
