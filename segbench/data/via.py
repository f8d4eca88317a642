"""Balloon (matterport Mask_RCNN's tutorial set) and VGG Image Annotator (VIA) polygon files.

Layout: ``root/<split>/via_region_data.json`` plus the images it lists, next to it (``split`` "train": 61 images,
255 balloons; "val": 13 images, 50 balloons). VIA format: ``{key: {"filename", "size" (bytes), "regions"}}`` where
``regions`` is a dict (VIA 1) or a list (VIA 2) of ``{"shape_attributes": {"name": "polygon", "all_points_x",
"all_points_y"}}``; a VIA 2 project file (``{"_via_img_metadata": {...}}``) is read too; ``rect`` regions become
4-point polygons.

Rasterisation convention (pixel centres): pixel (row r, column c) belongs to a polygon iff its centre, the point
(x = c, y = r) in VIA's coordinates, lies inside it (even-odd rule, half-open on the boundary so a polygon's pixel
count matches its area). No 0.5 shift is applied -- the convention of matterport's ``balloon.py``
(``skimage.draw.polygon``). PIL's ``ImageDraw.polygon`` is not used: it truncates float vertices and always draws the
outline, which follows neither convention.

Bad input, reported when the file is read (one warning line each), never mid-training:
  * a polygon with < 3 points, non-numeric or mismatched coordinate lists, an unsupported shape, zero area:
    the region is skipped;
  * vertices more than 1 px outside the image: the part outside is cut off, with a warning (closer ones are
    annotators clicking on the border: cut off silently);
  * a listed image that is missing: the image is skipped (an error if every image is missing);
  * a JSON file that is missing or not VIA: SegbenchError.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import SegbenchError
from .info import DatasetInfo
from .instances import InstanceDataset, Problems, check_task, empty_target
from .io import image_size, read_image, require_dir
from .transforms import boxes_from_masks

__all__ = ["BalloonVIA", "parse_via", "rasterize_polygon", "build", "INFO"]

SPLITS = ("train", "val")

INFO = DatasetInfo(
    name="balloon",
    num_classes=2,
    class_names=("background", "balloon"),
    ignore_index=255,
    in_channels=3,
    mean=(0.461, 0.443, 0.418),  # measured on the 61 training images
    std=(0.295, 0.284, 0.303),
    palette=((0, 0, 0), (230, 60, 60)),
    background_index=0,
    license="MIT (annotations: matterport/Mask_RCNN); images from Flickr under their authors' terms",
    hub_license="mit",
    display_name="Balloon (instances)",
    citation="Abdulla 2017, Mask R-CNN for object detection and instance segmentation, github.com/matterport/Mask_RCNN",
)


@dataclass(frozen=True)
class ViaImage:
    """One image of a VIA file: its path, size and polygons (float64 x and y vertex arrays)."""

    path: Path
    height: int
    width: int
    polygons: tuple[tuple[np.ndarray, np.ndarray], ...]


# ================================================================ rasterising


def rasterize_polygon(xs: np.ndarray, ys: np.ndarray, height: int, width: int) -> Tensor:
    """bool [H,W]: pixels whose centre (x = column, y = row) is inside the polygon (even-odd, half-open edges)."""
    out = np.zeros((height, width), dtype=np.uint8)
    _fill_polygon(xs, ys, out)
    return torch.from_numpy(out).bool()


def _fill_polygon(xs: np.ndarray, ys: np.ndarray, out: np.ndarray) -> None:
    """Set the pixels of ``out`` (uint8 [H,W], zeros) that the polygon covers to 1.

    Scanline fill, vectorised: each edge's crossing with each pixel row toggles the parity from the first pixel
    centre at or right of the crossing; a cumulative sum along the row gives inside/outside.
    """
    height, width = out.shape
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    x0, y0, x1, y1 = xs, ys, np.roll(xs, -1), np.roll(ys, -1)
    r_lo = max(int(np.ceil(ys.min())), 0)
    r_hi = min(int(np.floor(ys.max())), height - 1)
    if r_hi < r_lo:
        return
    rows = np.arange(r_lo, r_hi + 1, dtype=np.float64)[:, None]  # [R,1]
    crosses = ((y0 <= rows) & (rows < y1)) | ((y1 <= rows) & (rows < y0))  # [R,E], half-open in y
    r_idx, e_idx = np.nonzero(crosses)
    y_a, y_b = y0[e_idx], y1[e_idx]  # crossing edges only: never horizontal, no division by zero
    x_at = x0[e_idx] + (rows[r_idx, 0] - y_a) * (x1[e_idx] - x0[e_idx]) / (y_b - y_a)
    cols = np.clip(np.ceil(x_at), 0, width).astype(np.int64)
    toggles = np.zeros((len(rows), width + 1), dtype=np.int32)
    np.add.at(toggles, (r_idx, cols), 1)
    out[r_lo : r_hi + 1] = np.cumsum(toggles[:, :width], axis=1) & 1


# ================================================================ parsing


def _region_polygon(shape: dict) -> tuple[np.ndarray, np.ndarray]:
    """VIA shape_attributes -> (xs, ys); ValueError with the reason for a shape that cannot be used."""
    name = shape.get("name")
    if name == "polygon":
        xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
        if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
            raise ValueError("polygon without matching all_points_x/all_points_y lists")
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    elif name == "rect":
        x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
        xs, ys = np.array([x, x + w, x + w, x]), np.array([y, y, y + h, y + h])
    else:
        raise ValueError(f"unsupported shape '{name}' (polygon and rect are read)")
    if len(xs) < 3:
        raise ValueError(f"polygon with {len(xs)} point(s), needs at least 3")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("non-finite coordinates")
    if abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) == 0:  # shoelace
        raise ValueError("zero-area polygon")
    return xs, ys


def parse_via(json_path: str | Path, image_dir: str | Path | None = None) -> list[ViaImage]:
    """Read a VIA file; images are looked up in ``image_dir`` (default: the JSON's folder). Problems: module doc."""
    json_path = Path(json_path)
    image_dir = Path(image_dir) if image_dir is not None else json_path.parent
    if not json_path.is_file():
        raise SegbenchError(
            f"{json_path}: VIA annotation file not found; export it from VIA as JSON next to the images"
        )
    try:
        data = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SegbenchError(f"{json_path}: not valid JSON ({exc}); re-export it from VIA") from None
    if isinstance(data, dict) and "_via_img_metadata" in data:  # VIA 2 project file
        data = data["_via_img_metadata"]
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "filename" in v for v in data.values()):
        raise SegbenchError(
            f"{json_path}: not a VIA file (expected {{key: {{filename, regions}}}}); export 'annotations as json'"
        )
    problems = Problems(str(json_path))
    images: list[ViaImage] = []
    missing: list[str] = []
    for entry in data.values():
        path = image_dir / entry["filename"]
        if not path.is_file():
            missing.append(entry["filename"])
            continue
        width, height = image_size(path)  # header only (as shown, EXIF orientation applied): for the coordinates
        regions = entry.get("regions") or []
        regions = list(regions.values()) if isinstance(regions, dict) else list(regions)
        polygons = []
        for k, region in enumerate(regions):
            try:
                xs, ys = _region_polygon(region.get("shape_attributes", {}))
            except (ValueError, KeyError, TypeError) as exc:
                problems.add(f"{entry['filename']} region {k}: {exc}; region skipped")
                continue
            if xs.min() < -1 or ys.min() < -1 or xs.max() > width + 1 or ys.max() > height + 1:
                problems.add(
                    f"{entry['filename']} region {k}: vertices outside the {width}x{height} image; the part outside "
                    "is cut off"
                )
            polygons.append((xs, ys))
        images.append(ViaImage(path, height, width, tuple(polygons)))
    if missing:
        if not images:
            raise SegbenchError(
                f"{json_path}: none of the {len(missing)} listed images is in {image_dir} (first: {missing[0]}); "
                "put the images next to the JSON or pass the image folder"
            )
        problems.add(f"{len(missing)} listed image(s) missing in {image_dir} (first: {missing[0]}); skipped")
    problems.report()
    return images


# ================================================================ dataset


class BalloonVIA(InstanceDataset):
    """Balloon / any single-class VIA set: ``(image uint8 [3,H,W], {"boxes", "labels" (all 1), "masks"})``, or with
    ``task="semantic"`` ``(image, mask int64 [H,W])`` with classes 0 background / 1 balloon.

    ``transform(image, target)`` runs last. ``num_instances`` counts the usable polygons.
    """

    def __init__(
        self,
        root: str | Path | None,
        split: str = "train",
        *,
        task: str = "instance",
        transform: Callable | None = None,
        annotations: str = "via_region_data.json",
        info: DatasetInfo = INFO,
    ) -> None:
        root = require_dir(root, what=info.name)
        if split not in SPLITS and not (root / split).is_dir():
            raise SegbenchError(f"{info.name}: unknown split '{split}'; valid splits: {', '.join(SPLITS)}")
        self.split, self.info, self.transform = split, info, transform
        self.task = check_task(info.name, task)
        self.images = parse_via(root / split / annotations)

    @property
    def num_instances(self) -> int:
        return sum(len(img.polygons) for img in self.images)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The untransformed sample ``index``: image and its instance target (labels all 1)."""
        record = self.images[index]
        image = read_image(record.path, channels=self.info.in_channels)
        h, w = image.shape[-2:]
        if not record.polygons:
            return image, empty_target(h, w)
        masks = np.zeros((len(record.polygons), h, w), dtype=np.uint8)
        for (xs, ys), out in zip(record.polygons, masks):
            _fill_polygon(xs, ys, out)
        masks = torch.from_numpy(masks[masks.any(axis=(1, 2))])  # a sliver between pixel centres covers none
        labels = torch.ones(len(masks), dtype=torch.int64)
        return image, {"boxes": boxes_from_masks(masks), "labels": labels, "masks": masks}


def build(
    *,
    split: str,
    root: str | None = None,
    task: str = "instance",
    transform: Callable | None = None,
    annotations: str = "via_region_data.json",
) -> BalloonVIA:
    """``build_dataset("balloon", split="train"|"val", root=..., task="instance"|"semantic")``."""
    return BalloonVIA(root, split, task=task, transform=transform, annotations=annotations)


build.info = INFO  # type: ignore[attr-defined]  (data.dataset_info("balloon") reads it: no files needed)
