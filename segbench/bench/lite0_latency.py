"""Predict-path latency of the four EfficientNet-Lite0 models next to torchvision's mobile segmenters, in one run.

Every model goes through the same path (``speed.measure_latency``, i.e. ``predict.Predictor``): uint8 image to the
device, normalise, forward, resize back, argmax (Mask R-CNN: paste masks, class map), copy to the host. Random
weights (timing does not depend on them, except Mask R-CNN's: its mask head runs once per detection, and random
weights give the maximum, 100, on any image; so it is also timed capped at 10 detections, a sparse street scene,
and the mean number of detections is reported next to each), 11 classes (CamVid), one 512x512 image, batch 1. Precisions: "fp32"
(eager fp32, NCHW, BatchNorm as trained), "fast" (the predict path's default: BatchNorm folded into the convolutions,
channels_last, bf16 autocast where the device runs bf16 natively: GPUs, AVX-512-BF16/AMX CPUs; Mask R-CNN stays
fp32 on CPUs, as in evaluation) and "fast-fp32" (the fast path as on a CPU without native bf16). torchvision's
models go through the same path, so they are folded too. Models are measured round-robin, one timed pass each per
round, so load from other processes hits all of them alike; the median over rounds is reported.

Mask R-CNN is built with ``min_size = max_size = size`` so it sees the same 512x512 pixels (its default would
resize to 800). torchvision's ``lraspp_mobilenet_v3_large`` and ``deeplabv3_mobilenet_v3_large`` are built without
their auxiliary head (not run at inference anyway).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
from collections.abc import Callable
from unittest import mock

import torch
import torchvision
from torch import nn

from ..device import device_name
from ..errors import SegbenchError
from ..evaluation.speed import Timing, count_params, measure_latency, predict_meta
from ..models import build_model
from ..models.fold import folded_copy, has_batchnorm

NUM_CLASSES = 11  # CamVid
PRECISIONS = ("fp32", "fast", "fast-fp32")
# The head widths of cpu-camvid-pretrained (the models the demo pack carries); the papers' widths are the defaults.
SUITE_WIDTHS = {"unet_lite0": {"decoder_channels": (128, 64, 32, 16, 16)}, "deeplabv3plus_lite0": {"aspp_channels": 128},
                "maskrcnn_lite0": {"fpn_channels": 64, "box_head_size": 64}}


def builders(size: int) -> dict[str, Callable[[], nn.Module]]:
    """name -> builder of a randomly initialised model with ``NUM_CLASSES`` classes."""
    seg = torchvision.models.segmentation
    return {
        "unet_lite0": lambda: build_model("unet_lite0", num_classes=NUM_CLASSES, **SUITE_WIDTHS["unet_lite0"]),
        "fcn8s_lite0": lambda: build_model("fcn8s_lite0", num_classes=NUM_CLASSES),
        "deeplabv3plus_lite0": lambda: build_model("deeplabv3plus_lite0", num_classes=NUM_CLASSES,
                                                   **SUITE_WIDTHS["deeplabv3plus_lite0"]),
        "maskrcnn_lite0": lambda: build_model("maskrcnn_lite0", num_classes=NUM_CLASSES, min_size=size, max_size=size,
                                              **SUITE_WIDTHS["maskrcnn_lite0"]),
        "maskrcnn_lite0 (<=10 detections)": lambda: build_model(
            "maskrcnn_lite0", num_classes=NUM_CLASSES, min_size=size, max_size=size, detections_per_img=10,
            **SUITE_WIDTHS["maskrcnn_lite0"]),
        "torchvision lraspp_mobilenet_v3_large": lambda: seg.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES),
        "torchvision deeplabv3_mobilenet_v3_large": lambda: seg.deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False),
    }


def bench_lite0_latency(*, device: str = "cpu", size: int = 512, rounds: int = 5, warmup: int = 2,
                        precisions: tuple[str, ...] = ("fp32", "fast"), models: list[str] | None = None) -> dict:
    """``{"device", "image", "rounds", "rows": [{model, params, precision, end_to_end_ms, end_to_end_ms_std,
    forward_ms, forward_ms_std, mean_detections}]}``: medians (and s.d.) over ``rounds`` round-robin passes."""
    dev = torch.device(device)
    table = builders(size)
    torch.manual_seed(0)
    built = {name: table[name]().eval().to(dev) for name in (models or list(table))}
    metas = {name: predict_meta(model, in_channels=3) for name, model in built.items()}
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise SegbenchError(f"lite0_latency: precision '{unknown[0]}' is unknown; use {', '.join(PRECISIONS)}")
    # Folded once, as a Predictor loading weights does (measure_latency would fold a fresh copy on every call).
    folded = {name: folded_copy(model)[0] for name, model in built.items()}
    rows = []
    for precision in precisions:
        amp = precision.startswith("fast")
        models_now = folded if amp else built
        timings: dict[str, list[dict]] = {name: [] for name in built}
        # fast-fp32: the predict path on a CPU without native bf16 (the Space's hardware may be one)
        no_bf16 = mock.patch("segbench.inference.predict.cpu_bf16_supported", return_value=False)
        with no_bf16 if precision == "fast-fp32" else contextlib.nullcontext():
            for name, model in models_now.items():  # warm-up: kernels' caches, oneDNN primitives
                measure_latency(model, in_channels=3, size=size, timing=Timing(dev, runs=1, warmup=warmup, amp=amp),
                                meta=metas[name])
            for _ in range(rounds):
                for name, model in models_now.items():
                    timings[name].append(measure_latency(model, in_channels=3, size=size, meta=metas[name],
                                                         timing=Timing(dev, runs=1, warmup=0, amp=amp)))
        for name, runs in timings.items():
            e2e, fwd = [r["end_to_end_ms"] for r in runs], [r["forward_ms"] for r in runs]
            rows.append({
                "model": name, "params": count_params(built[name]),
                "precision": runs[0]["precision"] + (" folded" if amp and has_batchnorm(built[name]) else ""),
                "end_to_end_ms": statistics.median(e2e), "end_to_end_ms_std": _std(e2e),
                "forward_ms": statistics.median(fwd), "forward_ms_std": _std(fwd),
                "mean_detections": runs[0].get("mean_detections"),
            })
    return {"device": device_name(dev), "image": [3, size, size], "rounds": rounds, "threads": torch.get_num_threads(),
            "rows": rows}


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def markdown(result: dict) -> str:
    """The result as a Markdown table (end-to-end first: what a user of the predict path waits for)."""
    lines = [f"{result['device']}, {result['threads']} threads, image {result['image']}, median of "
             f"{result['rounds']} round-robin passes", "",
             "| model | params (M) | precision | end-to-end ms | forward ms | detections |",
             "|---|---:|---|---:|---:|---:|"]
    for r in result["rows"]:
        det = "" if r["mean_detections"] is None else f"{r['mean_detections']:.0f}"
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f} | {r['precision']} | {r['end_to_end_ms']:.1f} ± "
                     f"{r['end_to_end_ms_std']:.1f} | {r['forward_ms']:.1f} ± {r['forward_ms_std']:.1f} | {det} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precision", choices=("fp32", "fast", "fast-fp32", "both", "all"), default="both",
                        help="both: fp32 and fast; all: also fast-fp32")
    parser.add_argument("--models", nargs="*", default=None, choices=sorted(builders(512)))
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    precisions = {"both": ("fp32", "fast"), "all": ("fp32", "fast", "fast-fp32")}.get(args.precision, (args.precision,))
    result = bench_lite0_latency(device=args.device, size=args.size, rounds=args.rounds, precisions=precisions,
                                 models=args.models)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
    print(markdown(result))


if __name__ == "__main__":
    main()
