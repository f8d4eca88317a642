"""Cityscapes (``cityscapes``): 19-class urban street scenes, 1024x2048, read from the official package layout.

Layout (``data_root`` is the folder holding ``leftImg8bit`` and ``gtFine``, or its parent with ``cityscapes/``)::

    leftImg8bit/{train,val,test}/<city>/<stem>_leftImg8bit.png          2975 / 500 / 1525 images
    gtFine/{train,val}/<city>/<stem>_gtFine_labelIds.png                label ids 0..33 (the table below)
    gtFine/{train,val}/<city>/<stem>_gtFine_instanceIds.png             16-bit: class id * 1000 + k, or class id
    gtCoarse/{train,train_extra,val}/<city>/<stem>_gtCoarse_labelIds.png   optional (dataset_args: {mode: coarse})

Label ids map to the 19 train ids of cityscapesScripts' ``helpers/labels.py`` (``LABELS`` below: id, name,
train id, category, has instances, colour); every other id (void, parking, rail track, guard rail, bridge,
tunnel, pole group, caravan, trailer) is ignore (255), as the benchmark scores it. ``mode: coarse`` reads
``gtCoarse`` instead (splits ``train``, ``train_extra``, ``val``) with the same table. The test split's labels are
withheld by the benchmark server, so ``test`` is refused.

Instances (``task="instance"``, Mask R-CNN): ``*_gtFine_instanceIds.png``; a value >= 1000 is one object of class
``value // 1000``; values < 1000 are a class id without instances: stuff, or a crowd region of a "thing" class
(kept with ``iscrowd`` 1, which Mask R-CNN leaves out of its loss, as detectron2's Cityscapes loader does). Only the
8 train classes with instances are objects: labels 1..8 = person, rider, car, truck, bus, train, motorcycle,
bicycle (train ids 11..18); label 0 is background. Pixels no detection covers are scored as road (train id 0),
the most frequent class of Cityscapes, a fixed choice that never looks at the scored split.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import SegbenchError
from .info import DatasetInfo
from .folder import PairedImageMask
from .instances import InstanceDataset, empty_target
from .io import check_same_size, read_image, read_mask
from .layout import LabelTable, Scan, scan_suffixed
from .transforms import boxes_from_masks


class Label(NamedTuple):
    id: int
    name: str
    train_id: int  # 255 = ignored in training and evaluation
    category: str
    has_instances: bool
    color: tuple[int, int, int]


# cityscapesScripts helpers/labels.py (Cordts et al. 2016), the official table
LABELS = (
    Label(0, "unlabeled", 255, "void", False, (0, 0, 0)),
    Label(1, "ego vehicle", 255, "void", False, (0, 0, 0)),
    Label(2, "rectification border", 255, "void", False, (0, 0, 0)),
    Label(3, "out of roi", 255, "void", False, (0, 0, 0)),
    Label(4, "static", 255, "void", False, (0, 0, 0)),
    Label(5, "dynamic", 255, "void", False, (111, 74, 0)),
    Label(6, "ground", 255, "void", False, (81, 0, 81)),
    Label(7, "road", 0, "flat", False, (128, 64, 128)),
    Label(8, "sidewalk", 1, "flat", False, (244, 35, 232)),
    Label(9, "parking", 255, "flat", False, (250, 170, 160)),
    Label(10, "rail track", 255, "flat", False, (230, 150, 140)),
    Label(11, "building", 2, "construction", False, (70, 70, 70)),
    Label(12, "wall", 3, "construction", False, (102, 102, 156)),
    Label(13, "fence", 4, "construction", False, (190, 153, 153)),
    Label(14, "guard rail", 255, "construction", False, (180, 165, 180)),
    Label(15, "bridge", 255, "construction", False, (150, 100, 100)),
    Label(16, "tunnel", 255, "construction", False, (150, 120, 90)),
    Label(17, "pole", 5, "object", False, (153, 153, 153)),
    Label(18, "polegroup", 255, "object", False, (153, 153, 153)),
    Label(19, "traffic light", 6, "object", False, (250, 170, 30)),
    Label(20, "traffic sign", 7, "object", False, (220, 220, 0)),
    Label(21, "vegetation", 8, "nature", False, (107, 142, 35)),
    Label(22, "terrain", 9, "nature", False, (152, 251, 152)),
    Label(23, "sky", 10, "sky", False, (70, 130, 180)),
    Label(24, "person", 11, "human", True, (220, 20, 60)),
    Label(25, "rider", 12, "human", True, (255, 0, 0)),
    Label(26, "car", 13, "vehicle", True, (0, 0, 142)),
    Label(27, "truck", 14, "vehicle", True, (0, 0, 70)),
    Label(28, "bus", 15, "vehicle", True, (0, 60, 100)),
    Label(29, "caravan", 255, "vehicle", True, (0, 0, 90)),
    Label(30, "trailer", 255, "vehicle", True, (0, 0, 110)),
    Label(31, "train", 16, "vehicle", True, (0, 80, 100)),
    Label(32, "motorcycle", 17, "vehicle", True, (0, 0, 230)),
    Label(33, "bicycle", 18, "vehicle", True, (119, 11, 32)),
    Label(-1, "license plate", 255, "vehicle", False, (0, 0, 142)),  # never stored in labelIds PNGs
)

TRAIN_LABELS = sorted((lab for lab in LABELS if lab.train_id != 255), key=lambda lab: lab.train_id)
THINGS = [lab for lab in TRAIN_LABELS if lab.has_instances]  # instance labels 1..8, in train-id order
FILL = 0  # road: the class of pixels no detection covers (module docstring)
SPLITS = {"fine": ("train", "val"), "coarse": ("train", "train_extra", "val")}

INFO = DatasetInfo(
    name="cityscapes",
    num_classes=19,
    class_names=tuple(lab.name for lab in TRAIN_LABELS),
    ignore_index=255,
    in_channels=3,
    palette=tuple(lab.color for lab in TRAIN_LABELS),
    background_index=None,  # every train class is a region; none means "no object"
    license="Cityscapes licence: non-commercial research and teaching only, registration required "
            "(cityscapes-dataset.com/license)",
    hub_license=None,  # its own licence; no Hub id
    display_name="Cityscapes (19 classes)",
    citation=(
        "Cordts, Omran, Ramos, Rehfeld, Enzweiler, Benenson, Franke, Roth, Schiele 2016, The Cityscapes Dataset "
        "for Semantic Urban Scene Understanding, CVPR"
    ),
)

TABLE = LabelTable(
    {lab.id: lab.train_id for lab in LABELS if lab.id >= 0}, dataset="cityscapes", expected="label ids 0..33"
)
TREE = ("leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and gtFine/{train,val}/<city>/*_gtFine_labelIds.png "
        "(+ *_gtFine_instanceIds.png; gtCoarse/ for mode: coarse)")


# ================================================================ layout


def find_root(root: str | Path | None) -> Path:
    """The folder holding ``leftImg8bit`` (``root`` itself or ``root/cityscapes``)."""
    if root is None:
        raise SegbenchError("cityscapes: no data folder given and none found under $SEGBENCH_DATA; pass --data-root")
    root = Path(root)
    for candidate in (root, root / "cityscapes"):
        if (candidate / "leftImg8bit").is_dir():
            return candidate
    raise SegbenchError(f"{root}: missing leftImg8bit/ (Cityscapes not found); expected {TREE}")


def scan(root: str | Path | None, split: str, *, mode: str = "fine", target: str = "labelIds") -> Scan:
    """The split's (image, label) files; ``target`` "labelIds" (semantic) or "instanceIds" (fine only)."""
    base = find_root(root)
    if mode not in SPLITS:
        raise SegbenchError(f"cityscapes: unknown mode '{mode}'; use 'fine' or 'coarse'")
    if split not in SPLITS[mode]:
        hint = " (its labels are withheld by the benchmark server: evaluate on 'val')" if split == "test" else ""
        raise SegbenchError(f"cityscapes: unknown split '{split}' for mode {mode}{hint}; valid: {', '.join(SPLITS[mode])}")
    gt = "gtFine" if mode == "fine" else "gtCoarse"
    for needed in (base / "leftImg8bit" / split, base / gt / split):
        if not needed.is_dir():
            raise SegbenchError(f"{needed}: missing {needed.relative_to(base)}/; expected {TREE}")
    return scan_suffixed(base / "leftImg8bit" / split, base / gt / split, "_leftImg8bit.png", f"_{gt}_{target}.png",
                         recursive=True)


# ================================================================ datasets


class Cityscapes(PairedImageMask):
    """``(image uint8 [3,1024,2048], mask int64 [1024,2048])``: train ids 0..18, ignore 255 (LABELS table)."""

    def __init__(self, root: str | Path | None, split: str = "train", *, mode: str = "fine",
                 transform: Callable | None = None) -> None:
        self.split, self.mode = split, mode
        super().__init__(scan(root, split, mode=mode).require_complete("cityscapes"), INFO, transform=transform)

    def map_mask(self, raw: Tensor, path: Path) -> Tensor:
        return TABLE.map(raw, path)


class CityscapesInstances(InstanceDataset):
    """``(image, {"boxes", "labels" int64 [N] in 1..8, "masks" uint8 [N,H,W], "iscrowd" int64 [N]})`` from
    ``*_gtFine_instanceIds.png`` (module docstring). ``label_to_class`` maps labels to train ids (0 -> road)."""

    def __init__(self, root: str | Path | None, split: str = "train", *, transform: Callable | None = None) -> None:
        self.info, self.split, self.transform, self.task = INFO, split, transform, "instance"
        self.pairs = scan(root, split, target="instanceIds").require_complete("cityscapes (instanceIds)")
        # label id -> instance label (1..8), 0 for every id without instances
        self.id_to_label = torch.zeros(256, dtype=torch.int64)
        for label, lab in enumerate(THINGS, start=1):
            self.id_to_label[lab.id] = label

    fill = FILL
    num_labels = len(THINGS) + 1
    label_names = ("background", *(lab.name for lab in THINGS))
    label_to_class = torch.tensor([FILL, *(lab.train_id for lab in THINGS)], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image_path, ids_path = self.pairs[index]
        image = read_image(image_path, channels=3)
        ids = read_mask(ids_path)
        check_same_size(image, ids, image_path=image_path, mask_path=ids_path)
        class_id = torch.where(ids >= 1000, ids // 1000, ids)
        if bool((class_id > 33).any()) or bool((ids < 0).any()):
            raise SegbenchError(f"{ids_path}: instance ids must be class id (0..33) [* 1000 + k]; restore the file")
        label = self.id_to_label[class_id]
        uniq = ids[label > 0].unique()  # objects and crowd regions of the 8 thing classes
        if len(uniq) == 0:
            target = empty_target(*ids.shape)
            target["iscrowd"] = torch.zeros(0, dtype=torch.int64)
            return image, target
        masks = (ids[None] == uniq[:, None, None]).to(torch.uint8)
        labels = self.id_to_label[torch.where(uniq >= 1000, uniq // 1000, uniq)]
        return image, {"boxes": boxes_from_masks(masks), "labels": labels, "masks": masks,
                       "iscrowd": (uniq < 1000).to(torch.int64)}


def build(
    *,
    split: str,
    root: str | None = None,
    task: str = "semantic",
    transform: Callable | None = None,
    mode: str = "fine",
) -> Dataset:
    """``build_dataset("cityscapes", split="train"|"val", root=..., mode="fine"|"coarse")``."""
    if task == "instance":
        if mode != "fine":
            raise SegbenchError("cityscapes: instances come with gtFine only; use mode: fine for Mask R-CNN")
        return CityscapesInstances(root, split, transform=transform)
    if task != "semantic":
        raise SegbenchError(f"cityscapes: unknown task '{task}'; use 'semantic' or 'instance'")
    return Cityscapes(root, split, mode=mode, transform=transform)


build.info = INFO  # type: ignore[attr-defined]  (static info: no files read)
build.scan = scan  # type: ignore[attr-defined]  (the data doctor's listing)
build.table = TABLE  # type: ignore[attr-defined]  (stored value -> class, for the data doctor)
build.splits = lambda mode="fine", **_: SPLITS.get(mode, SPLITS["fine"])  # type: ignore[attr-defined]
