"""Label format conversions (``segbench data convert KIND SRC DST``); each is exact and, where a format can
hold the same information, round-trips bit for bit (tests/data/test_convert.py).

* ``voc-palette-to-index`` / ``index-to-voc-palette``: VOC palette PNG (mode P, the devkit's colour map) <-> grey
  class-index PNG (mode L). Pixel values never change, only how they are stored.
* ``cityscapes-trainids`` / ``cityscapes-labelids``: ``*_labelIds.png`` -> ``*_labelTrainIds.png`` (as
  cityscapesScripts' createTrainIdLabelImgs writes them: 19 train ids, 255 ignore) and back (each train id to the
  first label id of the table; 255 -> 0, unlabeled). labelIds -> trainIds -> labelIds loses the ignored ids;
  trainIds -> labelIds -> trainIds is exact.
* ``coco-to-png`` / ``png-to-coco``: COCO instance JSON <-> ``instances/<stem>.png`` (one id per object, 0 none;
  16-bit when an image has over 255 objects) + ``labels/<stem>.png`` (category label 1..K, 0 background, 255 crowd)
  + ``categories.json``, the ``instance_png`` dataset's layout. Masks go through COCO's own RLE codec; overlapping
  objects cannot share a pixel in a PNG (the later one keeps it: reported). The object id is kept in the JSON as
  ``instance_id``, so PNG -> COCO -> PNG is exact.
* ``via-to-coco``: VGG Image Annotator JSON -> COCO polygons (vertex coordinates copied as they are, one category).

Paths: SRC and DST are files, or folders (every PNG below SRC, written under DST with the same relative path).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from faster_coco_eval.core import mask as mask_utils
from PIL import Image

from ..errors import SegbenchError, nearest
from .folder import default_palette
from .formats import CONVERSIONS
from .io import IMAGE_SUFFIXES, list_files, read_mask

VOC_PALETTE = [v for rgb in default_palette(256) for v in rgb]


def _load(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
        return img
    except (OSError, ValueError) as exc:
        raise SegbenchError(f"{path}: cannot read the PNG ({exc}); re-save it or remove it") from None


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


# ================================================================ per-image conversions


def voc_palette_to_index(src: Path, dst: Path) -> None:
    img = _load(src)
    if img.mode != "P":
        raise SegbenchError(f"{src}: mode {img.mode}, not a palette PNG; it may already hold class indices")
    _save(Image.fromarray(np.array(img), mode="L"), dst)


def index_to_voc_palette(src: Path, dst: Path) -> None:
    img = _load(src)
    if img.mode not in ("L", "P"):
        raise SegbenchError(f"{src}: mode {img.mode}; expected a single-channel class-index PNG")
    out = Image.fromarray(np.array(img).astype(np.uint8), mode="P")
    out.putpalette(VOC_PALETTE)
    _save(out, dst)


def _cityscapes_lut(inverse: bool) -> np.ndarray:
    from .cityscapes import LABELS

    lut = np.full(256, -1, np.int64)
    if inverse:
        for lab in reversed(LABELS):  # the first label of each train id wins (cityscapesScripts' trainId2label)
            if lab.id >= 0:
                lut[lab.train_id] = lab.id if lab.train_id != 255 else 0
    else:
        for lab in LABELS:
            if lab.id >= 0:
                lut[lab.id] = lab.train_id
    return lut


def _cityscapes(src: Path, dst: Path, inverse: bool) -> None:
    raw = read_mask(src).numpy()
    lut = _cityscapes_lut(inverse)
    bad = (raw < 0) | (raw > 255) | (lut[raw.clip(0, 255)] < 0)
    if bad.any():
        kind = "train ids (0..18, 255)" if inverse else "label ids (0..33)"
        raise SegbenchError(f"{src}: values {sorted(set(raw[bad].tolist()))[:8]} are not Cityscapes {kind}")
    _save(Image.fromarray(lut[raw].astype(np.uint8), mode="L"), dst)


def cityscapes_train_ids(src: Path, dst: Path) -> None:
    _cityscapes(src, dst, inverse=False)


def cityscapes_label_ids(src: Path, dst: Path) -> None:
    _cityscapes(src, dst, inverse=True)


def _cityscapes_name(path: Path, inverse: bool) -> str:
    a, b = ("_labelTrainIds.png", "_labelIds.png") if inverse else ("_labelIds.png", "_labelTrainIds.png")
    return path.name[: -len(a)] + b if path.name.endswith(a) else path.name


# kind -> (converter, output name, the files it takes in a folder)
IMAGE_KINDS: dict[str, tuple[Callable[[Path, Path], None], Callable[[Path], str], str]] = {
    "voc-palette-to-index": (voc_palette_to_index, lambda p: p.name, "*.png"),
    "index-to-voc-palette": (index_to_voc_palette, lambda p: p.name, "*.png"),
    "cityscapes-trainids": (cityscapes_train_ids, lambda p: _cityscapes_name(p, False), "*_labelIds.png"),
    "cityscapes-labelids": (cityscapes_label_ids, lambda p: _cityscapes_name(p, True), "*_labelTrainIds.png"),
}


def convert_images(kind: str, src: Path, dst: Path) -> int:
    """Convert one PNG (``dst`` a file, or a folder for the renamed file) or every PNG under a folder; the count."""
    convert, rename, pattern = IMAGE_KINDS[kind]
    if src.is_file():
        convert(src, dst / rename(src) if dst.is_dir() else dst)
        return 1
    if not src.is_dir():
        raise SegbenchError(f"{src}: no such file or folder; pass a PNG or a folder of PNGs")
    files = sorted(p for p in src.rglob(pattern) if p.is_file())
    if not files:
        raise SegbenchError(f"{src}: no {pattern} files below this folder")
    for path in files:
        convert(path, dst / path.relative_to(src).parent / rename(path))
    return len(files)


# ================================================================ COCO <-> instance-id PNGs


def coco_to_pngs(ann_path: Path, out: Path) -> int:
    """COCO JSON -> ``out/{instances,labels}/<stem>.png`` + ``out/categories.json``; the number of images."""
    data = _read_json(ann_path)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: k for k, c in enumerate(cats, start=1)}
    _write_json(out / "categories.json", [{"id": c["id"], "name": c.get("name", str(c["id"]))} for c in cats])
    by_image: dict = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    overlaps = 0
    for img in data["images"]:
        h, w = int(img["height"]), int(img["width"])
        anns = by_image.get(img["id"], [])
        ids = np.zeros((h, w), np.uint16 if len(anns) > 255 else np.uint8)
        labels = np.zeros((h, w), np.uint8)
        for k, ann in enumerate(anns, start=1):
            seg = ann["segmentation"]
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if isinstance(seg, list) else (
                mask_utils.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list) else seg)
            mask = mask_utils.decode(rle).astype(bool)
            if ann.get("iscrowd", 0):
                labels[mask] = 255
                continue
            overlaps += int((ids[mask] > 0).any())
            ids[mask] = ann.get("instance_id", k)
            labels[mask] = label_of[ann["category_id"]]
        stem = Path(img["file_name"]).stem
        _save(Image.fromarray(ids), out / "instances" / f"{stem}.png")
        _save(Image.fromarray(labels, mode="L"), out / "labels" / f"{stem}.png")
    if overlaps:
        warnings.warn(f"{ann_path}: {overlaps} image(s) have overlapping objects; in the PNG the later object "
                      "keeps each shared pixel", stacklevel=2)
    return len(data["images"])


def pngs_to_coco(root: Path, out_json: Path, *, images: Path | None = None) -> int:
    """``root/{instances,labels}/<stem>.png`` (+ ``root/categories.json``) -> a COCO JSON with RLE masks; the
    image files are looked up by stem in ``images`` (default ``root/images``). Returns the number of objects."""
    instance_pngs = sorted((root / "instances").glob("*.png"))
    if not instance_pngs:  # checked before anything is written: an empty COCO file is never the answer
        what = "no such folder" if not root.is_dir() else "no instances/*.png below it"
        raise SegbenchError(f"{root}: {what}; pass the folder holding instances/<stem>.png (and labels/, "
                            "categories.json), as coco-to-png writes it")
    cats = _read_json(root / "categories.json") if (root / "categories.json").is_file() else [{"id": 1, "name": "object"}]
    image_dir = images or root / "images"
    files = {p.stem: p for p in list_files(image_dir, IMAGE_SUFFIXES)} if image_dir.is_dir() else {}
    out = {"images": [], "annotations": [], "categories": cats}
    for k, path in enumerate(instance_pngs, start=1):
        ids = read_mask(path).numpy()
        labels_path = root / "labels" / path.name
        labels = read_mask(labels_path).numpy() if labels_path.is_file() else (ids > 0).astype(np.int64)
        h, w = ids.shape
        name = files[path.stem].name if path.stem in files else f"{path.stem}.png"
        out["images"].append({"id": k, "file_name": name, "height": h, "width": w})
        for obj in np.unique(ids[ids > 0]).tolist():
            mask = ids == obj
            label = int(np.bincount(labels[mask]).argmax())
            if not 1 <= label <= len(cats):
                raise SegbenchError(f"{labels_path}: object {obj} has label {label}, not 1..{len(cats)}")
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
            ys, xs = np.nonzero(mask)
            out["annotations"].append({
                "id": len(out["annotations"]) + 1, "image_id": k, "category_id": cats[label - 1]["id"],
                "segmentation": rle, "area": int(mask.sum()), "iscrowd": 0, "instance_id": int(obj),
                "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
            })
    _write_json(out_json, out)
    return len(out["annotations"])


# ================================================================ VIA -> COCO


def via_to_coco(via_json: Path, out_json: Path, *, category: str = "balloon") -> int:
    """VIA polygons -> COCO polygons (one category, id 1); images stay next to the VIA file. Returns objects."""
    from .via import parse_via

    out = {"images": [], "annotations": [], "categories": [{"id": 1, "name": category}]}
    for k, img in enumerate(parse_via(via_json), start=1):
        out["images"].append({"id": k, "file_name": img.path.name, "height": img.height, "width": img.width})
        for xs, ys in img.polygons:
            flat = np.stack([xs, ys], 1).reshape(-1)
            area = 0.5 * abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))  # shoelace
            out["annotations"].append({
                "id": len(out["annotations"]) + 1, "image_id": k, "category_id": 1, "iscrowd": 0,
                "segmentation": [[_number(v) for v in flat]], "area": area,
                "bbox": [_number(xs.min()), _number(ys.min()), _number(xs.max() - xs.min()),
                         _number(ys.max() - ys.min())],
            })
    _write_json(out_json, out)
    return len(out["annotations"])


def _number(value: float) -> int | float:
    """Integers stay integers in the JSON (VIA stores whole pixels), so coordinates copy exactly."""
    return int(value) if float(value).is_integer() else float(value)


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SegbenchError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SegbenchError(f"{path}: not valid JSON ({exc})") from None


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


KINDS = tuple(CONVERSIONS)  # the table in formats.py; IMAGE_KINDS plus the three below


def convert(kind: str, src: str | Path, dst: str | Path, **options) -> str:
    """Run conversion ``kind`` (one of ``KINDS``); a one-line summary."""
    src, dst = Path(src), Path(dst)
    if kind in IMAGE_KINDS:
        return f"{kind}: {convert_images(kind, src, dst)} file(s) written under {dst}"
    if kind == "coco-to-png":
        return f"{kind}: {coco_to_pngs(src, dst)} image(s) written to {dst}/instances and {dst}/labels"
    if kind == "png-to-coco":
        return f"{kind}: {pngs_to_coco(src, dst, images=options.get('images'))} object(s) written to {dst}"
    if kind == "via-to-coco":
        return f"{kind}: {via_to_coco(src, dst, category=options.get('category') or 'balloon')} object(s) -> {dst}"
    raise SegbenchError(f"unknown conversion '{kind}'{nearest(kind, KINDS)}; valid: {', '.join(KINDS)}")
