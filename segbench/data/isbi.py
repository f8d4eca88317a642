"""ISBI 2012 EM segmentation (the U-Net paper's data): 30 grey 512x512 slices with membrane/cell labels.

Files: ``root/train/image/{i}.png`` and ``root/train/label/{i}.png``, i = 0..29. Label PNGs hold {0, 255}:
255 = cell interior, 0 = membrane. They map to classes **0 = membrane, 1 = cell** (255 -> 1); any other value is an
error naming the file. The challenge's test labels are secret, so locally the 30 slices are split: by default slices
25..29 (the last five of the stack) are ``val`` and 0..24 are ``train``; ``all`` is every slice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from ..errors import SegbenchError
from .info import DatasetInfo
from .folder import PairedImageMask, with_task
from .io import pair_by_stem, require_dir

NUM_SLICES = 30
SPLITS = ("train", "val", "all")

INFO = DatasetInfo(
    name="isbi2012",
    num_classes=2,
    class_names=("membrane", "cell"),
    ignore_index=255,
    in_channels=1,
    mean=(0.495,),  # measured on the 30 training slices
    std=(0.173,),
    palette=((230, 60, 60), (60, 120, 230)),
    background_index=0,  # instances = connected cell interiors; membrane separates them
    license="ISBI 2012 challenge data, research use; cite the organisers",
    display_name="ISBI 2012 (EM membranes)",
    citation=(
        "Cardona et al. 2010, An integrated micro- and macroarchitectural analysis of the Drosophila brain "
        "by computer-assisted serial section electron microscopy, PLoS Biol 8(10); Arganda-Carreras et al. 2015, "
        "Crowdsourcing the creation of image segmentation algorithms for connectomics, Front. Neuroanat. 9:142"
    ),
)


class ISBI2012(PairedImageMask):
    """``(image uint8 [1,512,512], mask int64 [512,512])``, mask 0 = membrane, 1 = cell (no ignore pixels)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        val_slices: Sequence[int] = (25, 26, 27, 28, 29),
        transform: Callable | None = None,
    ) -> None:
        root = require_dir(root, what="isbi2012")
        if split not in SPLITS:
            raise SegbenchError(f"isbi2012: unknown split '{split}'; valid splits: {', '.join(SPLITS)}")
        val = {str(int(i)) for i in val_slices}
        pairs = pair_by_stem(root / "train" / "image", root / "train" / "label")
        stems = {image.stem for image, _ in pairs}
        if missing := sorted(val - stems, key=int):
            raise SegbenchError(
                f"isbi2012: val_slices {', '.join(missing)} have no file in {root / 'train' / 'image'}; "
                f"choose slices among the {len(stems)} present"
            )
        # Slices are ordered numerically (2.png before 10.png), so index i is slice i.
        pairs.sort(key=lambda pair: (not pair[0].stem.isdigit(), int(pair[0].stem) if pair[0].stem.isdigit() else 0))
        if split != "all":
            pairs = [pair for pair in pairs if (pair[0].stem in val) == (split == "val")]
        self.split = split
        super().__init__(pairs, INFO, transform=transform)

    def map_mask(self, raw: Tensor, path: Path) -> Tensor:
        if not bool(((raw == 0) | (raw == 255)).all()):
            values = ", ".join(str(v) for v in raw.unique()[:8].tolist())
            raise SegbenchError(
                f"{path}: ISBI label values must be 0 (membrane) or 255 (cell), found {{{values}}}; "
                "restore the original label PNG"
            )
        return raw // 255


def build(
    *,
    split: str,
    root: str | None = None,
    task: str = "semantic",
    transform: Callable | None = None,
    val_slices: Sequence[int] = (25, 26, 27, 28, 29),
) -> Dataset:
    """``build_dataset("isbi2012", split="train"|"val"|"all", root=...)``."""
    return with_task(ISBI2012(root, split, val_slices=val_slices, transform=transform), task)


# the DatasetInfo without reading any file (for the app and the Hub card)
build.info = INFO  # type: ignore[attr-defined]
