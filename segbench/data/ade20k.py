"""ADE20K SceneParsing (``ade20k``, the MIT Scene Parsing Benchmark): 150 classes of indoor and outdoor scenes.

Layout (``data_root`` is ``ADEChallengeData2016`` or the folder holding it)::

    ADEChallengeData2016/images/{training,validation}/ADE_<split>_<n>.jpg        20210 / 2000 images
    ADEChallengeData2016/annotations/{training,validation}/ADE_<split>_<n>.png   grey: 0 = other, 1..150 = classes

Splits ``train`` (``training``) and ``val`` (``validation``); the challenge's test images have no public labels
(``test`` is refused). Labels: stored 0 ("other", not one of the 150) becomes **ignore (255)** and 1..150 become
classes 0..149 -- ``reduce_zero_label``, the protocol behind every published ADE20K number (MMSegmentation,
the sceneparsing toolkit). Class names are those of ``objectInfo150`` (first name of each entry); the palette is
the one MMSegmentation and the Hub's ADE20K models use.

Instances (``task="instance"``, Mask R-CNN): the scene-parsing release has no instance masks, so instances are the
connected components of each class (``data/instances.py``'s protocol; no background class: labels are class + 1,
uncovered pixels take the most frequent train class).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from ..errors import SegbenchError
from .info import DatasetInfo
from .folder import PairedImageMask, with_task
from .layout import LabelTable, Scan, scan_suffixed

SPLITS = {"train": "training", "val": "validation"}

CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel",
    "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80), (140, 140, 140),
    (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70),
    (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3), (0, 102, 200),
    (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220),
    (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140),
    (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0), (0, 0, 255),
    (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255), (11, 200, 200), (255, 82, 0), (0, 255, 245),
    (0, 61, 255), (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0),
    (0, 255, 153), (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194), (0, 255, 82),
    (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255), (0, 255, 163), (255, 153, 0),
    (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112),
    (92, 255, 0), (0, 224, 255), (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0),
    (255, 0, 163), (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255), (255, 255, 0),
    (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0), (0, 133, 255), (255, 214, 0),
    (25, 194, 194), (102, 255, 0), (92, 0, 255),
)  # fmt: skip

INFO = DatasetInfo(
    name="ade20k",
    num_classes=150,
    class_names=CLASSES,
    ignore_index=255,
    in_channels=3,
    palette=PALETTE,
    background_index=None,  # "other" is ignored, not a class: no class means "no object"
    license=(
        "MIT Scene Parsing release: BSD-3-Clause (CSAILVision/sceneparsing); the full ADE20K's terms of use: "
        "non-commercial research and education; images remain their owners'"
    ),
    hub_license="bsd-3-clause",  # as the Hub's scene_parse_150 card states for this release
    display_name="ADE20K (150 classes)",
    citation=(
        "Zhou, Zhao, Puig, Fidler, Barriuso, Torralba 2017, Scene Parsing through ADE20K Dataset, CVPR; Zhou et "
        "al. 2019, Semantic Understanding of Scenes through the ADE20K Dataset, IJCV 127"
    ),
)

# reduce_zero_label: 0 ("other") -> ignore, 1..150 -> 0..149
TABLE = LabelTable({0: 255, **{v: v - 1 for v in range(1, 151)}}, dataset="ade20k", expected="0..150")
TREE = "ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*.{jpg,png}"


def find_root(root: str | Path | None) -> Path:
    """``ADEChallengeData2016`` (``root`` itself or ``root/ADEChallengeData2016``)."""
    if root is None:
        raise SegbenchError("ade20k: no data folder given and none found under $SEGBENCH_DATA; pass --data-root")
    root = Path(root)
    for candidate in (root, root / "ADEChallengeData2016"):
        if (candidate / "images").is_dir():
            return candidate
    raise SegbenchError(f"{root}: missing images/ (ADE20K SceneParsing not found); expected {TREE}")


def scan(root: str | Path | None, split: str) -> Scan:
    base = find_root(root)
    if split not in SPLITS:
        hint = " (the challenge's test labels are not public: evaluate on 'val')" if split == "test" else ""
        raise SegbenchError(f"ade20k: unknown split '{split}'{hint}; valid splits: {', '.join(SPLITS)}")
    folder = SPLITS[split]
    for needed in (base / "images" / folder, base / "annotations" / folder):
        if not needed.is_dir():
            raise SegbenchError(f"{needed}: missing {needed.relative_to(base)}/; expected {TREE}")
    return scan_suffixed(base / "images" / folder, base / "annotations" / folder, ".jpg", ".png", recursive=False)


class ADE20K(PairedImageMask):
    """``(image uint8 [3,H,W], mask int64 [H,W])``: classes 0..149, ignore 255 (stored 0, "other"). Sizes vary
    (the short side is usually 512 or less)."""

    def __init__(self, root: str | Path | None, split: str = "train", *, transform: Callable | None = None) -> None:
        self.split = split
        super().__init__(scan(root, split).require_complete("ade20k"), INFO, transform=transform)

    def map_mask(self, raw: Tensor, path: Path) -> Tensor:
        return TABLE.map(raw, path)


def build(*, split: str, root: str | None = None, task: str = "semantic", transform: Callable | None = None) -> Dataset:
    """``build_dataset("ade20k", split="train"|"val", root=...)``."""
    return with_task(ADE20K(root, split, transform=transform), task)


build.info = INFO  # type: ignore[attr-defined]  (static info: no files read)
build.scan = scan  # type: ignore[attr-defined]  (the data doctor's listing)
build.table = TABLE  # type: ignore[attr-defined]  (stored value -> class, for the data doctor)
