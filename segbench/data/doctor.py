"""The data doctor: ``segbench data check NAME --data-root DIR`` reads every file of a dataset once and reports.

Per split: image count, image sizes, stored label values found vs expected, a class frequency table (pixel share
and number of images containing the class), and one ``problem:`` line per images without masks, masks without
images, listed ids with neither, corrupt or unreadable files, image/mask size mismatches and label values outside the
dataset's table (each naming the file). Instance datasets (balloon, coco) report their annotation-file warnings as
problems and count instances per class. Exit status: 0 clean, 2 problems (``check`` returns the problem lines).
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ..errors import SegbenchError
from .facts import DATASET_FACTS
from .info import DatasetInfo
from .registry import DATASETS, build_dataset, default_root
from .io import read_image, read_mask


def _splits(name: str, options: dict) -> tuple[str, ...]:
    """The splits checked by default: the table's (``facts.DatasetFacts.splits``), or the builder's own list where
    it depends on an option (Cityscapes' ``mode``)."""
    listed = getattr(DATASETS[name], "splits", None)
    return tuple(listed(**options)) if callable(listed) else DATASET_FACTS[name].splits


def _accepted(fn: Callable, options: dict) -> dict:
    names = inspect.signature(fn).parameters
    return {k: v for k, v in options.items() if k in names}


def _values(values: Iterable[int]) -> str:
    """Compact text of a set of integers: runs shown as a..b."""
    out, run = [], []
    for v in sorted(values):
        if run and v == run[-1] + 1:
            run.append(v)
            continue
        if run:
            out.append(f"{run[0]}..{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)))
        run = [v]
    if run:
        out.append(f"{run[0]}..{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)))
    return "{" + ", ".join(out) + "}"


# ================================================================ semantic splits


def _semantic_pairs(name: str, root: str | None, split: str, options: dict, problems: list[str]):
    """(pairs, mask mapper) of one split, every lonely file reported; (None, None) if the split cannot be read."""
    factory = DATASETS[name]
    scan = getattr(factory, "scan", None)
    if scan is not None:
        listing = scan(root, split, **_accepted(scan, options))
        problems += [f"{p}: image without a mask" for p in listing.lonely_images]
        problems += [f"{p}: mask without an image" for p in listing.lonely_masks]
        problems += [f"{name} {split}: id '{i}' is listed but has neither image nor mask" for i in listing.missing]
        return listing.pairs, factory.table.map
    dataset = build_dataset(name, split=split, root=root, **options)
    return dataset.pairs, dataset.map_mask


def _check_semantic(info: DatasetInfo, pairs, map_mask, problems: list[str], log: Callable[[str], None],
                    limit: int | None) -> int:
    k = info.num_classes
    pixels = torch.zeros(k + 1, dtype=torch.int64)  # last bin: ignored pixels
    images_with = torch.zeros(k, dtype=torch.int64)
    raw_values: set[int] = set()
    sizes: Counter = Counter()
    checked = 0
    for image_path, mask_path in pairs[:limit] if limit else pairs:
        try:
            image = read_image(image_path, channels=info.in_channels)
            raw = read_mask(mask_path)
        except SegbenchError as exc:
            problems.append(str(exc))
            continue
        checked += 1
        h, w = image.shape[-2:]
        sizes[(w, h)] += 1
        if tuple(raw.shape) != (h, w):
            problems.append(f"{mask_path}: mask is {raw.shape[1]}x{raw.shape[0]} but its image is {w}x{h}")
            continue
        raw_values.update(raw.unique().tolist())
        try:
            mask = map_mask(raw, mask_path)
            bad = ((mask < 0) | (mask >= k)) & (mask != info.ignore_index)
            if bool(bad.any()):
                raise SegbenchError(f"{mask_path}: class values {_values(mask[bad].unique().tolist())} outside 0..{k - 1}")
        except SegbenchError as exc:
            problems.append(str(exc))
            continue
        counts = torch.bincount(torch.where(mask == info.ignore_index, k, mask).flatten(), minlength=k + 1)
        pixels += counts
        images_with += (counts[:k] > 0).to(torch.int64)
    shown = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(3))
    log(f"  images: {checked} read; sizes (WxH): {shown}{f', ... {len(sizes)} distinct' if len(sizes) > 3 else ''}")
    log(f"  stored label values found: {_values(raw_values)}")
    total = int(pixels.sum())
    if total:
        log(f"  ignored pixels ({info.ignore_index}): {100 * int(pixels[k]) / total:.2f}%")
        log(f"  {'class':24s} {'pixels %':>9s} {'images':>7s}")
        for c in range(k):
            log(f"  {c:3d} {info.class_names[c][:20]:20s} {100 * int(pixels[c]) / total:9.3f} {int(images_with[c]):7d}")
    return checked


# ================================================================ instance splits


def _check_instances(dataset, problems: list[str], log: Callable[[str], None], limit: int | None) -> int:
    names = getattr(dataset, "label_names", dataset.info.class_names)
    per_label: Counter = Counter()
    empty = checked = 0
    sizes: Counter = Counter()
    for i in range(min(len(dataset), limit or len(dataset))):
        try:
            image, target = dataset.load(i)
        except SegbenchError as exc:
            problems.append(str(exc))
            continue
        checked += 1
        sizes[tuple(image.shape[-1:-3:-1])] += 1
        per_label.update(target["labels"].tolist())
        empty += len(target["labels"]) == 0
    shown = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(3))
    log(f"  images: {checked} read; sizes (WxH): {shown}; images without instances: {empty}")
    for label in sorted(per_label):
        log(f"  {label:3d} {names[label] if label < len(names) else '?':20s} {per_label[label]:7d} instances")
    return checked


# ================================================================ entry point


def check(name: str, *, root: str | None = None, options: dict | None = None, splits: Iterable[str] | None = None,
          limit: int | None = None, log: Callable[[str], None] = print) -> list[str]:
    """Check dataset ``name`` under ``root`` (default: ``default_root``); log the report, return the problem lines."""
    if name not in DATASETS:
        raise SegbenchError(f"unknown dataset '{name}'; valid datasets: {', '.join(sorted(DATASETS))}")
    options = dict(options or {})
    root = root if root is not None else default_root(name)
    problems: list[str] = []
    t0 = time.perf_counter()
    total = 0
    for split in splits or _splits(name, options):
        log(f"{name} / {split}:")
        before = len(problems)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                probe = build_dataset(name, split=split, root=root, **options) if not hasattr(
                    DATASETS[name], "scan") else None
            problems += [str(w.message) for w in caught]
            if probe is not None and not hasattr(probe, "pairs"):
                total += _check_instances(probe, problems, log, limit)
            else:
                pairs, map_mask = _semantic_pairs(name, root, split, options, problems)
                info = getattr(DATASETS[name], "info", None) or probe.info
                total += _check_semantic(info, pairs, map_mask, problems, log, limit)
        except SegbenchError as exc:
            if str(exc) in problems:  # a layout error is the same for every split: say it once
                log("  (see above)")
                continue
            problems.append(str(exc))
        for line in problems[before:]:
            log(f"  problem: {line}")
    seconds = time.perf_counter() - t0
    verdict = "clean" if not problems else f"{len(problems)} problem(s)"
    log(f"{name}: {verdict}; {total} image(s) checked in {seconds:.1f} s ({Path(root) if root else 'no data root'})")
    return problems
