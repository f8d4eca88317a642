"""PASCAL VOC 2012 segmentation (``voc``): 20 object classes + background, read from the devkit layout as shipped.

Layout (``data_root`` may be ``VOCdevkit``, ``VOC2012`` or the folder holding ``VOCdevkit``)::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
                      SegmentationClass/<id>.png        palette PNG: index 0..20, 255 = object border (ignored)
                      SegmentationObject/<id>.png       palette PNG: object 1..N, 0 = background, 255 = border
                      ImageSets/Segmentation/{train,val,trainval}.txt     1464 / 1449 / 2913 ids
    optional SBD augmentation (Hariharan et al. 2011, as DeepLab uses it):
                      SegmentationClassAug/<id>.png     grey PNG, same values
                      ImageSets/Segmentation/train_aug.txt               10582 ids (train + SBD, minus val)

Splits: ``train``, ``val``, ``trainval``; the test set's labels are not public (a ``test`` split is refused).
**Augmentation is explicit** (``dataset_args: {augmented: true}``), never auto-detected: the training set then
is ``train_aug.txt`` with masks from ``SegmentationClassAug`` (``val`` is unchanged: ``SegmentationClass``), and
because the option is part of the config it is part of the record's id. A missing SBD folder is an error.

Instances (``task="instance"``, Mask R-CNN): each object id of ``SegmentationObject`` is one instance; its class
is the majority class of ``SegmentationClass`` under it (constant in VOC); the 255 border belongs to no instance.
Labels are the class ids 1..20 (background 0). SBD's instance masks are not part of this layout, so
``augmented: true`` with ``task="instance"`` is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import SegbenchError
from .info import DatasetInfo
from .folder import PairedImageMask, default_palette
from .instances import InstanceDataset, empty_target
from .io import check_same_size, read_image, read_mask
from .layout import LabelTable, Scan, read_split_list, scan_listed
from .transforms import boxes_from_masks

SPLITS = ("train", "val", "trainval")
BORDER = 255  # VOC's object outline: ignored by every metric and loss

CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

INFO = DatasetInfo(
    name="voc",
    num_classes=21,
    class_names=CLASSES,
    ignore_index=255,
    in_channels=3,
    palette=default_palette(21),  # the devkit's colour map (bit-interleaved index), as in its palette PNGs
    background_index=0,
    license="Flickr images under their owners' terms; PASCAL VOC terms: research use",
    hub_license=None,  # no Hub licence id covers the VOC terms
    display_name="PASCAL VOC 2012 (21 classes)",
    citation=(
        "Everingham, Van Gool, Williams, Winn, Zisserman 2010, The PASCAL Visual Object Classes (VOC) Challenge, "
        "IJCV 88(2); SBD: Hariharan, Arbelaez, Bourdev, Maji, Malik 2011, Semantic contours from inverse "
        "detectors, ICCV"
    ),
)

TABLE = LabelTable({**{i: i for i in range(21)}, BORDER: 255}, dataset="voc", expected="0..20 and 255 (border)")
TREE = (
    "VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, SegmentationObject, ImageSets/Segmentation/{train,val}.txt}"
    " (+ SegmentationClassAug, ImageSets/Segmentation/train_aug.txt for augmented: true)"
)


# ================================================================ layout


def find_root(root: str | Path | None) -> Path:
    """The ``VOC2012`` folder under ``root`` (VOCdevkit, VOC2012 itself, or their parent)."""
    if root is None:
        raise SegbenchError("voc: no data folder given and none found under $SEGBENCH_DATA; pass --data-root <folder>")
    root = Path(root)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise SegbenchError(f"{root}: missing JPEGImages/ (PASCAL VOC 2012 not found); expected {TREE}")


def scan(root: str | Path | None, split: str, *, augmented: bool = False, target: str = "class") -> Scan:
    """The split's (image, mask) files; ``target`` "class" (semantic masks) or "object" (instance ids)."""
    base = find_root(root)
    if split not in SPLITS:
        hint = " (its labels are not public: evaluate on 'val')" if split == "test" else ""
        raise SegbenchError(f"voc: unknown split '{split}'{hint}; valid splits: {', '.join(SPLITS)}")
    use_aug = augmented and split == "train"
    if use_aug and target == "object":
        raise SegbenchError(
            "voc: augmented: true has no instance masks (SBD's are not in this layout); use augmented: false "
            "for Mask R-CNN"
        )
    folder = {"class": "SegmentationClassAug" if use_aug else "SegmentationClass", "object": "SegmentationObject"}
    masks = base / folder[target]
    lists = base / "ImageSets" / "Segmentation"
    list_path = lists / ("train_aug.txt" if use_aug else f"{split}.txt")
    for needed in (masks, list_path):
        if not needed.exists():
            extra = " (SBD augmentation: pass augmented: false to train on the 1464 VOC images)" if use_aug else ""
            raise SegbenchError(f"{needed}: missing {needed.name}{extra}; expected {TREE}")
    ids = read_split_list(list_path, "voc")
    return scan_listed(ids, lambda i: base / "JPEGImages" / f"{i}.jpg", lambda i: masks / f"{i}.png")


# ================================================================ datasets


class VOCSegmentation(PairedImageMask):
    """``(image uint8 [3,H,W], mask int64 [H,W])``; classes 0..20 (0 background), ignore 255 (the object border).
    Images are about 500x375 and differ in size."""

    def __init__(self, root: str | Path | None, split: str = "train", *, augmented: bool = False,
                 transform: Callable | None = None) -> None:
        self.split, self.augmented = split, augmented
        super().__init__(scan(root, split, augmented=augmented).require_complete("voc"), INFO, transform=transform)

    def map_mask(self, raw: Tensor, path: Path) -> Tensor:
        return TABLE.map(raw, path)


class VOCInstances(InstanceDataset):
    """``(image uint8 [3,H,W], {"boxes" float32 [N,4], "labels" int64 [N] in 1..20, "masks" uint8 [N,H,W]})`` from
    ``SegmentationObject`` + ``SegmentationClass`` (module docstring). Background label 0, fill class 0."""

    def __init__(self, root: str | Path | None, split: str = "train", *, transform: Callable | None = None) -> None:
        self.info, self.split, self.transform, self.task = INFO, split, transform, "instance"
        self.objects = scan(root, split, target="object").require_complete("voc (SegmentationObject)")
        self.classes = dict(scan(root, split, target="class").require_complete("voc"))

    def __len__(self) -> int:
        return len(self.objects)

    def load(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image_path, object_path = self.objects[index]
        image = read_image(image_path, channels=3)
        ids = read_mask(object_path)
        classes = TABLE.map(read_mask(self.classes[image_path]), self.classes[image_path])
        check_same_size(image, ids, image_path=image_path, mask_path=object_path)
        check_same_size(image, classes, image_path=image_path, mask_path=self.classes[image_path])
        uniq = ids.unique()
        uniq = uniq[(uniq > 0) & (uniq != BORDER)]
        if len(uniq) == 0:
            return image, empty_target(*ids.shape)
        masks = ids[None] == uniq[:, None, None]  # [N,H,W]
        # majority class per object, one bincount over (object, class) pairs; border/ignore pixels do not vote
        inside = torch.searchsorted(uniq, ids.clamp(max=int(uniq.max())))
        vote = masks.any(0) & (classes != 255)
        votes = torch.bincount(inside[vote] * 21 + classes[vote], minlength=len(uniq) * 21).view(len(uniq), 21)
        labels = votes.argmax(1)
        keep = labels > 0  # an object drawn only over background (never in VOC) is no instance
        masks = masks[keep].to(torch.uint8)
        return image, {"boxes": boxes_from_masks(masks), "labels": labels[keep], "masks": masks}


def build(
    *,
    split: str,
    root: str | None = None,
    task: str = "semantic",
    transform: Callable | None = None,
    augmented: bool = False,
) -> Dataset:
    """``build_dataset("voc", split="train"|"val"|"trainval", root=..., augmented=False)``."""
    if task == "instance":
        if augmented and split == "train":
            scan(root, split, augmented=True, target="object")  # raises the one-line refusal
        return VOCInstances(root, split, transform=transform)
    if task != "semantic":
        raise SegbenchError(f"voc: unknown task '{task}'; use 'semantic' or 'instance'")
    return VOCSegmentation(root, split, augmented=augmented, transform=transform)


build.info = INFO  # type: ignore[attr-defined]  (static info: no files read)
build.scan = scan  # type: ignore[attr-defined]  (the data doctor's listing)
build.table = TABLE  # type: ignore[attr-defined]  (stored value -> class, for the data doctor)
