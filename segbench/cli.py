"""Command line: ``python -m segbench <command>`` (or the ``segbench`` console script).

Every user-caused problem is printed as one line ``error: ...`` with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .cli_args import OneLineParser, check_input_folder, check_output, check_training_outputs, float_in, int_in
from .errors import SegbenchError, check_name, one_line

# PyTorch's OpenMP workers spin while waiting; on a shared 2-core machine a spinning worker holds the core the
# other needs and parallel ops stall (8-10x slower inference measured on a busy 2-core box). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

EPILOG = "Run 'python -m segbench COMMAND --help' for a command's options."


# ---------------------------------------------------------------- helpers

def _store(args: argparse.Namespace):
    from .store import LocalStore

    store = LocalStore(args.store)
    if store.root.exists() and not store.root.is_dir():
        raise SegbenchError(f"--store {store.root}: is a file, not a folder; give the weights folder")
    return store


def _print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """Plain aligned text table: columns = (key, header, format)."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        line = []
        for key, _, fmt in columns:
            value = row.get(key)
            line.append("-" if value is None or value != value else format(value, fmt) if fmt else str(value))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for j, r in enumerate(cells):
        print("  ".join(c.rjust(w) if j and i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


LEADERBOARD_COLUMNS = [
    ("model", "model", ""), ("dataset", "dataset", ""), ("hardware_class", "hw", ""), ("pixel_accuracy", "PA", ".4f"),
    ("mean_pixel_accuracy", "mPA", ".4f"), ("miou", "mIoU", ".4f"), ("miou_ci", "95% CI", ""),
    ("params_m", "params(M)", ".2f"), ("gmacs", "GMACs", ".2f"), ("forward_ms", "fwd(ms)", ".1f"),
    ("end_to_end_ms", "e2e(ms)", ".1f"), ("epochs", "epochs", ""), ("train_seconds", "train(s)", ".1f"),
    ("capped", "capped", ""),
]


def print_leaderboard(records: list[dict[str, Any]]) -> None:
    from .records import flatten

    rows = []
    for r in records:
        row = flatten(r)
        row["params_m"] = row["params"] / 1e6 if row["params"] else None
        row["miou_ci"] = _ci_text(row)
        row["capped"] = "yes" if row["capped"] else ""
        rows.append(row)
    rows.sort(key=lambda r: (r["dataset"], -(r["miou"] or 0)))
    print()
    _print_table(rows, LEADERBOARD_COLUMNS)


def _ci_text(row: dict[str, Any], scale: float = 1.0, digits: int = 4) -> str | None:
    """"low-high" of the bootstrap 95% CI of mIoU, or None when the record has none."""
    low, high = row.get("miou_ci_low"), row.get("miou_ci_high")
    if low is None or high is None or low != low:
        return None
    return f"{scale * low:.{digits}f}-{scale * high:.{digits}f}"


def print_groups(records: list[dict[str, Any]]) -> None:
    """Mean +- std of mIoU over the seeds of each config (records sharing a group)."""
    from .runner import group_summary

    print("\nmIoU over seeds (mean +- sample std):")
    for row in group_summary(records):
        print(f"  {row['model']} / {row['dataset']}: {row['miou_mean']:.4f} +- {row['miou_std']:.4f} "
              f"({row['runs']} seeds: {', '.join(map(str, row['seeds']))}; group {row['group']})")


# ---------------------------------------------------------------- commands

def cmd_run(args: argparse.Namespace) -> int:
    from . import distributed
    from .config import check_runnable, load_suite
    from .runner import expand_seeds, parse_shard, run_suite, shard

    overrides = args.overrides + ([f"data_root={args.data_root}"] if args.data_root else [])
    configs = expand_seeds(load_suite(args.suite, overrides), args.seeds)
    store = _store(args)
    for i, cfg in enumerate(configs, 1):
        check_runnable(cfg, f"{args.suite} (run {i}: {cfg.display_name()} / {cfg.dataset})")
    check_training_outputs((c.dataset for c in configs), store_root=store.root, leaderboard=args.leaderboard)
    if args.shard:
        index, count = parse_shard(args.shard)
        print(f"shard {index}/{count}: {len(shard(configs, index, count))} of the suite's {len(configs)} pairs "
              f"(positions {index}, {index + count}, ...)")
        configs = shard(configs, index, count)
    on_record = _pusher(args) if args.push else None
    with distributed.session(cuda=_uses_cuda(configs), timeout_minutes=args.dist_timeout):
        records = run_suite(configs, store=store, leaderboard=args.leaderboard, retrain=args.retrain,
                            progress=not args.no_progress, on_record=on_record)
        if not distributed.is_main_process():
            return 0
    print_leaderboard(records)
    if args.seeds > 1:
        print_groups(records)
    print(f"\n{len(records)} record(s) written under {Path(args.leaderboard) / 'records'}; weights in {_store(args).root / 'weights'}")
    return 0


def _pusher(args: argparse.Namespace):
    """The per-record Hub push of ``run --push``; the token is checked here, before any training."""
    from .hub import check_push_access, push_one

    store = _store(args)
    owner = check_push_access(owner=args.owner)

    def push(record: dict[str, Any]) -> None:
        push_one(record, store=store, owner=owner, results_repo=args.results_repo)

    return push


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .config import check_runnable, load_config
    from .runner import run_one

    cfg = load_config(args.config, args.overrides)
    store = _store(args)
    check_runnable(cfg, args.config)
    check_training_outputs([cfg.dataset], store_root=store.root, leaderboard=args.leaderboard)
    with distributed.session(cuda=_uses_cuda([cfg]), timeout_minutes=args.dist_timeout):
        record = run_one(cfg, store=store, leaderboard=args.leaderboard, retrain=args.retrain or args.resume,
                         resume=args.resume, progress=not args.no_progress)
    if record is not None:  # rank 0 (or the only process)
        print_leaderboard([record])
    return 0


def _uses_cuda(configs: list[Any]) -> bool:
    """A torchrun process group on GPUs (NCCL) when the configs train on CUDA, else on CPUs (gloo)."""
    return any(cfg.hardware_class() == "cuda" for cfg in configs)


def cmd_eval(args: argparse.Namespace) -> int:
    from .runner import evaluate_weights

    check_name("--split", args.split)  # a folder name inside the dataset
    check_input_folder(args.data_root, "--data-root")
    if args.json:
        check_output(args.json, "--json", folder=False)
    metrics, info, meta, n = evaluate_weights(
        args.weights, store=_store(args), dataset=args.dataset, split=args.split, data_root=args.data_root,
        dataset_args=dict(_parse_kv(args.dataset_arg)), batch_size=args.batch_size, device=args.device,
        progress=not args.no_progress)
    rows = [{"class": name, "iou": iou, "accuracy": acc, "dice": dice}
            for name, iou, acc, dice in zip(info.class_names, metrics["iou"], metrics["accuracy"], metrics["dice"])]
    print(f"{meta.get('name', meta['model'])} on {info.name}/{args.split} ({n} images)\n")
    _print_table(rows, [("class", "class", ""), ("iou", "IoU", ".4f"), ("accuracy", "accuracy", ".4f"), ("dice", "Dice", ".4f")])
    ci = metrics.get("miou_ci")
    print(f"\nPA {metrics['pixel_accuracy']:.4f}  mPA {metrics['mean_pixel_accuracy']:.4f}  mIoU {metrics['miou']:.4f}"
          + (f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else "")
          + f"  FWIoU {metrics['fwiou']:.4f}  mean Dice {metrics['mean_dice']:.4f}")
    if metrics["absent"]:
        print("absent classes (excluded from means): " + ", ".join(info.class_names[i] for i in metrics["absent"]))
    if "mask_ap" in metrics:
        print(f"mask AP {metrics['mask_ap']:.4f}  box AP {metrics.get('box_ap', float('nan')):.4f}  "
              f"(max_dets {meta.get('max_dets') or [1, 10, 100]})")
    if args.json:
        from .records import _clean, atomic_write_text

        atomic_write_text(args.json, json.dumps(_clean(metrics), indent=2) + "\n")
        print(f"metrics written to {args.json}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .device import keep_freed_memory
    from .predict import Predictor, list_images, predict_files

    out = check_output(args.out, "--out", folder=True)
    keep_freed_memory()  # many images through one model: reuse the activation buffers
    predictor = Predictor(args.weights, store=_store(args), device=args.device)
    failed = predict_files(predictor, list_images(args.input), Path(out), probs=args.probs, alpha=args.alpha)
    return 2 if failed else 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import MODELS
    from .analysis.report import model_report

    names = [args.name] if args.name else sorted(MODELS)
    if args.json and args.json != "-":
        check_output(args.json, "--json", folder=False)
    if args.erf_out:
        check_output(args.erf_out, "--erf-out", folder=False)
    if args.name and args.name not in MODELS:
        from .models import get_builder

        get_builder(args.name)
    if args.erf:
        if not args.name:
            raise SegbenchError("--erf needs a model name, e.g. 'segbench models deeplabv3 --erf'")
        from .analysis.report import erf_report

        info = erf_report(args.name, size=args.erf_size, out=args.erf_out, num_classes=args.num_classes,
                          in_channels=args.in_channels, options=dict(_parse_kv(args.option)))
        print(json.dumps(info, indent=2))
        return 0
    rows = model_report(names, size=args.size, num_classes=args.num_classes, in_channels=args.in_channels,
                        options=dict(_parse_kv(args.option)))
    if args.json:
        text = json.dumps(rows, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            print(f"written {args.json}")
        return 0
    from .analysis.report import COLUMNS

    _print_table(rows, [(key, header.format(size=args.size), fmt) for key, header, fmt in COLUMNS])
    return 0


def cmd_speed(args: argparse.Namespace) -> int:
    from .bench.run import run_speed

    if args.json:
        check_output(args.json, "--json", folder=False)
    result = run_speed(args.model, baseline=args.baseline, device=args.device, size=args.size, batch=args.batch,
                       steps=args.steps, compile=args.compile, weights=args.weights, image=args.image)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        from .records import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from .records import load_records

    records, problems = load_records(args.leaderboard)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if args.dataset:
        records = [r for r in records if r["dataset"] == args.dataset]
    status = None
    if args.suite:
        from .config import load_suite
        from .runner import expand_seeds, suite_status

        status = suite_status(expand_seeds(load_suite(args.suite, args.overrides), args.seeds), records)
        ids = {i for row in status for i in row["ids"]}
        records = [r for r in records if r["id"] in ids]
    if args.markdown:
        print(markdown_table(records))
    else:
        print_leaderboard(records)
    if status is not None:
        print_suite_status(args.suite, status)
    return 0


def print_suite_status(suite: str, status: list[dict[str, Any]]) -> None:
    """Which pairs of a suite have a record (and on which hardware class) and which are still missing."""
    missing = [row for row in status if not row["done"]]
    print(f"\nsuite {suite}: {len(status) - len(missing)} of {len(status)} pair(s) recorded, {len(missing)} missing")
    for row in missing:
        print(f"  missing: position {row['position']}: {row['model']} on {row['dataset']} (seed {row['seed']})")


def markdown_table(records: list[dict[str, Any]]) -> str:
    """The README's table: one row per record, best mIoU first within each dataset."""
    from .records import flatten

    rows = sorted((flatten(r) | {"_r": r} for r in records), key=lambda r: (r["dataset"], -(r["miou"] or 0)))
    lines = ["| dataset | model | family | PA | mPA | mIoU (95% CI) | test mIoU | mask AP | params (M) | GMACs "
             "| forward (ms) | end-to-end (ms) | epochs | train (s) | device |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: "–" if v is None or v != v else f"{100 * v:.1f}"  # noqa: E731
    num = lambda v, d: "–" if v is None or v != v else f"{v:.{d}f}"  # noqa: E731
    for r in rows:
        lat = r["_r"]["efficiency"]["latency"]
        precision = lat.get("precision", "fp32") + (", BN folded" if lat.get("batchnorm_folded") else "")
        ci = _ci_text(r, scale=100, digits=1)
        capped = " (capped)" if r["capped"] else ""
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['family']} | {pct(r['pixel_accuracy'])} "
            f"| {pct(r['mean_pixel_accuracy'])} | {pct(r['miou'])}{f' ({ci})' if ci else ''} | {pct(r['test_miou'])} "
            f"| {pct(r['mask_ap'])} | {r['params'] / 1e6:.2f} | {num(r['gmacs'], 1)} "
            f"| {num(r['forward_ms'], 1)} ({precision}) | {num(r['end_to_end_ms'], 1)} "
            f"| {r['epochs']}{capped} | {num(r['train_seconds'], 0)} | {r['train_device']} |"
        )
    return "\n".join(lines)


def _parse_kv(items: list[str] | None) -> list[tuple[str, Any]]:
    from .config import parse_override

    return [parse_override(item) for item in items or []]


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="segbench", description="Train, evaluate and compare classic segmentation models.",
                                     epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"segbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_training_commands(sub)
    _add_model_commands(sub)
    _add_report_commands(sub)
    from .cli_pack import register as register_pack  # demo-pack, export

    register_pack(sub)
    from .hub.cli import register  # push, pull (huggingface_hub is imported only when they run)

    register(sub)
    return parser


def _common(p: argparse.ArgumentParser, leaderboard: bool = True) -> None:
    p.add_argument("--store", default=None, help="weights folder (default $SEGBENCH_STORE or ~/.cache/segbench)")
    if leaderboard:
        p.add_argument("--leaderboard", default="leaderboard", help="where result records go (default: leaderboard)")


def _dist_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dist-timeout", type=float, default=None, metavar="MIN",
                   help="under torchrun: minutes a rank waits for the others (rendezvous, collectives) before "
                        "giving up with one error line (default 30)")


def _add_training_commands(sub: Any) -> None:
    """run, train, eval."""
    common = _common
    p = sub.add_parser("run", help="run a suite of (model, dataset) pairs and write one record per pair",
                       description="Train (or reuse weights with the same config hash), evaluate and record every pair of a suite.")
    p.add_argument("suite", nargs="?", default="default", help="suite name in segbench/suites/ or a YAML path (default: default)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override a config key in every run, e.g. epochs=2")
    p.add_argument("--data-root", help="dataset folder for every run (same as data_root=DIR)")
    common(p)
    p.add_argument("--retrain", action="store_true", help="train even when weights with the same config exist")
    p.add_argument("--seeds", type=int_in(1, 1000), default=1, metavar="N",
                   help="run each pair with seeds seed..seed+N-1 and print mean +- std of mIoU (default 1)")
    p.add_argument("--push", action="store_true", help="push each record and its weights to the Hugging Face Hub")
    p.add_argument("--owner", help="Hub user or organisation for --push (default: the token's user)")
    p.add_argument("--results-repo", help="Hub dataset repo for scores (default: $SEGBENCH_HUB_RESULTS or OWNER/segbench-results)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--shard", metavar="I/N", help="run only every N-th pair from position I (0-based, after --seeds): "
                   "N machines or job-array tasks split a suite, e.g. --shard 0/2 and --shard 1/2")
    _dist_timeout(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("train", help="train and evaluate one config file", description="Train one (model, dataset) config and write its record.")
    p.add_argument("config", help="YAML file of config keys (see README)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys, e.g. lr=0.01 model_args.depth=3")
    common(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of this config")
    p.add_argument("--retrain", action="store_true", help="train even when weights with the same config exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _dist_timeout(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate weights on a dataset (per-class table)")
    p.add_argument("weights", help="weights folder, model.safetensors, or local:<dataset>/<model>--<id>")
    p.add_argument("--dataset", help="dataset name (default: the one the weights were trained on)")
    p.add_argument("--data-root", help="dataset folder (default: $SEGBENCH_DATA or ../shared/data/<name>)")
    p.add_argument("--split", default="val")
    p.add_argument("--dataset-arg", action="append", metavar="key=value", help="dataset option, repeatable")
    p.add_argument("--batch-size", type=int_in(1, 65536), default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", metavar="PATH", help="write the metrics dict as JSON")
    p.add_argument("--no-progress", action="store_true")
    common(p, leaderboard=False)
    p.set_defaults(func=cmd_eval)



def _add_model_commands(sub: Any) -> None:
    """predict, models, speed."""
    common = _common
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



def _add_report_commands(sub: Any) -> None:
    """leaderboard, data."""
    p = sub.add_parser("leaderboard", help="print the table of result records")
    p.add_argument("--leaderboard", default="leaderboard", help="records folder (default: leaderboard)")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--markdown", action="store_true", help="Markdown (as in the README)")
    p.add_argument("--suite", help="only this suite's records, and list its pairs that have none yet")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="with --suite: the overrides the suite ran with")
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="with --suite: the --seeds it ran with")
    p.set_defaults(func=cmd_leaderboard)

    from .data.cli import register as register_data  # data list | check | convert

    register_data(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a reader gone before the buffered table is written is a BrokenPipeError
        return status
    except SegbenchError as exc:
        # one line even when a DataLoader worker pasted its traceback into the message
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader left (`segbench leaderboard | head`): stop quietly; point stdout at devnull so the
        # interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
