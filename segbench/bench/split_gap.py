"""Why a Mask R-CNN scores lower on CamVid test than on val: the same weights on both splits, taken apart.

``python -m segbench.bench.split_gap WEIGHTS [WEIGHTS ...] [--data-root DIR] [--json PATH]``

For every semantic model: mIoU and per-class IoU on val and test (the scoring function of ``run`` and ``eval``).
For every instance model, from one pass over each split (detections kept in memory, thresholds applied after):

* mIoU at score thresholds 0.3 / 0.5 / 0.7 (the record's is 0.5): a threshold tuned to val would show here;
* **coverage**: the share of labelled pixels a kept mask covers, and pixel accuracy on covered pixels and on the
  uncovered ones (those get the ``fill`` class, chosen on train); a fill bug or a detector that finds less on test
  shows as lower coverage or a collapse of the uncovered accuracy;
* kept detections per image, and ground-truth instances per image (the instance conversion of ``InstanceView``:
  4-connected components of at least 16 pixels) against ``max_dets`` (100): too many objects for the detector's
  budget would show here;
* image sizes of both splits (a resize difference would show here).

Generalisation is what remains when these are the same on both splits: then compare the drop with the semantic
models' drop on the same images.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from ..errors import SegbenchError
from ..evaluation.metrics import ConfusionMatrix, to_semantic

THRESHOLDS = (0.3, 0.5, 0.7)


def semantic_gap(weights: str, *, store: Any, data_root: str | None) -> dict[str, Any]:
    """mIoU and per-class IoU of semantic weights on val and test."""
    from ..train.runner import DataSplit, evaluate_weights

    out: dict[str, Any] = {}
    for split in ("val", "test"):
        metrics, info, meta, n = evaluate_weights(weights, store=store, on=DataSplit(split=split, data_root=data_root))
        out[split] = {"images": n, "miou": metrics["miou"], "miou_ci": metrics.get("miou_ci"),
                      "iou": dict(zip(info.class_names, metrics["iou"]))}
    out["model"] = meta.display_name
    return out


@torch.inference_mode()
def instance_gap(weights: str, *, store: Any, data_root: str | None) -> dict[str, Any]:
    """The instance model's split statistics described in the module docstring."""
    from ..data import build_dataset
    from ..train.data import _with_fill, eval_loader
    from ..train.engine import prepare_batch
    from ..train.runner import with_stats
    from ..weights.store import load_model

    model, meta = load_model(weights, store=store, map_location="cpu")
    model.eval()
    name = meta.dataset
    l2c = torch.tensor(meta.label_to_class) if meta.label_to_class is not None else None
    out: dict[str, Any] = {"model": meta.display_name, "fill": meta.fill, "score_threshold": meta.score_threshold}
    for split in ("val", "test"):
        semantic = build_dataset(name, split=split, root=data_root)
        info = with_stats(semantic.info, meta.mean, meta.std)  # the weights' input normalisation
        instances = _with_fill(build_dataset(name, split=split, root=data_root, task="instance"), meta.fill)
        fill = int(instances.fill)
        loader = eval_loader(semantic, task="instance", batch_size=1, instances=instances)
        cms = {t: ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index) for t in THRESHOLDS}
        covered = correct_covered = uncovered = correct_uncovered = 0
        kept, gt_instances, sizes = [], [], set()
        for batch in loader:
            inputs = prepare_batch(batch, info, torch.device("cpu"), False, "instance")
            pred = model(inputs.images)[0]
            target = inputs.targets[0]
            gt = target["semantic"]
            h, w = gt.shape
            sizes.add((h, w))
            gt_instances.append(int(target["labels"].numel()))
            for t in THRESHOLDS:
                cms[t].update(to_semantic(pred, info.num_classes, h, w, score_threshold=t, label_to_class=l2c,
                                          fill=fill)[None], gt[None])
            keep = pred["scores"] >= out["score_threshold"]
            kept.append(int(keep.sum()))
            masks = pred["masks"][keep].squeeze(1) >= 0.5 if keep.any() else torch.zeros((0, h, w), dtype=torch.bool)
            cover = masks.any(0) if len(masks) else torch.zeros((h, w), dtype=torch.bool)
            sem = to_semantic(pred, info.num_classes, h, w, score_threshold=out["score_threshold"],
                              label_to_class=l2c, fill=fill)
            labelled = gt != info.ignore_index
            right = (sem == gt) & labelled
            covered += int((cover & labelled).sum())
            correct_covered += int((right & cover).sum())
            uncovered += int((~cover & labelled).sum())
            correct_uncovered += int((right & ~cover).sum())
        n = len(kept)
        out[split] = {
            "images": n, "image_sizes": sorted(sizes), "fill_class": info.class_names[fill],
            "miou_by_threshold": {str(t): cms[t].compute()["miou"] for t in THRESHOLDS},
            "iou": dict(zip(info.class_names, cms[out["score_threshold"]].compute()["iou"])),
            "coverage": covered / max(covered + uncovered, 1),
            "accuracy_covered": correct_covered / max(covered, 1),
            "accuracy_uncovered": correct_uncovered / max(uncovered, 1),
            "kept_per_image": sum(kept) / n, "gt_instances_per_image": sum(gt_instances) / n,
            "images_over_100_gt_instances": sum(g > 100 for g in gt_instances),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    from ..weights.store import LocalStore, default_store, load_model

    p = argparse.ArgumentParser(prog="python -m segbench.bench.split_gap", description=__doc__.splitlines()[0])
    p.add_argument("weights", nargs="+", help="weights folders (the demo pack's, or local:<dataset>/<model>--<id>)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: $SEGBENCH_DATA or ../shared/data/<name>)")
    p.add_argument("--json", default=None, help="write the results as JSON")
    args = p.parse_args(argv)
    store = LocalStore(default_store())
    results = []
    try:
        for weights in args.weights:
            _, meta = load_model(weights, store=store, map_location="cpu")
            gap = instance_gap if meta.task == "instance" else semantic_gap
            result = gap(weights, store=store, data_root=args.data_root)
            results.append(result)
            print(json.dumps(result, indent=1), flush=True)
    except SegbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        from ..files import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
