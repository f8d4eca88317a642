"""Image/mask folders: the shared base of the file-backed semantic datasets, and ``ImageMaskFolder`` for your own data.

Layout read by ``ImageMaskFolder(root, split, info=folder_info(num_classes=K))``::

    root/<split>/images/<stem>.png|jpg|...    root/<split>/masks/<stem>.png    (split None or "all": root/images, ...)

Images and masks pair by file stem. Construction checks folders and pairing (names only, cheap); each sample is
decoded and validated when loaded (readable, same size, values in ``[0, num_classes)`` or the ignore value).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from ..errors import SegbenchError
from .info import DatasetInfo
from .io import check_mask_values, check_same_size, pair_by_stem, read_image, read_mask, require_dir


class PairedImageMask(Dataset):
    """``(image file, mask file)`` pairs -> ``(image uint8 [C,H,W], mask int64 [H,W])``, validated per sample.

    Subclasses set ``pairs`` and ``info`` and may override ``map_mask`` to turn stored values into class indices
    (or the ignore value) before validation. ``transform(image, mask)`` runs last.
    """

    def __init__(self, pairs: list[tuple[Path, Path]], info: DatasetInfo, *, transform: Callable | None = None):
        if not pairs:
            raise SegbenchError(f"{info.name}: the dataset is empty; check the data folder and the split")
        self.pairs = pairs
        self.info = info
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def map_mask(self, raw: Tensor, path: Path) -> Tensor:
        """Stored mask values -> class indices / ignore value (identity here)."""
        return raw

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        """The validated, untransformed sample ``index``."""
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path, channels=self.info.in_channels)
        raw = read_mask(mask_path)
        check_same_size(image, raw, image_path=image_path, mask_path=mask_path)
        mask = self.map_mask(raw, mask_path)
        check_mask_values(mask, path=mask_path, num_classes=self.info.num_classes, ignore_index=self.info.ignore_index)
        return image, mask

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, mask = self.load(index)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask


def with_task(dataset: Dataset, task: str) -> Dataset:
    """Return ``dataset`` for task "semantic"; for "instance" wrap it in the Mask R-CNN part's ``InstanceView``.

    The view turns each semantic sample (after the dataset's transform) into connected-component instances.
    """
    if task == "semantic":
        return dataset
    if task != "instance":
        raise SegbenchError(f"{dataset.info.name}: unknown task '{task}'; use 'semantic' or 'instance'")
    from .instances import InstanceView  # lazy: scipy is imported only for instance targets

    return InstanceView(dataset)


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """The PASCAL VOC colour map (bit-interleaved class index), one RGB per class."""
    palette = []
    for index in range(num_classes):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette.append((r, g, b))
    return tuple(palette)


@dataclass(frozen=True)
class MaskFolders:
    """Where a split's files are: ``<split>/<image_dir>`` and ``<split>/<mask_dir>``."""

    image_dir: str = "images"
    mask_dir: str = "masks"


def folder_info(*, num_classes: int, class_names: tuple[str, ...] | list[str] | None = None, ignore_index: int = 255,
                in_channels: int = 3, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                background_index: int | None = 0, name: str = "folder") -> DatasetInfo:
    """The checked :class:`DatasetInfo` of your own data. ``class_names`` default ``class0..``; ``mean``/``std``
    default to the ImageNet statistics (RGB) or 0.5/0.25 (grey)."""
    if num_classes is None or int(num_classes) < 1:
        raise SegbenchError(f"{name}: num_classes={num_classes} is invalid; pass the number of classes (>= 1)")
    num_classes = int(num_classes)
    names = tuple(class_names) if class_names is not None else tuple(f"class{i}" for i in range(num_classes))
    if len(names) != num_classes:
        raise SegbenchError(
            f"{name}: {len(names)} class_names for num_classes={num_classes}; give one name per class"
        )
    if in_channels not in (1, 3):
        raise SegbenchError(f"{name}: in_channels={in_channels} is not supported; use 1 (grey) or 3 (RGB)")
    return DatasetInfo(
        name=name,
        num_classes=num_classes,
        class_names=names,
        ignore_index=ignore_index,
        in_channels=in_channels,
        mean=mean or ((0.485, 0.456, 0.406) if in_channels == 3 else (0.5,)),
        std=std or ((0.229, 0.224, 0.225) if in_channels == 3 else (0.25,)),
        palette=default_palette(num_classes),
        background_index=background_index,
        license="see the data's own terms",
        citation="",
    )


class ImageMaskFolder(PairedImageMask):
    """Your own data: ``root/[split/]image_dir`` and ``root/[split/]mask_dir``, paired by file stem.

    ``info`` (from :func:`folder_info`) gives the classes, ignore value, channels and statistics. Masks hold class
    indices ``0..num_classes-1`` (single-channel or palette PNG) or the ignore value. ``value_map`` remaps stored
    values first, e.g. ``{255: 1}`` for binary masks saved as {0, 255}.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        *,
        info: DatasetInfo,
        folders: MaskFolders = MaskFolders(),
        value_map: Mapping[int, int] | None = None,
        transform: Callable | None = None,
    ) -> None:
        name, image_dir, mask_dir = info.name, folders.image_dir, folders.mask_dir
        root = require_dir(root, what=name)
        base = root
        if split not in (None, "all"):
            base = root / split
            if not base.is_dir():
                raise SegbenchError(
                    f"{base}: split folder not found; arrange the data as {root}/{split}/{image_dir} and "
                    f"{root}/{split}/{mask_dir}, or use split 'all' for {root}/{image_dir}"
                )
        self.value_map = None
        try:
            if value_map is not None:
                self.value_map = {int(k): int(v) for k, v in dict(value_map).items()}
        except (TypeError, ValueError):
            raise SegbenchError(f"{name}: value_map={value_map!r} is invalid; give integers, e.g. {{255: 1}}") from None
        super().__init__(pair_by_stem(base / image_dir, base / mask_dir), info, transform=transform)

    def map_mask(self, raw: Tensor, path: Path) -> Tensor:
        if self.value_map is not None:
            mask = raw.clone()
            for stored, value in self.value_map.items():  # a few entries, each one tensor op
                mask[raw == stored] = value
            return mask
        ignore = self.info.ignore_index
        # {0, 255} with 255 as "ignore" in a two-class set is almost surely an unmapped binary mask.
        binary_255 = bool(raw.eq(ignore).any()) and bool(((raw == 0) | (raw == ignore)).all())
        if self.info.num_classes == 2 and ignore == 255 and binary_255:
            raise SegbenchError(
                f"{path}: mask values are exactly {{0, 255}} and 255 is the ignore value, so no pixel would be "
                "class 1; pass value_map {255: 1} for a binary mask (or value_map {255: 255} if 255 really "
                "means ignore)"
            )
        return raw


def build(
    *,
    split: str,
    root: str | None = None,
    task: str = "semantic",
    transform: Callable | None = None,
    num_classes: int | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
    image_dir: str = "images",
    mask_dir: str = "masks",
    ignore_index: int = 255,
    in_channels: int = 3,
    value_map: Mapping[int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    background_index: int | None = 0,
) -> Dataset:
    """``build_dataset("folder", split=..., root=..., num_classes=K, ...)``; split "all" reads ``root`` itself."""
    if num_classes is None:
        raise SegbenchError("folder: num_classes is required; pass num_classes=<number of classes>")
    info = folder_info(num_classes=num_classes, class_names=class_names, ignore_index=ignore_index,
                       in_channels=in_channels, mean=mean, std=std, background_index=background_index)
    dataset = ImageMaskFolder(root, split, info=info, folders=MaskFolders(image_dir, mask_dir), value_map=value_map,
                              transform=transform)
    return with_task(dataset, task)


__all__ = ["ImageMaskFolder", "MaskFolders", "PairedImageMask", "build", "default_palette", "folder_info", "with_task"]
