"""``segbench data [list] | check NAME | convert KIND SRC DST``: where datasets are found, the data doctor, and
label format conversions."""

from __future__ import annotations

import argparse
from typing import Any

from ..data.formats import CONVERSIONS
from .args import int_in, parse_kv


def cmd_list(args: argparse.Namespace) -> int:
    from ..data import DATASETS, dataset_info, default_root

    for name in sorted(DATASETS):
        info = dataset_info(name)
        print(f"{name:14s} {default_root(name) or '-':40s} {info.label if info else ''}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ..data.doctor import check

    options = dict(parse_kv(args.dataset_arg))
    problems = check(args.name, root=args.data_root, options=options, splits=args.split, limit=args.limit)
    return 2 if problems else 0


def cmd_convert(args: argparse.Namespace) -> int:
    from ..data.convert import convert

    print(convert(args.kind, args.src, args.dst, images=args.images, category=args.category))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("data", help="list datasets, check a dataset's files, convert label formats",
                       description="Without a subcommand: list the datasets and where their files are found.")
    p.set_defaults(func=cmd_list)
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    q = data_sub.add_parser("list", help="datasets and where their files are found")
    q.set_defaults(func=cmd_list)

    q = data_sub.add_parser("check", help="read every file once: counts, sizes, label values, class frequencies, problems",
                            description="Exit status 0 when clean, 2 when a problem was found (one line each).")
    q.add_argument("name", help="dataset name (segbench data list)")
    q.add_argument("--data-root", help="dataset folder (default: $SEGBENCH_DATA/<name>)")
    q.add_argument("--split", action="append", help="only this split (repeatable; default: the dataset's splits)")
    q.add_argument("--dataset-arg", action="append", metavar="key=value", help="dataset option, e.g. augmented=true")
    q.add_argument("--limit", type=int_in(1, 10_000_000), default=None, help="read only the first N images of each split")
    q.set_defaults(func=cmd_check)

    q = data_sub.add_parser("convert", help="convert label formats (VOC palette, Cityscapes ids, COCO, VIA)")
    q.add_argument("kind", choices=list(CONVERSIONS), metavar="KIND",
                   help="; ".join(f"{kind}: {what}" for kind, what in CONVERSIONS.items()))
    q.add_argument("src", help="input file or folder")
    q.add_argument("dst", help="output file or folder")
    q.add_argument("--images", help="png-to-coco: image folder (default SRC/images)")
    q.add_argument("--category", help="via-to-coco: the category name (default balloon)")
    q.set_defaults(func=cmd_convert)
