"""COCO box and mask AP/AR for instance predictions, computed with faster-coco-eval (C++; same numbers as
pycocotools, tested on a fixture).

Protocol (COCO, Lin et al. 2014; the ``cocoapi`` defaults):
  * AP = mean over IoU 0.50:0.05:0.95 and 101 recall points, at the largest ``max_dets``; AP50, AP75 at one IoU;
    AP small/medium/large by object area (< 32^2, 32^2..96^2, > 96^2 pixels; the ground truth's ``area``);
    AR at each ``max_dets`` value and AR small/medium/large at the largest.
  * Masks are binarised at ``mask_threshold`` (0.5) and stored as RLE; boxes are xyxy -> xywh.
  * Box results and mask results are loaded separately (as torchvision's reference evaluator does), so a mask
    detection's area for the small/medium/large split is its mask area, a box detection's is its box area.
  * Ground-truth ``iscrowd`` 1 regions are ignore regions; ``area`` comes from the target when present (COCO JSON),
    else from the mask.
  * A value with nothing to average (e.g. no small objects) is NaN (cocoapi prints -1).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as mask_utils
from torch import Tensor

from ..errors import SegbenchError

__all__ = ["InstanceEvaluator", "coco_results_json", "encode_masks"]


def encode_masks(masks: Tensor) -> list[dict]:
    """bool/uint8 masks [N,H,W] (any device) -> COCO compressed RLEs with ``counts`` as str (JSON-ready)."""
    if masks.shape[0] == 0:
        return []
    array = np.asfortranarray(masks.to(device="cpu", dtype=torch.uint8).permute(1, 2, 0).numpy())
    rles = mask_utils.encode(array)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _xywh(boxes: Tensor) -> list[list[float]]:
    b = boxes.detach().to(device="cpu", dtype=torch.float64)
    return torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], dim=1).tolist()


def _categories(labels: Tensor, label_to_category: Sequence[int] | None) -> list[int]:
    labels = labels.detach().cpu().to(torch.int64).tolist()  # callers may hand over float labels
    if label_to_category is None:
        return [int(v) for v in labels]
    return [int(label_to_category[v]) for v in labels]


def coco_results_json(
    preds: list[dict[str, Tensor]],
    image_ids: Sequence[int],
    *,
    label_to_category: Sequence[int] | None = None,
    mask_threshold: float = 0.5,
) -> list[dict]:
    """Model outputs -> COCO result entries ``{"image_id", "category_id", "bbox" [x,y,w,h], "score",
    "segmentation" (RLE, when the prediction has masks)}``, one per detection (for ``predict`` output files)."""
    results = []
    for pred, image_id in zip(preds, image_ids, strict=True):
        cats = _categories(pred["labels"], label_to_category)
        boxes, scores = _xywh(pred["boxes"]), pred["scores"].detach().cpu().tolist()
        rles = encode_masks(pred["masks"][:, 0] >= mask_threshold) if "masks" in pred else [None] * len(cats)
        for cat, box, score, rle in zip(cats, boxes, scores, rles):
            entry = {"image_id": int(image_id), "category_id": cat, "bbox": box, "score": float(score)}
            if rle is not None:
                entry["segmentation"] = rle
            results.append(entry)
    return results


class InstanceEvaluator:
    """Accumulates predictions and targets over a dataset; ``compute()`` returns COCO box and mask metrics.

    Args:
        label_to_category: maps model labels to category ids (COCO's non-contiguous ids); None: id = label.
        max_dets: detections per image considered, ascending (COCO: 1, 10, 100); AP uses the last, which must be
            at least the model's ``detections_per_img`` (ISBI images hold 100+ cells; the instance suites pass
            ``(1, 10, detections_per_img)``), else the lower-scoring detections are dropped (``compute`` warns).
        mask_threshold: probability at which predicted masks are binarised.

    ``update(preds, targets, image_ids=None)``: ``preds`` are Mask R-CNN eval outputs (``boxes`` [N,4] xyxy,
    ``labels``, ``scores``, ``masks`` float [N,1,H,W]), ``targets`` instance targets (``boxes``, ``labels``,
    ``masks`` uint8 [M,H,W], optional ``iscrowd``, ``area``); ``image_ids`` default to a running count.
    ``compute()`` returns ``{box,mask}_{ap, ap50, ap75, ap_small, ap_medium, ap_large, ar<d> for each d in
    max_dets, ar_small, ar_medium, ar_large}`` (fractions in [0, 1] or NaN) and ``max_dets`` (list[int]).
    """

    def __init__(
        self,
        label_to_category: Sequence[int] | Tensor | None = None,
        max_dets: Sequence[int] = (1, 10, 100),
        *,
        mask_threshold: float = 0.5,
    ) -> None:
        max_dets = [int(d) for d in max_dets]
        if not max_dets or any(d < 1 for d in max_dets) or max_dets != sorted(set(max_dets)):
            raise SegbenchError(f"max_dets={max_dets}: give ascending positive counts, e.g. [1, 10, 100]")
        if isinstance(label_to_category, Tensor):
            label_to_category = label_to_category.tolist()
        self.label_to_category = None if label_to_category is None else [int(c) for c in label_to_category]
        self.max_dets = max_dets
        self.mask_threshold = mask_threshold
        self.reset()

    def reset(self) -> None:
        self._images: list[dict] = []
        self._gt: list[dict] = []
        self._boxes: list[dict] = []
        self._segms: list[dict] = []
        self._seen_cats: set[int] = set()
        self._most_detections = 0  # the largest number of detections on one image

    def update(
        self,
        preds: list[dict[str, Tensor]],
        targets: list[dict[str, Tensor]],
        image_ids: Sequence[int] | None = None,
    ) -> None:
        if image_ids is None:
            start = len(self._images) + 1
            image_ids = range(start, start + len(targets))
        if not len(preds) == len(targets) == len(image_ids):
            raise ValueError(f"update: {len(preds)} preds, {len(targets)} targets, {len(image_ids)} image ids")
        for pred, target, image_id in zip(preds, targets, image_ids):
            height, width = target["masks"].shape[-2:]
            self._images.append({"id": int(image_id), "height": int(height), "width": int(width)})
            self._add_targets(target, int(image_id))
            self._add_preds(pred, int(image_id))

    def _add_targets(self, target: dict[str, Tensor], image_id: int) -> None:
        masks = target["masks"].bool()
        n = masks.shape[0]
        cats = _categories(target["labels"], self.label_to_category)
        crowd = target["iscrowd"].tolist() if "iscrowd" in target else [0] * n
        area = target["area"].tolist() if "area" in target else masks.flatten(1).sum(1).tolist()
        for cat, box, rle, c, a in zip(cats, _xywh(target["boxes"]), encode_masks(masks), crowd, area):
            self._gt.append(
                {
                    "id": len(self._gt) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": box,
                    "segmentation": rle,
                    "area": float(a),
                    "iscrowd": int(c),
                }
            )
            self._seen_cats.add(cat)

    def _add_preds(self, pred: dict[str, Tensor], image_id: int) -> None:
        cats = _categories(pred["labels"], self.label_to_category)
        scores = pred["scores"].detach().cpu().tolist()
        self._seen_cats.update(cats)
        self._most_detections = max(self._most_detections, len(scores))
        for cat, box, score in zip(cats, _xywh(pred["boxes"]), scores):
            self._boxes.append({"image_id": image_id, "category_id": cat, "bbox": box, "score": float(score)})
        if "masks" in pred:
            rles = encode_masks(pred["masks"].detach()[:, 0] >= self.mask_threshold)
            for cat, rle, score in zip(cats, rles, scores):
                self._segms.append({"image_id": image_id, "category_id": cat, "segmentation": rle, "score": score})

    def coco_ground_truth(self) -> dict:
        """The accumulated ground truth as a COCO instance dict (images, annotations, categories)."""
        if self.label_to_category is not None:
            cats = sorted(set(self.label_to_category[1:]))
        else:
            cats = sorted(self._seen_cats)
        return {
            "images": list(self._images),
            "annotations": list(self._gt),
            "categories": [{"id": c, "name": str(c)} for c in cats],
        }

    def compute(self) -> dict[str, float | list[int]]:
        if self._most_detections > self.max_dets[-1]:
            warnings.warn(
                f"InstanceEvaluator: an image has {self._most_detections} detections but max_dets ends at "
                f"{self.max_dets[-1]}: AP and AR count only each image's top {self.max_dets[-1]}; pass "
                "max_dets=(1, 10, detections_per_img)",
                stacklevel=2,
            )
        out: dict[str, float | list[int]] = {}
        gt_dict = self.coco_ground_truth()
        for prefix, iou_type, results in (("box", "bbox", self._boxes), ("mask", "segm", self._segms)):
            stats = self._evaluate(gt_dict, iou_type, results)
            out.update({f"{prefix}_{k}": v for k, v in stats.items()})
        out["max_dets"] = list(self.max_dets)
        return out

    def _keys(self) -> list[str]:
        return [
            "ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
            *(f"ar{d}" for d in self.max_dets), "ar_small", "ar_medium", "ar_large",
        ]  # fmt: skip

    def _evaluate(self, gt_dict: dict, iou_type: str, results: list[dict]) -> dict[str, float]:
        keys = self._keys()
        if not gt_dict["images"] or not gt_dict["categories"]:
            return dict.fromkeys(keys, math.nan)
        quiet = logging.getLogger("segbench.coco").debug
        gt = COCO(gt_dict, print_function=quiet)
        dt = gt.loadRes([dict(r) for r in results])  # loadRes adds fields: give it copies
        evaluator = COCOeval_faster(gt, dt, iou_type, print_function=quiet)
        evaluator.params.maxDets = list(self.max_dets)
        evaluator.evaluate()
        evaluator.accumulate()
        return dict(zip(keys, _summary(evaluator.eval, evaluator.params)))


def _summary(accumulated: dict, params) -> list[float]:
    """The COCO summary in ``InstanceEvaluator._keys`` order, read from ``accumulate()``'s arrays.

    cocoapi's ``summarize`` reads AP at ``maxDets=100`` (and AR at ``maxDets[0..2]``) whatever ``params.maxDets``
    are, so with 300 detections per image its AP silently ignores detections 101..300 (or finds no entry at all).
    Reading ``precision`` [T, R, K, A, M] and ``recall`` [T, K, A, M] here puts AP at the last ``maxDets`` for any
    list. As in cocoapi, -1 marks "nothing to average" (no ground truth of that category/area): the mean skips
    it, and an empty mean is NaN.
    """
    precision = np.asarray(accumulated["precision"])
    recall = np.asarray(accumulated["recall"])
    area = {label: i for i, label in enumerate(params.areaRngLbl)}
    last = len(params.maxDets) - 1

    def mean(values: np.ndarray) -> float:
        values = values[values > -1]
        return float(values.mean()) if values.size else math.nan

    def at_iou(threshold: float) -> int:
        return int(np.flatnonzero(np.isclose(params.iouThrs, threshold))[0])

    return [
        mean(precision[:, :, :, area["all"], last]),
        mean(precision[at_iou(0.5), :, :, area["all"], last]),
        mean(precision[at_iou(0.75), :, :, area["all"], last]),
        *(mean(precision[:, :, :, area[label], last]) for label in ("small", "medium", "large")),
        *(mean(recall[:, :, area["all"], m]) for m in range(len(params.maxDets))),
        *(mean(recall[:, :, area[label], last]) for label in ("small", "medium", "large")),
    ]
