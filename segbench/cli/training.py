"""``segbench run``, ``train`` and ``eval``: suites and configs to records, weights to a per-class table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import check_name
from ..records.columns import HEADLINE, SCORES, text
from .args import check_input_folder, check_output, check_training_outputs, common_options, int_in, parse_kv, store_of
from .report import print_groups, print_leaderboard, print_table


def cmd_run(args: argparse.Namespace) -> int:
    from ..config.run import check_runnable, load_suite
    from ..train import distributed
    from ..train.runner import expand_seeds, parse_shard, run_suite, shard

    overrides = args.overrides + ([f"data_root={args.data_root}"] if args.data_root else [])
    configs = expand_seeds(load_suite(args.suite, overrides), args.seeds)
    store = store_of(args)
    for i, cfg in enumerate(configs, 1):
        check_runnable(cfg, f"{args.suite} (run {i}: {cfg.display_name()} / {cfg.dataset})")
    check_training_outputs((c.dataset for c in configs), store_root=store.root, leaderboard=args.leaderboard)
    if args.shard is not None:  # an empty --shard (a job array's unset variable) is an error, not the whole suite
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
    print(f"\n{len(records)} record(s) written under {Path(args.leaderboard) / 'records'}; weights in {store_of(args).root / 'weights'}")
    return 0


def _pusher(args: argparse.Namespace):
    """The per-record Hub push of ``run --push``; the token is checked here, before any training."""
    from ..hub import PushTarget, check_push_access, push_one

    store = store_of(args)
    owner = check_push_access(owner=args.owner)

    def push(record: dict[str, Any]) -> None:
        push_one(record, store=store, target=PushTarget(owner=owner, results_repo=args.results_repo))

    return push


def cmd_train(args: argparse.Namespace) -> int:
    from ..config.run import check_runnable, load_config
    from ..train import distributed
    from ..train.runner import run_one

    cfg = load_config(args.config, args.overrides)
    store = store_of(args)
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
    from ..train.runner import DataSplit, evaluate_weights

    check_name("--split", args.split)  # a folder name inside the dataset
    check_input_folder(args.data_root, "--data-root")
    if args.json:
        check_output(args.json, "--json", folder=False)
    metrics, info, meta, n = evaluate_weights(
        args.weights, store=store_of(args), batch_size=args.batch_size, device=args.device,
        on=DataSplit(dataset=args.dataset, split=args.split, data_root=args.data_root,
                     dataset_args=dict(parse_kv(args.dataset_arg))), progress=not args.no_progress)
    rows = [{"class": name, "iou": iou, "accuracy": acc, "dice": dice}
            for name, iou, acc, dice in zip(info.class_names, metrics["iou"], metrics["accuracy"], metrics["dice"])]
    print(f"{meta.display_name} on {info.name}/{args.split} ({n} images)\n")
    print_table(rows, [("class", "class", ""), ("iou", "IoU", ".4f"), ("accuracy", "accuracy", ".4f"), ("dice", "Dice", ".4f")])
    ci = metrics.get("miou_ci")
    print("\n" + "  ".join(f"{c.label} {text(metrics[c.key], c)}" + (
        f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci and c.key == HEADLINE else "")
        for c in SCORES if c.task == "semantic" and c.key in metrics))
    if metrics["absent"]:
        print("absent classes (excluded from means): " + ", ".join(info.class_names[i] for i in metrics["absent"]))
    if "mask_ap" in metrics:
        print(f"mask AP {metrics['mask_ap']:.4f}  box AP {metrics.get('box_ap', float('nan')):.4f}  "
              f"(max_dets {list(meta.max_dets or (1, 10, 100))})")
    if args.json:
        from ..records.io import _clean, atomic_write_text

        atomic_write_text(args.json, json.dumps(_clean(metrics), indent=2) + "\n")
        print(f"metrics written to {args.json}")
    return 0


def _dist_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dist-timeout", type=float, default=None, metavar="MIN",
                   help="under torchrun: minutes a rank waits for the others (rendezvous, collectives) before "
                        "giving up with one error line (default 30)")


def register(sub: Any) -> None:
    """The ``run``, ``train`` and ``eval`` subcommands."""
    common = common_options
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
