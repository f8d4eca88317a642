"""``segbench predict``, ``models`` and ``speed``: segment images, list the models, run the speed benchmarks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import SegbenchError
from .args import check_output, common_options, float_in, int_in, parse_kv, store_of
from .report import print_table


def cmd_predict(args: argparse.Namespace) -> int:
    from ..device import keep_freed_memory
    from ..inference.predict import Predictor, list_images, predict_files

    out = check_output(args.out, "--out", folder=True)
    keep_freed_memory()  # many images through one model: reuse the activation buffers
    predictor = Predictor(args.weights, store=store_of(args), device=args.device)
    failed = predict_files(predictor, list_images(args.input), Path(out), probs=args.probs, alpha=args.alpha)
    return 2 if failed else 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..analysis.report import model_report
    from ..models import MODELS

    names = [args.name] if args.name else sorted(MODELS)
    if args.json and args.json != "-":
        check_output(args.json, "--json", folder=False)
    if args.erf_out:
        check_output(args.erf_out, "--erf-out", folder=False)
    if args.name and args.name not in MODELS:
        from ..models import get_builder

        get_builder(args.name)
    if args.erf:
        if not args.name:
            raise SegbenchError("--erf needs a model name, e.g. 'segbench models deeplabv3 --erf'")
        from ..analysis.report import erf_report

        info = erf_report(args.name, size=args.erf_size, out=args.erf_out, num_classes=args.num_classes,
                          in_channels=args.in_channels, options=dict(parse_kv(args.option)))
        print(json.dumps(info, indent=2))
        return 0
    rows = model_report(names, size=args.size, num_classes=args.num_classes, in_channels=args.in_channels,
                        options=dict(parse_kv(args.option)))
    if args.json:
        text = json.dumps(rows, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            print(f"written {args.json}")
        return 0
    from ..analysis.report import COLUMNS

    print_table(rows, [(key, header.format(size=args.size), fmt) for key, header, fmt in COLUMNS])
    return 0


def cmd_speed(args: argparse.Namespace) -> int:
    from ..analysis.baselines import SpeedOptions, run_speed

    if args.json:
        check_output(args.json, "--json", folder=False)
    options = SpeedOptions(size=args.size, batch=args.batch, steps=args.steps, compile=args.compile,
                           weights=args.weights, image=args.image)
    result = run_speed(args.model, baseline=args.baseline, device=args.device, options=options)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        from ..records.io import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    return 0


def register(sub: Any) -> None:
    """The ``predict``, ``models`` and ``speed`` subcommands."""
    common = common_options
    p = sub.add_parser("predict", help="segment images: palette PNG masks and overlays")
    p.add_argument("weights", help="weights folder, model.safetensors, or local:<dataset>/<model>--<id>")
    p.add_argument("input", help="an image or a folder of images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--probs", action="store_true", help="also write per-class probabilities as float16 .npy [K,H,W]")
    p.add_argument("--alpha", type=float_in(0.0, 1.0), default=0.5, help="overlay opacity (default 0.5)")
    p.add_argument("--device", default="auto")
    common(p, leaderboard=False)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("models", help="list models: parameters, GMACs, output stride, receptive field")
    p.add_argument("name", nargs="?", help="one model (default: all)")
    p.add_argument("--size", type=int_in(1, 16384), default=512, help="input size for GMACs and receptive field (default 512)")
    p.add_argument("--num-classes", type=int_in(1, 100_000), default=21)
    p.add_argument("--in-channels", type=int_in(1, 64), default=3)
    p.add_argument("--option", action="append", metavar="key=value", help="model option, repeatable (e.g. output_stride=8)")
    p.add_argument("--json", metavar="PATH", help="write the table as JSON ('-' for stdout)")
    p.add_argument("--erf", action="store_true", help="measure the effective receptive field and save a heat map")
    p.add_argument("--erf-size", type=int_in(8, 4096), default=128, help="input size for --erf (default 128)")
    p.add_argument("--erf-out", default=None, help="heat-map PNG path (default erf_<model>.png)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("speed", help="benchmarks against baselines (metrics, torchvision models, predict path, training loop)")
    p.add_argument("model", nargs="?", help="model name (not needed for --baseline torchmetrics)")
    p.add_argument("--baseline", required=True, choices=["torchmetrics", "torchvision", "eager", "plain-loop"])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int_in(1, 16384), default=512)
    p.add_argument("--batch", type=int_in(1, 65536), default=None)
    p.add_argument("--steps", type=int_in(1, 1_000_000), default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--weights", help="--baseline eager: trained weights (folder or local: URI) instead of random ones")
    p.add_argument("--image", help="--baseline eager: a real image instead of smoothed noise")
    p.add_argument("--json", metavar="PATH")
    p.set_defaults(func=cmd_speed)
