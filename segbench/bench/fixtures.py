"""Generated data for timing the app: records with made-up (but self-consistent) numbers and randomly initialised
models saved as the runner saves them. For benchmarks and tests only, never for the leaderboard."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from ..records.io import SCHEMA_VERSION, write_record

BENCH_MODELS = [  # (model, options): one per family, as the default CPU suite trains them
    ("unet_small", {}),
    ("fcn8s_small", {}),
    ("deeplabv3plus_mobilenet", {}),
    ("maskrcnn_small", {}),
]


def bench_record(i: int, *, dataset: str, model: str, family: str, class_names: list[str],
                 weights: dict[str, str] | None = None, run_id: str | None = None) -> dict[str, Any]:
    """A schema-valid record with made-up numbers, for timing the app only (never for the leaderboard)."""
    rng = random.Random(i)
    run_id = run_id or f"{rng.getrandbits(48):012x}"
    miou, forward = rng.uniform(0.3, 0.9), rng.uniform(1.0, 400.0)
    spread = [rng.uniform(-1.0, 1.0) for _ in class_names]  # per-class IoU around mIoU, their mean exactly mIoU
    iou = {c: miou + min(miou, 1 - miou) / 2 * (d - sum(spread) / len(spread)) for c, d in zip(class_names, spread)}
    latency = {"device": rng.choice(["cpu (2 cores)", "NVIDIA H100"]), "batch_size": 1, "image_size": [96, 96],
               "precision": "fp32", "forward_ms": forward, "forward_ms_std": 0.5, "end_to_end_ms": 1.3 * forward,
               "end_to_end_ms_std": 0.5, "ms": forward, "ms_std": 0.5}
    return {
        "schema": SCHEMA_VERSION, "id": run_id, "group": run_id[::-1], "model": model, "family": family,
        "hardware_class": "cuda" if latency["device"].startswith("NVIDIA") else "cpu",
        "variant": f"v{i % 7}", "task": "semantic", "dataset": dataset, "split": "val",
        "num_classes": len(class_names), "class_names": class_names,
        "metrics": {"pixel_accuracy": min(1.0, miou + 0.1), "mean_pixel_accuracy": miou + 0.05, "miou": miou,
                    "fwiou": miou, "mean_dice": miou, "iou": iou,
                    "accuracy": {}, "dice": {}, "absent": [], "miou_ci": [miou - 0.02, min(1.0, miou + 0.02)],
                    "mask_ap": None, "box_ap": None, "coco": None, "score_threshold": None},
        "test_metrics": None,
        "selection": {"checkpoint": "final", "holdout_images": None, "holdout_seed": None, "selected_epoch": 4},
        "efficiency": {"params": rng.randint(10_000, 60_000_000), "gmacs": rng.uniform(0.05, 100.0),
                       "gflops": rng.uniform(0.1, 200.0), "flops_input": [3, 96, 96], "macs_input": [3, 96, 96],
                       "receptive_field": rng.randint(40, 900), "output_stride": 8, "latency": latency},
        "training": {"epochs": 4, "steps": 40, "track": "steps", "capped": False, "seconds": rng.uniform(10, 5000),
                     "images_per_s": 50.0, "device": "cpu",
                     "history": [{"epoch": e, "loss": 1.0 / (e + 1), "miou": miou * e / 4} for e in range(1, 5)]},
        "config": {"model": model, "dataset": dataset, "epochs": 4, "seed": 0},
        "seed": 0, "versions": {"torch": torch.__version__}, "git_commit": None,
        "date": f"2025-01-{1 + i % 28:02d}T00:00:00+00:00",
        "weights": weights or {"sha256": "0" * 64, "uri": f"local:{dataset}/{model}--{run_id}"},
        "hardware": {"device": latency["device"], "cpu": "bench", "cpu_count": 2},
    }


def write_fake_leaderboard(root: str | Path, count: int) -> Path:
    """``count`` generated records spread over four datasets and four families under ``root/records``."""
    families = [("unet_small", "unet"), ("fcn8s", "fcn"), ("deeplabv3", "deeplab"), ("maskrcnn_small", "maskrcnn")]
    classes = ["background", "disc", "rectangle", "triangle", "line", "blob"]
    for i in range(count):
        model, family = families[i % 4]
        dataset = ["synthetic", "isbi2012", "camvid", "balloon"][i // 4 % 4]
        write_record(bench_record(i, dataset=dataset, model=f"{model}_{i}", family=family, class_names=classes), root)
    return Path(root)


def save_random_model(store_root: str | Path, name: str, options: dict, *, dataset: str, run_id: str, seed: int = 0,
                      eval_size: list[int] | None = None):
    """Save a randomly initialised ``name`` for ``dataset`` into a LocalStore with the meta the runner writes.
    Returns (weights dict of the store, model, DatasetInfo)."""
    from ..data import build_dataset, dataset_info
    from ..models import build_model
    from ..weights.meta import WeightsMeta
    from ..weights.store import LocalStore

    info = dataset_info(dataset) or build_dataset(dataset, split="val").info  # static info: no data needed
    torch.manual_seed(seed)
    model = build_model(name, num_classes=info.num_classes, in_channels=info.in_channels, **options)
    meta = WeightsMeta.from_dict({
        "model": name, "model_args": {"in_channels": info.in_channels, **options},
        "num_classes": info.num_classes, "in_channels": info.in_channels, "class_names": list(info.class_names),
        "semantic_classes": info.num_classes, "mean": list(info.mean), "std": list(info.std),
        "ignore_index": info.ignore_index, "dataset": dataset, "palette": [list(c) for c in info.palette],
        "eval_size": eval_size, "eval_tile": None, "task": model.task, "name": name, "score_threshold": 0.5,
        "label_to_class": None, "fill": 0 if model.task == "instance" else None, "run_id": run_id,
    })
    return LocalStore(store_root).save(model, meta, dataset, name, run_id), model, info


def write_bench_store(store_root: str | Path, leaderboard: str | Path) -> None:
    """One random model per BENCH_MODELS entry on the synthetic domain, each with a record pointing at it."""
    for i, (name, options) in enumerate(BENCH_MODELS):
        run_id = f"{i:012x}"
        weights, model, info = save_random_model(store_root, name, options, dataset="synthetic", run_id=run_id, seed=i)
        record = bench_record(i, dataset="synthetic", model=name, family=model.family,
                              class_names=list(info.class_names), weights=weights, run_id=run_id)
        record.update(variant=model.variant, task=model.task)
        write_record(record, leaderboard)
