"""The dataset table: one plain dict from public name to a keyword-only factory, ``build_dataset`` over it, and
where each dataset's files are found by default. The contracts are in ``segbench.data``'s docstring."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

from ..errors import SegbenchError, nearest
from . import ade20k, camvid, cityscapes, coco, folder, isbi, synthetic, via, voc
from .info import DatasetInfo

DATASETS: dict[str, Callable[..., Dataset]] = {
    "synthetic": synthetic.build,
    "isbi2012": isbi.build,
    "camvid": camvid.build,
    "folder": folder.build,
    "balloon": via.build,
    "coco": coco.build_coco,
    "instance_png": coco.build_instance_png,
    "voc": voc.build,
    "cityscapes": cityscapes.build,
    "ade20k": ade20k.build,
}

_REPO = Path(__file__).resolve().parents[2]


def default_root(name: str) -> str | None:
    """``$SEGBENCH_DATA/<name>``, else ``<repo>/../shared/data/<name>``, if that folder exists; otherwise None."""
    base = os.environ.get("SEGBENCH_DATA") or str(_REPO.parent / "shared" / "data")
    folder = Path(base).expanduser() / name
    return str(folder) if folder.is_dir() else None


def build_dataset(
    name: str,
    *,
    split: str,
    root: str | None = None,
    task: str = "semantic",
    transform: Callable | None = None,
    **kwargs: object,
) -> Dataset:
    """Build dataset ``name``; ``root`` defaults to ``default_root(name)``.

    Unknown names or options raise SegbenchError listing the valid ones.
    """
    if name not in DATASETS:
        raise SegbenchError(
            f"unknown dataset '{name}'{nearest(name, DATASETS)}; valid datasets: {', '.join(sorted(DATASETS))}"
        )
    if task not in ("semantic", "instance"):
        raise SegbenchError(f"{name}: unknown task '{task}'; use 'semantic' or 'instance'")
    factory = DATASETS[name]
    options = [
        p.name
        for p in inspect.signature(factory).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("split", "root", "task", "transform")
    ]
    for key in kwargs:
        if key not in options:
            raise SegbenchError(
                f"dataset '{name}' has no option '{key}'{nearest(key, options)}; "
                f"its options: {', '.join(sorted(options)) or 'none'}"
            )
    if root is None:
        root = default_root(name)
    return factory(split=split, root=root, task=task, transform=transform, **kwargs)


def dataset_info(name: str) -> DatasetInfo | None:
    """The static ``DatasetInfo`` of a built-in dataset (display name, classes, licence) without reading any file;
    None for datasets whose info depends on the files (folder, coco, instance_png)."""
    return getattr(DATASETS.get(name), "info", None)
