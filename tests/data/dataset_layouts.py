"""Tiny datasets in the exact on-disk layouts of VOC 2012, Cityscapes and ADE20K, written by the tests (nothing is
downloaded). Each image holds a few rectangles: known classes, instances and ignore pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segbench.data.folder import default_palette

H, W = 32, 48


def _image(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))


def _boxes(rng: np.random.Generator, n: int) -> list[tuple[int, int, int, int]]:
    """``n`` non-overlapping boxes (y0, y1, x0, x1) in a 2 x 3 grid of cells, at least 6x6 pixels each."""
    cells = rng.permutation(6)[:n]
    return [(int(c // 3) * 16 + 2, int(c // 3) * 16 + 14, int(c % 3) * 16 + 2, int(c % 3) * 16 + 14) for c in cells]


def palette_png(array: np.ndarray, path: Path, palette=None) -> None:
    """Save ``array`` (uint8 indices) as a palette PNG with the VOC colour map (as the devkit ships them)."""
    img = Image.fromarray(array.astype(np.uint8), mode="P")
    flat = [v for rgb in (palette or default_palette(256)) for v in rgb]
    img.putpalette(flat)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def make_voc(root: Path, *, n_train: int = 4, n_val: int = 2, aug: int = 0, seed: int = 0) -> Path:
    """``root/VOCdevkit/VOC2012`` with train/val lists; ``aug`` extra SBD images in SegmentationClassAug +
    train_aug.txt (train + aug ids). Returns the VOC2012 folder."""
    rng = np.random.default_rng(seed)
    base = root / "VOCdevkit" / "VOC2012"
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (base / "JPEGImages").mkdir()
    names = {"train": [f"2007_{i:06d}" for i in range(n_train)],
             "val": [f"2008_{i:06d}" for i in range(n_val)],
             "aug": [f"2009_{i:06d}" for i in range(aug)]}
    for split, ids in names.items():
        for name in ids:
            _image(rng).save(base / "JPEGImages" / f"{name}.jpg", quality=95)
            cls = np.zeros((H, W), np.uint8)
            obj = np.zeros((H, W), np.uint8)
            for k, (y0, y1, x0, x1) in enumerate(_boxes(rng, 2), start=1):
                cls[y0 - 1:y1 + 1, x0 - 1:x1 + 1] = 255  # the devkit's border around each object
                obj[y0 - 1:y1 + 1, x0 - 1:x1 + 1] = 255
                cls[y0:y1, x0:x1] = rng.integers(1, 21)
                obj[y0:y1, x0:x1] = k
            if split == "aug" or (aug and split == "train"):
                (base / "SegmentationClassAug").mkdir(exist_ok=True)
                Image.fromarray(cls).save(base / "SegmentationClassAug" / f"{name}.png")  # grey, as SBD ships
            if split != "aug":
                palette_png(cls, base / "SegmentationClass" / f"{name}.png")
                palette_png(obj, base / "SegmentationObject" / f"{name}.png")
    (lists / "train.txt").write_text("".join(f"{n}\n" for n in names["train"]))
    (lists / "val.txt").write_text("".join(f"{n}\n" for n in names["val"]))
    (lists / "trainval.txt").write_text("".join(f"{n}\n" for n in names["train"] + names["val"]))
    if aug:
        (lists / "train_aug.txt").write_text("".join(f"{n}\n" for n in names["train"] + names["aug"]))
    return base


# label ids used by the Cityscapes fixture: road 7 (train 0), sky 23 (10), person 24 (11), car 26 (13),
# parking 9 (ignored), unlabeled 0 (ignored)
def make_cityscapes(root: Path, *, n_train: int = 4, n_val: int = 2, seed: int = 0) -> Path:
    """``root/{leftImg8bit,gtFine}/{train,val}/<city>/...`` with labelIds and 16-bit instanceIds."""
    rng = np.random.default_rng(seed)
    for split, n, city in (("train", n_train, "aachen"), ("val", n_val, "frankfurt")):
        for folder in ("leftImg8bit", "gtFine"):
            (root / folder / split / city).mkdir(parents=True)
        for i in range(n):
            stem = f"{city}_{i:06d}_000019"
            _image(rng).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            ids = np.full((H, W), 23, np.uint8)  # sky on top
            ids[H // 2:] = 7  # road below
            ids[0:2] = 0  # an unlabeled strip (ignored)
            ids[-2:, :8] = 9  # parking (ignored)
            inst = ids.astype(np.uint16)
            for k, (y0, y1, x0, x1) in enumerate(_boxes(rng, 3)):
                label = (24, 26, 26)[k]
                ids[y0:y1, x0:x1] = label
                inst[y0:y1, x0:x1] = label * 1000 + k if k < 2 else label  # the third is a crowd region
            Image.fromarray(ids).save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(inst).save(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png")
    return root


def make_ade20k(root: Path, *, n_train: int = 4, n_val: int = 2, seed: int = 0) -> Path:
    """``root/ADEChallengeData2016/{images,annotations}/{training,validation}``; labels 0 (other) and 1..150."""
    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    for split, n in (("training", n_train), ("validation", n_val)):
        for folder in ("images", "annotations"):
            (base / folder / split).mkdir(parents=True)
        for i in range(n):
            stem = f"ADE_{split[:5] if split == 'training' else 'val'}_{i:08d}"
            _image(rng).save(base / "images" / split / f"{stem}.jpg", quality=95)
            label = np.full((H, W), 1, np.uint8)  # wall
            label[:2] = 0  # "other": ignored
            for y0, y1, x0, x1 in _boxes(rng, 2):
                label[y0:y1, x0:x1] = rng.integers(2, 151)
            label[-1, -1] = 150  # the last class appears
            Image.fromarray(label).save(base / "annotations" / split / f"{stem}.png")
    return base
