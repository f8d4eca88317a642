"""What the on-disk datasets (VOC, Cityscapes, ADE20K) share: a file listing that keeps every problem instead of
stopping at the first (``Scan``, read by the data doctor), and label mapping through a lookup table (``LabelTable``).

A dataset class calls ``scan.require_complete()`` and so refuses an incomplete split with one line; the doctor
(``segbench data check``) reads the same ``Scan`` and reports every lonely file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..errors import SegbenchError
from .io import IMAGE_SUFFIXES, MASK_SUFFIXES, list_files


@dataclass
class Scan:
    """One split's files: ``pairs`` (image, mask), images without a mask, masks without an image (absolute paths;
    a listed id whose image is missing appears in ``lonely_masks`` by its mask path, or in ``missing`` by name)."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    lonely_images: list[Path] = field(default_factory=list)
    lonely_masks: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # listed ids with neither image nor mask

    def require_complete(self, what: str) -> list[tuple[Path, Path]]:
        """The pairs, or the one-line error naming the first lonely file and how many there are."""
        for files, lacks in ((self.lonely_images, "mask"), (self.lonely_masks, "image")):
            if files:
                raise SegbenchError(
                    f"{files[0]}: {what}: this file has no {lacks} ({len(files)} such files); restore the missing "
                    "files or run 'segbench data check' for the full list"
                )
        if self.missing:
            raise SegbenchError(
                f"{what}: '{self.missing[0]}' is listed in the split file but has neither image nor mask "
                f"({len(self.missing)} such ids); restore the files or run 'segbench data check'"
            )
        if not self.pairs:
            raise SegbenchError(f"{what}: the split is empty; check data_root and the split name")
        return self.pairs


def scan_listed(ids: list[str], image_of, mask_of) -> Scan:
    """Pair the files of ``ids`` (a split list): ``image_of(id)`` / ``mask_of(id)`` give the expected paths."""
    scan = Scan()
    for name in ids:
        image, mask = image_of(name), mask_of(name)
        has_image, has_mask = image.is_file(), mask.is_file()
        if has_image and has_mask:
            scan.pairs.append((image, mask))
        elif has_image:
            scan.lonely_images.append(image)
        elif has_mask:
            scan.lonely_masks.append(mask)
        else:
            scan.missing.append(name)
    return scan


def scan_suffixed(image_dir: Path, mask_dir: Path, image_suffix: str, mask_suffix: str, *, recursive: bool) -> Scan:
    """Pair ``<key><image_suffix>`` under ``image_dir`` with ``<key><mask_suffix>`` under ``mask_dir`` (same
    relative folder), e.g. Cityscapes' ``aachen/x_leftImg8bit.png`` with ``aachen/x_gtFine_labelIds.png``."""
    pattern = "**/*" if recursive else "*"

    def keyed(folder: Path, suffix: str) -> dict[str, Path]:
        if not folder.is_dir():
            return {}
        return {
            str(p.relative_to(folder))[: -len(suffix)]: p
            for p in sorted(folder.glob(pattern + suffix))
            if p.is_file() and not p.name.startswith(".")
        }

    images, masks = keyed(image_dir, image_suffix), keyed(mask_dir, mask_suffix)
    scan = Scan()
    for key, image in images.items():
        mask = masks.pop(key, None)
        if mask is None:
            scan.lonely_images.append(image)
        else:
            scan.pairs.append((image, mask))
    scan.lonely_masks.extend(masks.values())
    return scan


def scan_by_stem(image_dir: Path, mask_dir: Path) -> Scan:
    """Pair ``image_dir/<stem>.*`` with ``mask_dir/<stem>.*`` (any image / mask suffix), keeping lonely files."""
    images = list_files(image_dir, IMAGE_SUFFIXES) if image_dir.is_dir() else []
    masks = {p.stem: p for p in list_files(mask_dir, MASK_SUFFIXES)} if mask_dir.is_dir() else {}
    scan = Scan()
    for image in images:
        mask = masks.pop(image.stem, None)
        if mask is None:
            scan.lonely_images.append(image)
        else:
            scan.pairs.append((image, mask))
    scan.lonely_masks.extend(masks.values())
    return scan


def read_split_list(path: Path, what: str) -> list[str]:
    """Ids of a split file, one per line. A line may also be DeepLab's ``/JPEGImages/x.jpg /SegmentationClassAug/x.png``
    form: the first path's stem is the id."""
    if not path.is_file():
        raise SegbenchError(f"{path}: {what} split list not found; restore it from the dataset archive")
    ids = []
    for line in path.read_text().splitlines():
        token = line.strip().split()[0] if line.strip() else ""
        if token:
            ids.append(Path(token).stem if "/" in token or "." in token else token)
    return ids


class LabelTable:
    """Stored label value -> class index or ignore, through one lookup table (``lut[value]``; -1 = invalid value).

    ``map(raw, path)`` returns int64 [H,W] class indices / ignore, or raises naming the file and the values that
    are not in the table.
    """

    def __init__(self, table: dict[int, int], *, dataset: str, expected: str, size: int = 256) -> None:
        self.lut = torch.full((size,), -1, dtype=torch.int64)
        for stored, value in table.items():
            self.lut[stored] = value
        self.dataset, self.expected = dataset, expected

    @property
    def stored_values(self) -> set[int]:
        return set(torch.nonzero(self.lut >= 0).flatten().tolist())

    def map(self, raw: Tensor, path: Path) -> Tensor:
        inside = (raw >= 0) & (raw < len(self.lut))
        mapped = self.lut[raw.clamp(0, len(self.lut) - 1)]
        bad = ~inside | (mapped < 0)
        if bool(bad.any()):
            values = raw[bad].unique()
            shown = ", ".join(str(v) for v in values[:8].tolist()) + (", ..." if len(values) > 8 else "")
            raise SegbenchError(
                f"{path}: {self.dataset} label values {{{shown}}} are not valid stored labels ({self.expected}); "
                "use the dataset's original annotation PNGs (class indices, not colours)"
            )
        return mapped
