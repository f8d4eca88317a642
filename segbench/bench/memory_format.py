"""Training step time in channels_last (NHWC) vs contiguous (NCHW) memory, the same model, batch and weights.

    python -m segbench.bench.memory_format [--models unet_lite0,fcn8s_lite0,...] [--batch 8] [--size 256]

The cpu-camvid-pretrained suite's shapes by default (batch 8 of 256x256 crops, 11 classes, the suite's head widths,
random weights: speed does not depend on their values). Each model alternates the two layouts for ``--rounds``
rounds of ``--steps`` timed steps (forward, loss, backward, AdamW step) after one warm-up step, so a machine whose
speed drifts affects both alike; the median step of each layout is reported, with their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from ..device import device_name
from ..models import build_model

SUITE_MODELS: dict[str, dict[str, Any]] = {  # cpu-camvid-pretrained's widths; random initialisation
    "unet_lite0": {"backbone_weights": None, "decoder_channels": [128, 64, 32, 16, 16]},
    "fcn8s_lite0": {"backbone_weights": None},
    "deeplabv3plus_lite0": {"backbone_weights": None, "aspp_channels": 128},
    "unet_small": {},
}


def _step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer):
    def step() -> float:
        t0 = time.perf_counter()
        out = model(x)
        loss = F.cross_entropy(out["out"] if isinstance(out, dict) else out, y)  # padded models: output = input size
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - t0
    return step


def bench_model(name: str, options: dict[str, Any], *, batch: int, size: int, steps: int, rounds: int,
                num_classes: int = 11) -> dict[str, Any]:
    """Median seconds per training step of ``name`` in each layout, and contiguous / channels_last."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=num_classes, in_channels=3, **options).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, num_classes, (batch, size, size))
    times: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
    for _ in range(rounds):
        for layout, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
            model.to(memory_format=fmt)
            step = _step_fn(model, x.contiguous(memory_format=fmt), y, optimizer)
            step()  # warm-up: oneDNN picks (and caches) its kernels for this layout
            times[layout] += [step() for _ in range(steps)]
    contiguous, nhwc = statistics.median(times["contiguous"]), statistics.median(times["channels_last"])
    return {"model": name, "contiguous_s": round(contiguous, 3), "channels_last_s": round(nhwc, 3),
            "speedup": round(contiguous / nhwc, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segbench.bench.memory_format", description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(SUITE_MODELS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round and layout (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two layouts (default 2)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in SUITE_MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(SUITE_MODELS)}")
    if min(args.batch, args.size, args.steps, args.rounds) < 1:
        parser.error("--batch, --size, --steps and --rounds must be >= 1")
    rows = [bench_model(m, SUITE_MODELS[m], batch=args.batch, size=args.size, steps=args.steps, rounds=args.rounds)
            for m in names]
    result = {"device": device_name(torch.device("cpu")), "threads": torch.get_num_threads(), "batch": args.batch,
              "size": args.size, "rows": rows}
    for row in rows:
        print(f"{row['model']:>22}: NCHW {row['contiguous_s']:.3f} s/step, NHWC {row['channels_last_s']:.3f} s/step, "
              f"{row['speedup']:.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
