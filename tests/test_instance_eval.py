"""COCO box/mask AP through faster-coco-eval equals pycocotools (the reference) on a fixture with crowd regions,
an image without objects, non-contiguous category ids, all object sizes and custom maxDets."""

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from segbench.errors import SegbenchError
from segbench.evaluation.coco import InstanceEvaluator, coco_results_json

import pycocotools  # noqa: E402,F401  (the reference COCO implementation the evaluator is checked against)
from pycocotools import mask as pmask  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

H, W = 160, 200
LABEL_TO_CATEGORY = [0, 5, 9]  # non-contiguous COCO ids


def _rect(y0, x0, h, w):
    m = torch.zeros(H, W, dtype=torch.uint8)
    m[y0 : y0 + h, x0 : x0 + w] = 1
    return m


def _box(m):
    ys, xs = torch.nonzero(m, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _fixture():
    """Targets and predictions for 4 images; objects small (< 32^2), medium and large (> 96^2)."""
    gen = torch.Generator().manual_seed(0)
    targets, preds = [], []
    for i in range(4):
        if i == 2:  # no objects, but two false positives
            gt_masks = torch.zeros(0, H, W, dtype=torch.uint8)
            gt_labels, crowd = torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
        else:
            gt_masks = torch.stack([_rect(5, 5, 20, 20), _rect(40, 30, 50, 60), _rect(30, 90, 110, 100),
                                    _rect(100 + i, 10, 12, 15)])  # fmt: skip
            gt_labels = torch.tensor([1, 2, 1, 2])
            crowd = torch.tensor([0, 0, 0, 1 if i == 0 else 0])
        targets.append({
            "boxes": torch.tensor([_box(m) for m in gt_masks]).reshape(-1, 4),
            "labels": gt_labels, "masks": gt_masks, "iscrowd": crowd,
        })  # fmt: skip
        n = 6
        masks, labels = [], []
        for k in range(n):
            if k < len(gt_masks):  # jitter a GT object
                ys, xs = torch.nonzero(gt_masks[k], as_tuple=True)
                dy, dx = torch.randint(-4, 5, (2,), generator=gen).tolist()
                m = _rect(max(0, int(ys.min()) + dy), max(0, int(xs.min()) + dx),
                          int(ys.max() - ys.min()) + 1 + int(torch.randint(-3, 4, (1,), generator=gen)),
                          int(xs.max() - xs.min()) + 1)  # fmt: skip
                label = int(gt_labels[k]) if k != 1 or i != 3 else 1  # one wrong class
            else:
                y0 = int(torch.randint(0, H - 30, (1,), generator=gen))
                x0 = int(torch.randint(0, W - 30, (1,), generator=gen))
                m = _rect(y0, x0, 25, 28)
                label = int(torch.randint(1, 3, (1,), generator=gen))
            masks.append(m)
            labels.append(label)
        masks = torch.stack(masks)
        prob = masks.float() * 0.8 + 0.1  # probabilities, binarised at 0.5
        preds.append({
            "boxes": torch.tensor([_box(m) for m in masks]) + torch.rand(n, 4, generator=gen),
            "labels": torch.tensor(labels),
            "scores": torch.rand(n, generator=gen),
            "masks": prob[:, None],
        })  # fmt: skip
    return preds, targets


def _pycocotools_stats(preds, targets, image_ids, iou_type, max_dets):
    """The reference: build the COCO dicts independently and run pycocotools."""
    images, anns, results = [], [], []
    for pred, target, image_id in zip(preds, targets, image_ids):
        height, width = target["masks"].shape[-2:]
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        for m, label, crowd, box in zip(target["masks"], target["labels"], target["iscrowd"], target["boxes"]):
            rle = pmask.encode(np.asfortranarray(m.numpy()))
            x0, y0, x1, y1 = box.tolist()
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": LABEL_TO_CATEGORY[int(label)],
                         "segmentation": rle, "area": float(m.sum()), "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "iscrowd": int(crowd)})  # fmt: skip
        for m, label, score, box in zip(pred["masks"], pred["labels"], pred["scores"], pred["boxes"]):
            entry = {"image_id": image_id, "category_id": LABEL_TO_CATEGORY[int(label)], "score": float(score)}
            if iou_type == "bbox":
                x0, y0, x1, y1 = box.tolist()
                entry["bbox"] = [x0, y0, x1 - x0, y1 - y0]
            else:
                entry["segmentation"] = pmask.encode(np.asfortranarray((m[0] >= 0.5).numpy().astype(np.uint8)))
            results.append(entry)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 5}, {"id": 9}]}
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(v) for v in ev.stats[:12]]
    # pycocotools' summarize() reads AP (stats[0]) at maxDets=100 whatever params.maxDets are (a known bug that
    # faster-coco-eval fixes): take the reference AP from pycocotools' own precision array at the last maxDets.
    precision = ev.eval["precision"][:, :, :, 0, -1]
    stats[0] = float(precision[precision > -1].mean()) if (precision > -1).any() else -1.0
    return stats


@pytest.mark.parametrize("max_dets", [(1, 10, 100), (1, 3, 5)])
def test_equals_pycocotools(max_dets):
    preds, targets = _fixture()
    image_ids = [3, 11, 12, 40]
    evaluator = InstanceEvaluator(label_to_category=torch.tensor(LABEL_TO_CATEGORY), max_dets=max_dets)
    evaluator.update(preds[:2], targets[:2], image_ids[:2])
    evaluator.update(preds[2:], targets[2:], image_ids[2:])
    if max_dets[-1] < 6:  # the fixture has 6 detections per image
        with pytest.warns(UserWarning, match="top 5"):
            ours = evaluator.compute()
    else:
        ours = evaluator.compute()
    assert ours["max_dets"] == list(max_dets)
    keys = ["ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", *(f"ar{d}" for d in max_dets),
            "ar_small", "ar_medium", "ar_large"]  # fmt: skip
    for prefix, iou_type in (("box", "bbox"), ("mask", "segm")):
        reference = _pycocotools_stats(preds, targets, image_ids, iou_type, max_dets)
        for key, ref in zip(keys, reference):
            value = ours[f"{prefix}_{key}"]
            if ref < 0:
                assert math.isnan(value), key
            else:
                assert value == pytest.approx(ref, abs=1e-12), f"{prefix}_{key}"
    assert 0 < ours["mask_ap"] < 1 and 0 < ours["box_ap"] < 1


def test_perfect_predictions_and_empty():
    _, targets = _fixture()
    perfect = [
        {"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"])),
         "masks": t["masks"][:, None].float()}
        for t in targets
    ]  # fmt: skip
    evaluator = InstanceEvaluator()
    evaluator.update(perfect, targets)
    out = evaluator.compute()
    assert out["mask_ap"] == pytest.approx(1.0) and out["box_ap50"] == pytest.approx(1.0)
    evaluator.reset()
    empty = evaluator.compute()
    assert empty.pop("max_dets") == [1, 10, 100] and all(math.isnan(v) for v in empty.values())
    with pytest.raises(SegbenchError, match="max_dets"):
        InstanceEvaluator(max_dets=(10, 1))


def test_coco_results_json_maps_categories():
    preds, _ = _fixture()
    results = coco_results_json(preds[:1], [42], label_to_category=LABEL_TO_CATEGORY)
    assert len(results) == 6
    first = results[0]
    assert first["image_id"] == 42 and first["category_id"] in (5, 9)
    assert set(first) == {"image_id", "category_id", "bbox", "score", "segmentation"}
    assert isinstance(first["segmentation"]["counts"], str) and first["segmentation"]["size"] == [H, W]
    decoded = pmask.decode({"size": [H, W], "counts": first["segmentation"]["counts"].encode()})
    assert torch.equal(torch.from_numpy(decoded), (preds[0]["masks"][0, 0] >= 0.5).to(torch.uint8))


def _many_cells(n_images: int, cells: int, extra: int, seed: int = 0):
    """ISBI-like images: ``cells`` 6x6 objects on a grid per image; predictions are the objects jittered by up to
    one pixel with random scores, plus ``extra`` random false positives."""
    gen = torch.Generator().manual_seed(seed)
    h, w = 10 * ((cells + 14) // 15), 150
    targets, preds = [], []
    for _ in range(n_images):
        masks = torch.zeros(cells, h, w, dtype=torch.uint8)
        for i in range(cells):
            y, x = 10 * (i // 15) + 2, 10 * (i % 15) + 2
            masks[i, y : y + 6, x : x + 6] = 1
        boxes = torch.stack([torch.tensor(_box_of(m)) for m in masks])
        targets.append({"boxes": boxes, "labels": torch.ones(cells, dtype=torch.int64), "masks": masks})
        shifts = torch.randint(-1, 2, (cells, 2), generator=gen).tolist()
        shifted = torch.stack([m.roll(tuple(shift), (0, 1)) for m, shift in zip(masks, shifts)])
        noise = torch.zeros(extra, h, w, dtype=torch.uint8)
        for j in range(extra):
            y, x = int(torch.randint(0, h - 5, (1,), generator=gen)), int(torch.randint(0, w - 5, (1,), generator=gen))
            noise[j, y : y + 5, x : x + 5] = 1
        masks_p = torch.cat([shifted, noise])
        preds.append({
            "boxes": torch.stack([torch.tensor(_box_of(m)) for m in masks_p]),
            "labels": torch.ones(len(masks_p), dtype=torch.int64),
            "scores": torch.rand(len(masks_p), generator=gen),
            "masks": masks_p[:, None].float(),
        })  # fmt: skip
    return preds, targets


def _box_of(m):
    ys, xs = torch.nonzero(m, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_150_perfect_instances_score_ap_1_at_matching_max_dets():
    # One image with 150 objects (ISBI val slices hold 99-122 cells; the model makes up to 300 detections).
    _, targets = _many_cells(1, 150, 0)
    perfect = [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.linspace(1, 0.5, len(t["labels"])),
                "masks": t["masks"][:, None].float()} for t in targets]  # fmt: skip
    evaluator = InstanceEvaluator(max_dets=(1, 10, 300))
    evaluator.update(perfect, targets)
    out = evaluator.compute()
    assert out["mask_ap"] == pytest.approx(1.0) and out["box_ap"] == pytest.approx(1.0)
    assert out["mask_ar300"] == pytest.approx(1.0) and out["max_dets"] == [1, 10, 300]

    capped = InstanceEvaluator()  # COCO's (1, 10, 100): only 100 of 150 objects can be found
    capped.update(perfect, targets)
    with pytest.warns(UserWarning, match="150 detections but max_dets ends at 100"):
        low = capped.compute()
    assert low["mask_ap"] < 0.7 and low["max_dets"] == [1, 10, 100]


def test_equals_pycocotools_with_300_detections():
    # 250 detections per image, more than COCO's 100; the reference helper maps label 1 -> category 5.
    preds, targets = _many_cells(2, 150, 100, seed=1)
    for t in targets:
        t["iscrowd"] = torch.zeros(len(t["labels"]), dtype=torch.int64)
    evaluator = InstanceEvaluator(label_to_category=LABEL_TO_CATEGORY, max_dets=(1, 10, 300))
    evaluator.update(preds, targets, [1, 2])
    ours = evaluator.compute()
    keys = ["ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar1", "ar10", "ar300", "ar_small",
            "ar_medium", "ar_large"]  # fmt: skip
    for prefix, iou_type in (("box", "bbox"), ("mask", "segm")):
        reference = _pycocotools_stats(preds, targets, [1, 2], iou_type, (1, 10, 300))
        for key, ref in zip(keys, reference):
            value = ours[f"{prefix}_{key}"]
            assert (math.isnan(value) and ref < 0) or value == pytest.approx(ref, abs=1e-12), f"{prefix}_{key}"
    assert 0.05 < ours["mask_ap"] < 0.95 and ours["mask_ar300"] > ours["mask_ar10"]


def test_instance_models_are_scored_one_image_at_a_time_whatever_the_batch():
    """torchvision pads a detection batch to its largest image: scores would change with the batch on mixed sizes."""
    from segbench.data import build_dataset
    from segbench.train.data import eval_loader

    semantic = build_dataset("synthetic", split="val", size=32, num_images=3)
    instances = build_dataset("synthetic", split="val", size=32, num_images=3, task="instance")
    assert eval_loader(semantic, task="instance", batch_size=4, instances=instances).batch_size == 1
    assert eval_loader(semantic, task="semantic", batch_size=4).batch_size == 4
