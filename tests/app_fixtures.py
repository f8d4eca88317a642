"""Test fixtures for the app: made-up result records (record schema 2, with per-image counts, CI, hardware class,
selection, seeds) and a store of randomly initialised tiny models. For tests only, never for the leaderboard.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segbench.records.io import write_record

from segbench.records import io as records_module

SYNTHETIC_CLASSES = ["background", "disc", "rectangle", "triangle", "line", "blob"]


def per_image_counts(miou: float, *, images: int, classes: int, seed: int, noise: float = 0.02):
    """Per-image (intersection, union) int lists [images][classes] whose pooled mIoU is close to ``miou``: each
    image's IoU is ``miou`` plus Gaussian noise of s.d. ``noise``. Returns (intersection, union, pooled mIoU)."""
    rng = np.random.default_rng(seed)
    union = rng.integers(800, 1200, size=(images, classes))
    ratio = np.clip(miou + rng.normal(0.0, noise, size=(images, classes)), 0.0, 1.0)
    inter = np.minimum(np.round(union * ratio).astype(np.int64), union)
    pooled = float((inter.sum(0) / union.sum(0)).mean())
    return inter.tolist(), union.tolist(), pooled


def fake_record(i: int, *, dataset: str, model: str = "unet_small", family: str = "unet",
                class_names: list[str] | None = None, weights_uri: str | None = None, seed: int = 0,
                miou: float | None = None, images: int = 0, noise: float = 0.02, group: str | None = None,
                hardware_class: str = "cpu", device: str = "cpu (2 cores)", capped: bool = False,
                track: str = "steps", run_id: str | None = None) -> dict[str, Any]:
    """A schema-valid record with made-up numbers. With ``images`` > 0 it carries per-image counts (their pooled
    mIoU is the record's mIoU) and a 95% CI; ``group`` joins records of one configuration across seeds."""
    rng = random.Random(seed * 100_003 + i)
    class_names = class_names or SYNTHETIC_CLASSES
    run_id = run_id or f"{rng.getrandbits(48):012x}"
    miou = rng.uniform(0.3, 0.9) if miou is None else miou
    per_image, ci = None, None
    # per-class IoU around the mIoU, their mean exactly the mIoU (records are checked for it)
    spread = [rng.uniform(-1.0, 1.0) for _ in class_names]
    half = min(miou, 1.0 - miou) / 2
    iou = {c: miou + half * (d - sum(spread) / len(spread)) for c, d in zip(class_names, spread)}
    if images:
        inter, union, miou = per_image_counts(miou, images=images, classes=len(class_names), seed=seed * 7919 + i,
                                              noise=noise)
        per_image, ci = {"intersection": inter, "union": union}, [max(0.0, miou - 0.02), min(1.0, miou + 0.015)]
        iou = {c: sum(r[k] for r in inter) / sum(r[k] for r in union) for k, c in enumerate(class_names)}
    forward = rng.uniform(1.0, 400.0)
    return {
        "schema": records_module.SCHEMA_VERSION, "id": run_id, "group": group or f"g{run_id[:11]}",
        "hardware_class": hardware_class, "model": model, "family": family, "variant": f"v{i % 7}",
        "task": "semantic", "dataset": dataset, "split": "val", "num_classes": len(class_names),
        "class_names": class_names,
        "metrics": {"pixel_accuracy": min(1.0, miou + 0.1), "mean_pixel_accuracy": min(1.0, miou + 0.05),
                    "miou": miou, "fwiou": miou, "mean_dice": miou,
                    "iou": iou, "accuracy": {}, "dice": {},
                    "absent": [], "miou_ci": ci, "per_image": per_image,
                    "ci": {"method": "bootstrap over images, percentile", "level": 0.95, "resamples": 1000, "seed": 0},
                    "boundary_iou": {}, "mean_boundary_iou": miou * 0.6, "boundary_dilation_ratio": 0.02,
                    "mask_ap": None, "box_ap": None, "coco": None, "max_dets": None, "score_threshold": None},
        "test_metrics": None,
        "selection": {"checkpoint": "final", "holdout_images": None, "holdout_seed": None, "selected_epoch": 4},
        "efficiency": {
            "params": rng.randint(10_000, 60_000_000), "gmacs": rng.uniform(0.05, 100.0), "gmacs_aux": None,
            "gflops": rng.uniform(0.1, 200.0), "flops_input": [3, 96, 96],  # schema-1 readers
            "macs_convention": "1 multiply-add = 1 MAC (torchvision/fvcore 'GFLOPS'); aux head not counted",
            "macs_input": [3, 96, 96], "receptive_field": rng.randint(40, 900), "output_stride": 8,
            "latency": {"device": device, "batch_size": 1, "image_size": [96, 96], "precision": "fp32",
                        "forward_ms": forward, "forward_ms_std": 0.5, "end_to_end_ms": forward * 1.3,
                        "end_to_end_ms_std": 0.6, "ms": forward, "ms_std": 0.5,
                        "forward_scope": "model forward only, input already normalised on the device",
                        "end_to_end_scope": "resize + normalise + forward + argmax/paste + copy back to host; "
                                            "decode excluded",
                        "inputs": "random", "mean_detections": None}},
        "training": {"epochs": 4, "steps": 40, "budget": {"epochs": 4, "steps": 40}, "track": track,
                     "max_train_seconds": 600.0 if capped or track == "time" else None, "capped": capped,
                     "seconds": rng.uniform(10, 5000), "images_per_s": 50.0, "device": "cpu", "loader": "host",
                     "world_size": 1,
                     "history": [{"epoch": e, "loss": 1.0 / (e + 1), "miou": miou * e / 4, "lr": 1e-3}
                                 for e in range(1, 5)]},
        "config": {"model": model, "dataset": dataset, "epochs": 4, "seed": seed},
        "seed": seed, "versions": {"python": "3.11", "torch": torch.__version__}, "git_commit": None,
        "date": f"2025-01-{1 + i % 28:02d}T00:00:00+00:00",
        "weights": {"sha256": "0" * 64, "uri": weights_uri or f"local:{dataset}/{model}--{run_id}", "config_uri": ""},
        "hardware": {"device": device, "cpu": "bench", "cpu_count": 2},
    }


def write_model_store(store_root: str | Path, leaderboard: str | Path | None = None, *,
                      specs: list[tuple[str, dict]], dataset: str = "synthetic",
                      eval_size: list[int] | None = None) -> list[str]:
    """Save one randomly initialised model per spec into a LocalStore (with the meta the runner writes), plus a
    record pointing at it when ``leaderboard`` is given. Returns the weights URIs."""
    from segbench.bench.app import save_random_model

    uris = []
    for i, (name, options) in enumerate(specs):
        run_id = f"{i:012x}"
        weights, model, info = save_random_model(store_root, name, options, dataset=dataset, run_id=run_id, seed=i,
                                                 eval_size=eval_size)
        uris.append(weights["uri"])
        if leaderboard is not None:
            record = fake_record(i, dataset=dataset, model=name, family=model.family, class_names=list(info.class_names),
                                 weights_uri=weights["uri"], run_id=run_id)
            record.update(variant=model.variant, task=model.task, weights=weights)
            write_record(record, leaderboard)
    return uris
