"""``segbench demo-pack`` and ``segbench export``: the app's demo pack and ONNX export (parser + dispatch)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .args import float_in, store_of

DEMO_OUT = "leaderboard/demo"  # segbench.weights.demo.DEMO_DIR, typed here so --help does not load torch (a test ties them)


def cmd_demo_pack(args: argparse.Namespace) -> int:
    from ..weights.demo import build_pack

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    build_pack(leaderboard=args.leaderboard, store=args.store, out=args.out, max_mb=args.max_mb, models=models)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..inference.export import export_onnx

    result = export_onnx(args.weights, out=args.out, store=store_of(args), images=args.images, opset=args.opset)
    print(json.dumps(result, indent=2))
    return 0



def register(sub: Any) -> None:
    """The ``demo-pack`` and ``export`` subcommands."""
    p = sub.add_parser("demo-pack", help="write the demo pack (fp16 weights + examples) the app uses out of the box",
                       description="Selection: per dataset (and per family on CamVid) the best val mIoU among the records "
                       "whose weights are in the store (README: 'The demo pack').")
    p.add_argument("--leaderboard", default="leaderboard", help="records folder (default: leaderboard)")
    p.add_argument("--store", default=None, help="weights folder (default $SEGBENCH_STORE or ~/.cache/segbench)")
    p.add_argument("--out", default=DEMO_OUT, help=f"pack folder, replaced (default: {DEMO_OUT})")
    p.add_argument("--max-mb", type=float_in(0.001, 100_000.0), default=40.0, help="size limit of the whole pack in MB (default 40)")
    p.add_argument("--models", help="comma-separated record ids, names or dataset/name instead of the rule")
    p.set_defaults(func=cmd_demo_pack)

    p = sub.add_parser("export", help="export semantic-model weights to ONNX and check parity with PyTorch")
    p.add_argument("weights", help="weights folder, model.safetensors, or local:<dataset>/<model>--<id>")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="only onnx")
    p.add_argument("--out", help="output file (default: model.onnx beside the weights)")
    p.add_argument("--images", help="parity images: an image or folder (default: the dataset's val images, else "
                                    "smoothed noise)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--store", default=None, help="weights folder (default $SEGBENCH_STORE or ~/.cache/segbench)")
    p.set_defaults(func=cmd_export)
