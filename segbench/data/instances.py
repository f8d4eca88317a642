"""Instances from semantic masks: the protocol that lets Mask R-CNN run on semantic-only datasets.

Protocol (``semantic_to_instances`` / ``InstanceView``):

* An instance is a **4-connected** component of one class's pixels (``scipy.ndimage.label`` with the cross
  structure; ``connectivity=8`` is available). 4-connectivity keeps two regions apart when they touch only at a
  corner, which is what separates ISBI cells across a one-pixel diagonal membrane.
* Components smaller than ``min_area`` pixels (default 16) are dropped: they are label noise or slivers cut by a
  crop, and COCO-style AP would count them as objects.
* Ignored pixels (``ignore_index``) belong to no instance.
* Which classes are instances, and their labels (torchvision reserves label 0 for background):
  - ``info.background_index == 0`` (ISBI: membrane, the synthetic set, balloon): every other class is a thing and
    its label is its class id;
  - ``info.background_index is None`` (CamVid): every class is a thing and its label is class id + 1;
  - any other ``background_index`` b: every class but b is a thing, label = class id + 1.
  ``InstanceView.num_labels`` is the Mask R-CNN ``num_classes`` (labels incl. background) and
  ``InstanceView.label_to_class`` maps labels back to semantic classes for ``metrics.to_semantic``.
* ``InstanceView.fill`` is the semantic class of pixels no detection covers: ``background_index`` when there is
  one; otherwise (CamVid) the most frequent class among up to 32 evenly spaced masks of the wrapped dataset (the best
  constant guess; for CamVid that is Building or Road), unless ``fill=`` is given.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import SegbenchError
from .transforms import boxes_from_masks

__all__ = ["semantic_to_instances", "instances_to_semantic", "InstanceView", "InstanceDataset", "empty_target"]


def empty_target(height: int, width: int) -> dict[str, Tensor]:
    """An instance target with no objects: boxes float32 [0,4], labels int64 [0], masks uint8 [0,H,W]."""
    return {
        "boxes": torch.zeros((0, 4), dtype=torch.float32),
        "labels": torch.zeros((0,), dtype=torch.int64),
        "masks": torch.zeros((0, height, width), dtype=torch.uint8),
    }


def semantic_to_instances(
    mask: Tensor,
    *,
    classes: list[int],
    min_area: int = 16,
    ignore_index: int = 255,
    label_offset: int = 0,
    connectivity: int = 4,
) -> dict[str, Tensor]:
    """Connected components of each class in ``classes`` -> an instance target.

    Args:
        mask: int64 [H,W] class indices (``ignore_index`` pixels belong to no instance).
        classes: the "thing" classes; components of other classes are not instances.
        min_area: components with fewer pixels are dropped.
        label_offset: instance label = class id + ``label_offset`` (labels must be >= 1).
        connectivity: 4 (edge neighbours, default) or 8 (edges and corners).

    Returns:
        ``{"boxes": float32 [N,4] xyxy pixel extents, "labels": int64 [N], "masks": uint8 [N,H,W]}``, instances
        ordered by class, then by scipy's raster order of components.
    """
    if connectivity not in (4, 8):
        raise SegbenchError(f"semantic_to_instances: connectivity={connectivity}; use 4 or 8")
    if any(c + label_offset < 1 for c in classes):
        raise SegbenchError(
            f"semantic_to_instances: class {min(classes)} + label_offset {label_offset} gives label < 1; "
            "label 0 is torchvision's background: raise label_offset"
        )
    h, w = mask.shape[-2:]
    array = mask.cpu().numpy()
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    ids = np.zeros((h, w), dtype=np.int64)
    labels: list[np.ndarray] = []
    count = 0
    for c in classes:  # one labelling per class; instances themselves are never looped over
        if c == ignore_index:
            continue
        comp, n = ndimage.label(array == c, structure=structure)
        if n:
            ids += np.where(comp > 0, comp + count, 0)
            labels.append(np.full(n, c + label_offset, dtype=np.int64))
            count += n
    if count == 0:
        return empty_target(h, w)
    ids_t = torch.from_numpy(ids)
    area = torch.bincount(ids_t.flatten(), minlength=count + 1)[1:]
    keep = torch.nonzero(area >= min_area).flatten()
    masks = (ids_t[None] == (keep + 1)[:, None, None]).to(torch.uint8)
    return {
        "boxes": boxes_from_masks(masks),
        "labels": torch.from_numpy(np.concatenate(labels))[keep],
        "masks": masks,
    }


class InstanceView(Dataset):
    """A semantic dataset seen as instances (module docstring: the protocol).

    ``view[i] -> (image uint8 [C,H,W], target)`` with the target of :func:`semantic_to_instances`, computed from the
    wrapped dataset's (transformed) sample ``i``. Attributes: ``info`` (the wrapped dataset's, semantic classes),
    ``num_labels`` (Mask R-CNN ``num_classes``, background included), ``label_to_class`` (int64 [num_labels]),
    ``label_names`` (tuple[str], "background" first), ``fill`` (int), ``thing_classes`` (list[int]).
    """

    def __init__(self, dataset: Dataset, *, min_area: int = 16, connectivity: int = 4, fill: int | None = None):
        info = dataset.info
        self.dataset, self.info = dataset, info
        self.min_area, self.connectivity = int(min_area), int(connectivity)
        bg = info.background_index
        self.thing_classes = [c for c in range(info.num_classes) if c != bg]
        self.label_offset = 0 if bg == 0 else 1
        self.num_labels = info.num_classes + self.label_offset
        if fill is not None and not 0 <= fill < info.num_classes:
            raise SegbenchError(f"{info.name}: fill={fill}; use a class index in 0..{info.num_classes - 1}")
        self._fill = fill if fill is not None else bg

    @property
    def fill(self) -> int:
        if self._fill is None:
            self._fill = self._most_frequent_class()
        return self._fill

    @cached_property
    def label_to_class(self) -> Tensor:
        """int64 [num_labels]: semantic class of each instance label (label 0, background, maps to ``fill``)."""
        classes = torch.arange(self.info.num_classes, dtype=torch.int64)
        if self.label_offset == 0:
            return classes
        return torch.cat([torch.tensor([self.fill]), classes])

    @property
    def label_names(self) -> tuple[str, ...]:
        names = self.info.class_names
        return names if self.label_offset == 0 else ("background", *names)

    def _most_frequent_class(self) -> int:
        n = len(self.dataset)
        picks = np.unique(np.linspace(0, n - 1, num=min(n, 32)).round().astype(int))
        load = getattr(self.dataset, "load", None)  # untransformed samples when the dataset offers them
        counts = torch.zeros(self.info.num_classes, dtype=torch.int64)
        for i in picks.tolist():
            mask = (load(i) if load else self.dataset[i])[1]
            valid = mask[(mask >= 0) & (mask < self.info.num_classes)]
            counts += torch.bincount(valid.flatten(), minlength=self.info.num_classes)
        return int(counts.argmax())

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, mask = self.dataset[index]
        target = semantic_to_instances(
            mask,
            classes=self.thing_classes,
            min_area=self.min_area,
            ignore_index=self.info.ignore_index,
            label_offset=self.label_offset,
            connectivity=self.connectivity,
        )
        return image, target


def instances_to_semantic(target: dict[str, Tensor], height: int, width: int, *, ignore_index: int = 255) -> Tensor:
    """Instance target -> int64 [H,W] class map (label = class; 0 where no instance). Where instances overlap the
    later one wins; crowd regions (``iscrowd`` 1) become ``ignore_index``."""
    masks = target["masks"].bool()
    if masks.shape[0] == 0:
        return torch.zeros((height, width), dtype=torch.int64)
    labels = target["labels"].to(torch.int64)
    if "iscrowd" in target:
        labels = torch.where(target["iscrowd"].bool(), ignore_index, labels)
    # index of the last instance covering each pixel (argmax finds the first max on the flipped stack)
    n = masks.shape[0]
    last = n - 1 - masks.flip(0).to(torch.uint8).argmax(0)
    return torch.where(masks.any(0), labels[last], 0)


class InstanceDataset(Dataset):
    """Base of the native instance datasets (balloon, COCO, instance PNGs): labels are class ids (background 0).

    Subclasses set ``info`` (class 0 = background) and ``task`` and implement ``load(index) -> (image, target)``;
    ``__getitem__`` returns ``(image, target)`` for task "instance" or ``(image, class map int64 [H,W])`` for
    "semantic" (``instances_to_semantic``), then applies ``transform(image, target)``.
    Same label attributes as ``InstanceView``: ``num_labels``, ``label_to_class``, ``label_names``, ``fill``.
    """

    info: object
    task: str = "instance"
    transform = None
    fill = 0

    @property
    def num_labels(self) -> int:
        return self.info.num_classes

    @property
    def label_to_class(self) -> Tensor:
        return torch.arange(self.info.num_classes, dtype=torch.int64)

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.info.class_names

    def load(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def __getitem__(self, index: int):
        image, target = self.load(index)
        if self.task == "semantic":
            target = instances_to_semantic(target, *image.shape[-2:], ignore_index=self.info.ignore_index)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def check_task(name: str, task: str) -> str:
    if task not in ("instance", "semantic"):
        raise SegbenchError(f"{name}: unknown task '{task}'; use 'instance' or 'semantic'")
    return task


class Problems:
    """Collects bad-input findings while an annotation file is parsed and reports them as warnings, one line each
    (the first ``limit``; then one line with the count of the rest). Usage: ``problems.add(msg)``, ``.report()``."""

    def __init__(self, source: str, limit: int = 10):
        self.source, self.limit, self.lines = source, limit, []

    def add(self, message: str) -> None:
        self.lines.append(message)

    def report(self) -> None:
        import warnings

        for line in self.lines[: self.limit]:
            warnings.warn(f"{self.source}: {line}", stacklevel=3)
        if len(self.lines) > self.limit:
            warnings.warn(f"{self.source}: {len(self.lines) - self.limit} more problems like the above", stacklevel=3)
