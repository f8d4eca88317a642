"""COCO-format instance annotations, and folders of instance-id PNGs.

``CocoInstances(root, split)`` reads ``root/annotations/instances_<split>.json`` and the images in ``root/<split>/``
(both overridable). Segmentations may be polygons (one or several parts per object), uncompressed RLE
(``counts`` a list, typical for ``iscrowd`` 1) or compressed RLE (``counts`` a string); they are decoded with COCO's
own rasteriser (faster-coco-eval's mask API, identical to pycocotools), so training masks match what COCO evaluation
sees. Category ids need not be contiguous: sorted by id they become labels 1..K (``label_to_category[label]`` maps
back, for result files). Crowd regions are kept with ``"iscrowd": 1`` (Mask R-CNN drops them from its loss; the
evaluator treats them as COCO does).

Sample: ``(image uint8 [3,H,W], {"boxes": float32 [N,4] (pixel extents of the decoded mask), "labels": int64 [N],
"masks": uint8 [N,H,W], "iscrowd": int64 [N], "area": float32 [N] (the JSON's area), "image_id": int64 []})``.
Objects whose decoded mask is empty are dropped.

Bad input, reported once when the JSON is read (one warning line each, the object or part is skipped): polygon
parts with < 3 points or an odd number of coordinates, non-numeric coordinates, vertices more than 1 px outside the
image (kept, COCO's rasteriser cuts them off), zero-area boxes, RLE whose size differs from the image's or whose
counts do not cover it, unknown category or image ids, listed images that are missing (an error if all are).

``InstancePNG(root, split)``: ``root/<split>/images/<stem>.*`` with ``root/<split>/instances/<stem>.png`` holding
one id per instance (0 = none; 8 or 16 bit) and, optionally, ``root/<split>/labels/<stem>.png`` with semantic
classes: an instance's class is the most frequent class under it. Without ``labels/`` every instance has class 1.
``id_divisor`` reads Cityscapes-style ids (value = class * divisor + k; values below the divisor are not instances).
"""

from __future__ import annotations

import json
import numbers
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from faster_coco_eval.core import mask as mask_utils
from torch import Tensor

from ..errors import SegbenchError
from .info import DatasetInfo
from .folder import default_palette
from .instances import InstanceDataset, Problems, check_task, empty_target
from .io import check_same_size, image_size, pair_by_stem, read_image, read_mask, require_dir
from .transforms import boxes_from_masks

__all__ = ["CocoInstances", "InstancePNG", "build_coco", "build_instance_png"]

# ================================================================ COCO JSON


def _polygon_parts(seg: list, h: int, w: int, where: str, problems: Problems) -> list[list[float]]:
    """Valid polygon parts of one object (each a flat [x1, y1, x2, y2, ...] with >= 3 points)."""
    parts = []
    for k, part in enumerate(seg):
        if not isinstance(part, list) or not all(isinstance(v, numbers.Real) for v in part):
            problems.add(f"{where} part {k}: polygon coordinates are not a list of numbers; part skipped")
        elif len(part) < 6 or len(part) % 2:
            problems.add(f"{where} part {k}: polygon with {len(part) / 2:g} points (needs >= 3 x,y pairs); skipped")
        else:
            xy = np.asarray(part, dtype=np.float64).reshape(-1, 2)
            if not np.isfinite(xy).all():
                problems.add(f"{where} part {k}: non-finite coordinates; part skipped")
                continue
            if (xy < -1).any() or (xy[:, 0] > w + 1).any() or (xy[:, 1] > h + 1).any():
                problems.add(f"{where} part {k}: vertices outside the {w}x{h} image; the part outside is cut off")
            parts.append([float(v) for v in part])
    return parts


def _check_rle(seg: dict, h: int, w: int) -> dict | str:
    """A compressed RLE for ``seg`` (compressed or not), or the reason it is unusable."""
    size = seg.get("size")
    counts = seg.get("counts")
    if not isinstance(size, list) or [v for v in size if isinstance(v, numbers.Integral)] != [h, w]:
        return f"RLE size {size} differs from the image's [{h}, {w}]"
    if isinstance(counts, list):
        if not all(isinstance(c, numbers.Integral) and c >= 0 for c in counts) or sum(counts) != h * w:
            return f"uncompressed RLE counts do not add up to the {h}x{w} image"
        return mask_utils.frPyObjects(seg, h, w)
    if isinstance(counts, (str, bytes)):
        rle = {"size": [h, w], "counts": counts.encode() if isinstance(counts, str) else counts}
        try:
            mask_utils.decode(rle)  # the only full check of a compressed string (compressed RLE is rare in GT)
        except (ValueError, RuntimeError) as exc:
            return f"compressed RLE is corrupt ({exc})"
        return rle
    return "RLE counts are neither a list nor a string"


class CocoInstances(InstanceDataset):
    """COCO instance annotations (module docstring). ``label_to_category`` (list[int]) maps labels to COCO ids."""

    def __init__(
        self,
        root: str | Path | None,
        split: str = "train",
        *,
        task: str = "instance",
        transform: Callable | None = None,
        annotations: str | None = None,
        images: str | None = None,
        name: str = "coco",
    ) -> None:
        root = require_dir(root, what=name)
        ann_path = root / (annotations or f"annotations/instances_{split}.json")
        self.image_dir = root / (images or split)
        self.split, self.transform = split, transform
        self.task = check_task(name, task)
        if not ann_path.is_file():
            raise SegbenchError(f"{ann_path}: COCO annotation file not found; pass annotations=<path relative to root>")
        try:
            data = json.loads(ann_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SegbenchError(f"{ann_path}: not valid JSON ({exc}); re-export the annotations") from None
        if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= data.keys():
            raise SegbenchError(f"{ann_path}: not a COCO instance file (needs images, annotations, categories)")
        if not all(isinstance(c, dict) and isinstance(c.get("id"), int) for c in data["categories"]):
            raise SegbenchError(f"{ann_path}: every category needs an integer 'id'; fix 'categories'")
        cats = sorted(data["categories"], key=lambda c: c["id"])
        if not cats:
            raise SegbenchError(f"{ann_path}: no categories; list the object categories in 'categories'")
        self.label_to_category = [0] + [int(c["id"]) for c in cats]
        self.category_to_label = {cid: label for label, cid in enumerate(self.label_to_category) if label}
        names = ("background", *(str(c.get("name", c["id"])) for c in cats))
        self.info = DatasetInfo(
            name=name,
            num_classes=len(names),
            class_names=names,
            palette=default_palette(len(names)),
            background_index=0,
            license=str(data.get("info", {}).get("license", "")) if isinstance(data.get("info"), dict) else "",
        )
        self.records = self._parse(data, ann_path)

    def _parse(self, data: dict, ann_path: Path) -> list[dict]:
        problems = Problems(str(ann_path))
        images, missing = {}, []
        for k, img in enumerate(data["images"]):
            if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
                problems.add(f"images[{k}]: needs 'id' and 'file_name'; skipped")
                continue
            path = self.image_dir / img["file_name"]
            if not path.is_file():
                missing.append(img["file_name"])
                continue
            h, w = img.get("height"), img.get("width")
            if not h or not w:
                w, h = image_size(path)  # header only, as shown (EXIF orientation applied)
            images[img["id"]] = {"id": img["id"], "path": path, "height": int(h), "width": int(w), "objects": []}
        if missing:
            if not images:
                raise SegbenchError(
                    f"{ann_path}: none of the {len(missing)} listed images is in {self.image_dir} (first: "
                    f"{missing[0]}); pass images=<folder relative to root>"
                )
            problems.add(f"{len(missing)} listed image(s) missing in {self.image_dir} (first: {missing[0]}); skipped")
        listed = {img.get("id") for img in data["images"] if isinstance(img, dict)}
        orphans = 0
        for ann in data["annotations"]:
            where = f"annotation {ann.get('id')}"
            record = images.get(ann.get("image_id"))
            if record is None:  # its image is missing (reported above) or not listed at all
                orphans += ann.get("image_id") not in listed
                continue
            label = self.category_to_label.get(ann.get("category_id"))
            if label is None:
                problems.add(f"{where}: unknown category_id {ann.get('category_id')}; skipped")
                continue
            bbox = ann.get("bbox")
            if bbox is not None and (len(bbox) != 4 or bbox[2] <= 0 or bbox[3] <= 0):
                problems.add(f"{where}: zero-area box {bbox}; skipped")
                continue
            h, w, seg = record["height"], record["width"], ann.get("segmentation")
            if isinstance(seg, list):
                seg = _polygon_parts(seg, h, w, where, problems)
                if not seg:
                    problems.add(f"{where}: no usable polygon; skipped")
                    continue
            elif isinstance(seg, dict):
                seg = _check_rle(seg, h, w)
                if isinstance(seg, str):
                    problems.add(f"{where}: {seg}; skipped")
                    continue
            else:
                problems.add(f"{where}: no segmentation; skipped")
                continue
            record["objects"].append(
                {"segmentation": seg, "label": label, "iscrowd": int(ann.get("iscrowd", 0)), "area": ann.get("area")}
            )
        if orphans:
            problems.add(f"{orphans} annotation(s) refer to image ids not in 'images'; skipped")
        problems.report()
        return list(images.values())

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The untransformed sample ``index``."""
        record = self.records[index]
        image = read_image(record["path"], channels=3)
        h, w = image.shape[-2:]
        if (h, w) != (record["height"], record["width"]):
            raise SegbenchError(
                f"{record['path']}: image is {w}x{h} but the annotations say {record['width']}x{record['height']}; "
                "fix the JSON's width/height"
            )
        objects = record["objects"]
        if not objects:
            target = empty_target(h, w)
        else:
            rles = [
                mask_utils.merge(mask_utils.frPyObjects(o["segmentation"], h, w))
                if isinstance(o["segmentation"], list)
                else o["segmentation"]
                for o in objects
            ]
            masks = torch.from_numpy(np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1)))
            area = torch.tensor(
                [o["area"] if o["area"] is not None else -1.0 for o in objects], dtype=torch.float32
            )
            area = torch.where(area < 0, masks.flatten(1).sum(1).to(torch.float32), area)
            keep = masks.flatten(1).bool().any(1)
            masks = masks[keep]
            target = {
                "boxes": boxes_from_masks(masks),
                "labels": torch.tensor([o["label"] for o in objects], dtype=torch.int64)[keep],
                "masks": masks,
                "iscrowd": torch.tensor([o["iscrowd"] for o in objects], dtype=torch.int64)[keep],
                "area": area[keep],
            }
        target.setdefault("iscrowd", torch.zeros(0, dtype=torch.int64))
        target.setdefault("area", torch.zeros(0, dtype=torch.float32))
        target["image_id"] = torch.tensor(record["id"], dtype=torch.int64)
        return image, target


def build_coco(
    *,
    split: str,
    root: str | None = None,
    task: str = "instance",
    transform: Callable | None = None,
    annotations: str | None = None,
    images: str | None = None,
) -> CocoInstances:
    """``build_dataset("coco", split=..., root=..., annotations="annotations/instances_<split>.json",
    images="<split>")``."""
    return CocoInstances(root, split, task=task, transform=transform, annotations=annotations, images=images)


# ================================================================ instance-id PNGs


class InstancePNG(InstanceDataset):
    """Instance-id PNG folders (module docstring). Classes: ``class_names`` (background first)."""

    def __init__(
        self,
        root: str | Path | None,
        split: str = "train",
        *,
        task: str = "instance",
        transform: Callable | None = None,
        class_names: Sequence[str] = ("background", "object"),
        id_divisor: int | None = None,
        in_channels: int = 3,
        name: str = "instance_png",
    ) -> None:
        root = require_dir(root, what=name)
        base = root / split if split not in (None, "all") else root
        self.split, self.transform, self.id_divisor = split, transform, id_divisor
        self.task = check_task(name, task)
        if len(class_names) < 2:
            raise SegbenchError(f"{name}: class_names needs background and at least one class, got {list(class_names)}")
        self.info = DatasetInfo(
            name=name,
            num_classes=len(class_names),
            class_names=tuple(class_names),
            in_channels=in_channels,
            mean=(0.5,) * in_channels if in_channels != 3 else DatasetInfo.mean,
            std=(0.25,) * in_channels if in_channels != 3 else DatasetInfo.std,
            palette=default_palette(len(class_names)),
            background_index=0,
        )
        self.pairs = pair_by_stem(base / "images", base / "instances")
        labels = base / "labels"
        self.label_paths = dict(pair_by_stem(base / "images", labels)) if labels.is_dir() else None

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image_path, ids_path = self.pairs[index]
        image = read_image(image_path, channels=self.info.in_channels)
        ids = read_mask(ids_path)
        check_same_size(image, ids, image_path=image_path, mask_path=ids_path)
        h, w = ids.shape
        num_classes = self.info.num_classes
        if self.id_divisor:
            ids = torch.where(ids >= self.id_divisor, ids, 0)
        uniq = torch.unique(ids)
        uniq = uniq[uniq > 0]
        if len(uniq) == 0:
            return image, empty_target(h, w)
        masks = ids[None] == uniq[:, None, None]  # [N,H,W]
        if self.id_divisor:
            labels = uniq // self.id_divisor
        elif self.label_paths is not None:
            sem = read_mask(self.label_paths[image_path])
            check_same_size(image, sem, image_path=image_path, mask_path=self.label_paths[image_path])
            # majority class per instance: one bincount over (instance index, class) pairs
            inst = torch.searchsorted(uniq, ids.clamp(min=1))  # index into uniq (valid where ids > 0)
            valid = (ids > 0) & (sem >= 0) & (sem < num_classes)
            votes = torch.bincount(inst[valid] * num_classes + sem[valid], minlength=len(uniq) * num_classes)
            labels = votes.view(len(uniq), num_classes).argmax(1)
        else:
            labels = torch.ones(len(uniq), dtype=torch.int64)
        bad = (labels < 1) | (labels >= num_classes)
        if bool(bad.any()):
            warnings.warn(
                f"{ids_path}: {int(bad.sum())} instance(s) have class {labels[bad][0].item()} outside 1.."
                f"{num_classes - 1}; skipped (set class_names to cover every class)",
                stacklevel=2,
            )
        masks, labels = masks[~bad].to(torch.uint8), labels[~bad].to(torch.int64)
        return image, {"boxes": boxes_from_masks(masks), "labels": labels, "masks": masks}


def build_instance_png(
    *,
    split: str,
    root: str | None = None,
    task: str = "instance",
    transform: Callable | None = None,
    class_names: Sequence[str] = ("background", "object"),
    id_divisor: int | None = None,
    in_channels: int = 3,
) -> InstancePNG:
    """``build_dataset("instance_png", split=..., root=..., class_names=[...], id_divisor=None)``."""
    return InstancePNG(
        root, split, task=task, transform=transform, class_names=class_names, id_divisor=id_divisor,
        in_channels=in_channels,
    )
