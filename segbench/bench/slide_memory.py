"""Peak memory and time of whole-image vs sliding-window inference on one Cityscapes-size image.

    python -m segbench.bench.slide_memory [--model fcn_resnet50] [--size 1024 2048] [--crop 512 1024]
                                          [--stride 341 683] [--classes 19] [--runs 1] [--json out.json]

Each mode runs in its own child process (a process's peak resident set, /proc/self/status ``VmHWM``, only ever
grows, so two modes in one process would hide the smaller one). A child builds the model (random weights), reads
its resident set (``VmRSS``: Python, torch and the weights), then times ``models.inference.infer`` on one
normalised float32 image [1,3,H,W] under ``inference_mode`` (fp32, eval mode) and reads ``VmHWM``. Reported:
``baseline_mib`` (before inference), ``peak_mib`` and ``peak_over_baseline_mib`` (what inference added), wall and
process-CPU seconds per image (median of ``runs``; CPU time is the steadier figure on a shared machine), and the
agreement of the two modes' argmax maps. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any


def _status_mib(field: str) -> float:
    """A /proc/self/status memory field (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One mode in this process: baseline RSS, time, peak RSS; saves the argmax map for the agreement check."""
    import torch

    from ..models import build_model
    from ..models.inference import WHOLE, evaluation_settings, infer

    torch.manual_seed(0)
    model = build_model(args.model, num_classes=args.classes).eval()
    x = torch.randn(1, 3, *args.size, generator=torch.Generator().manual_seed(0))
    evaluation = WHOLE if args.child == "whole" else evaluation_settings(mode="slide", crop=args.crop,
                                                                         stride=args.stride)
    baseline = _status_mib("VmRSS")
    seconds, cpu_seconds = [], []
    with torch.inference_mode():
        for _ in range(args.runs):
            t0, c0 = time.perf_counter(), time.process_time()
            scores = infer(model, x, evaluation)
            seconds.append(time.perf_counter() - t0)
            cpu_seconds.append(time.process_time() - c0)
            pred = scores.argmax(1).to(torch.uint8)
            del scores
    peak = _status_mib("VmHWM")
    if args.save:
        torch.save(pred, args.save)
    return {"mode": args.child, "evaluation": evaluation.describe(), "baseline_mib": round(baseline, 1),
            "peak_mib": round(peak, 1), "peak_over_baseline_mib": round(peak - baseline, 1),
            "seconds": round(statistics.median(seconds), 2), "cpu_seconds": round(statistics.median(cpu_seconds), 2),
            "threads": torch.get_num_threads()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both modes, each in a fresh child process; plus the argmax agreement between them."""
    import tempfile
    from pathlib import Path

    import torch

    from ..device import cpu_name

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("whole", "slide"):
            save = str(Path(tmp) / f"{mode}.pt")
            command = [sys.executable, "-m", "segbench.bench.slide_memory", "--child", mode, "--save", save,
                       "--model", args.model, "--classes", str(args.classes), "--runs", str(args.runs),
                       "--size", *map(str, args.size), "--crop", *map(str, args.crop),
                       "--stride", *map(str, args.stride)]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        whole, slid = (torch.load(Path(tmp) / f"{m}.pt", weights_only=True) for m in ("whole", "slide"))
        agreement = (whole == slid).float().mean().item()
    return {"model": f"{args.model} (random weights, {args.classes} classes)", "image": list(args.size),
            "cpu": cpu_name(), "modes": rows, "argmax_agreement": round(agreement, 4)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fcn_resnet50")
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--size", type=int, nargs=2, default=[1024, 2048], metavar=("H", "W"))
    parser.add_argument("--crop", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    parser.add_argument("--stride", type=int, nargs=2, default=[341, 683], metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--child", choices=("whole", "slide"), help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    result = run(args)
    for row in result["modes"]:
        print(f"{row['mode']:>5}: {row['evaluation']:<45} peak RSS {row['peak_mib']:8.1f} MiB "
              f"(+{row['peak_over_baseline_mib']:.1f} over {row['baseline_mib']:.1f} before inference), "
              f"{row['seconds']:.2f} s/image wall, {row['cpu_seconds']:.2f} s CPU, {row['threads']} threads")
    print(f"argmax agreement whole vs slide: {100 * result['argmax_agreement']:.2f}% of pixels; {result['cpu']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
