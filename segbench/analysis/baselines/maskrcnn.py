"""Time Mask R-CNN post-processing: segbench's batched path (``fast_paste=True``) against torchvision's stock one.

Same model, same weights, same inputs; only ``model.fast_paste`` changes. Three timings (median of ``iters``
alternating runs after one warm-up of each, CUDA synchronised):

  * ``postprocess``: everything after the heads -- box decoding, score filter, NMS, top-k
    (``postprocess_detections``), per-label mask selection (``maskrcnn_inference``), box rescaling and mask pasting
    (``transform.postprocess``) -- on captured head outputs;
  * ``paste``: mask pasting alone on the same masks and boxes (stock ``paste_masks_in_image`` per image vs one
    ``paste_masks`` call for the batch), as probabilities and thresholded at 0.5 (bool, threshold fused in ours);
  * ``inference``: the whole ``model(images)``.

To get exactly ``detections`` boxes per image from random weights the score threshold is 0 (every proposal x class
is a candidate) and, only if NMS leaves fewer, the NMS threshold is raised to 1.0 (reported as ``nms_threshold``).
Untrained mask logits sit near 0 (probability ~0.5 everywhere, where float rounding flips pixels at random), so the
last mask layer is scaled to give logits of standard deviation 6, like a trained model's sharp masks.
Agreement is checked on the full model outputs: boxes, scores and labels bit-identical, per-instance mask IoU
(binarised at 0.5; two empty masks count as IoU 1) minimum and mean, largest probability difference.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import maskrcnn_inference, paste_masks_in_image

from ...errors import SegbenchError
from ...models.maskpaste import paste_masks
from ...models.maskrcnn import maskrcnn

__all__ = ["bench_postprocess"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_times(fns: dict[str, Callable[[], object]], iters: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each function; calls alternate so load drift hits all of them alike."""
    for fn in fns.values():  # warm-up (allocator, kernels, cudnn autotune)
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """Per-instance IoU of masks [N,1,H,W] binarised at 0.5; 1 where both are empty."""
    a, b = (a >= 0.5).flatten(1), (b >= 0.5).flatten(1)
    inter, union = (a & b).sum(1).float(), (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@torch.inference_mode()
def _head_outputs(model, images: list[Tensor]) -> dict:
    """Run the network up to the post-processing; returns what the post-processing consumes."""
    original_sizes = [tuple(img.shape[-2:]) for img in images]
    batch, _ = model.transform(images)
    features = model.backbone(batch.tensors)
    proposals, _ = model.rpn(batch, features)
    heads = model.roi_heads
    box_features = heads.box_head(heads.box_roi_pool(features, proposals, batch.image_sizes))
    class_logits, box_regression = heads.box_predictor(box_features)
    boxes, _, _ = heads.postprocess_detections(class_logits, box_regression, proposals, batch.image_sizes)
    mask_logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(features, boxes, batch.image_sizes)))
    return {
        "class_logits": class_logits,
        "box_regression": box_regression,
        "proposals": proposals,
        "image_sizes": batch.image_sizes,
        "original_sizes": original_sizes,
        "mask_logits": mask_logits,
    }


@torch.inference_mode()
def _postprocess(model, head: dict) -> list[dict[str, Tensor]]:
    """torchvision's eval post-processing chain (RoIHeads.forward's tail + GeneralizedRCNN's), in the model's mode."""
    heads = model.roi_heads
    boxes, scores, labels = heads.postprocess_detections(
        head["class_logits"], head["box_regression"], head["proposals"], head["image_sizes"]
    )
    masks = maskrcnn_inference(head["mask_logits"], labels)
    result = [{"boxes": b, "labels": c, "scores": s, "masks": m} for b, s, c, m in zip(boxes, scores, labels, masks)]
    return model.transform.postprocess(result, head["image_sizes"], head["original_sizes"])


def bench_postprocess(
    *,
    device: str = "cpu",
    size: int = 512,
    batch: int | None = None,
    detections: int = 100,
    iters: int = 3,
    num_classes: int = 2,
    backbone: str = "resnet50_fpn",
    seed: int = 0,
) -> dict:
    """Benchmark (module docstring). ``batch`` defaults to 2 on CPU and 16 on GPU; images are ``size`` x ``size``.

    Returns a dict: ``device``, ``size``, ``batch``, ``detections_per_image``, ``nms_threshold``, ``iters``,
    ``threads``, ``backbone``; ``postprocess``/``paste``/``paste_bool``/``inference``: ``{"stock_images_per_s",
    "ours_images_per_s", "speedup"}``; ``boxes_identical``, ``scores_identical``, ``labels_identical``,
    ``mask_iou_min``, ``mask_iou_mean``, ``mask_max_abs_diff``.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SegbenchError(f"bench_postprocess: device '{device}' requested but CUDA is not available; use cpu")
    batch = batch or (16 if dev.type == "cuda" else 2)
    if detections < 1 or iters < 1 or batch < 1:
        raise SegbenchError("bench_postprocess: detections, iters and batch must be >= 1")
    model, images, head = _calibrated_model(dev, size=size, batch=batch, detections=detections,
                                            num_classes=num_classes, backbone=backbone, seed=seed)
    result = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "size": size,
              "batch": batch, "backbone": backbone, "iters": iters, "threads": torch.get_num_threads(),
              **_agreement(model, images)}

    def rates(times: dict[str, float]) -> dict[str, float]:
        stock, ours = batch / times["stock"], batch / times["ours"]
        return {"stock_images_per_s": stock, "ours_images_per_s": ours, "speedup": ours / stock}

    def run(fast: bool, fn: Callable[[], object]) -> Callable[[], object]:
        def call():
            model.fast_paste = fast
            return fn()

        return call

    # ---- post-processing only
    post = lambda: _postprocess(model, head)  # noqa: E731
    result["postprocess"] = rates(_median_times({"stock": run(False, post), "ours": run(True, post)}, iters, dev))
    # ---- pasting only (probabilities, then thresholded)
    for key, threshold in (("paste", None), ("paste_bool", 0.5)):
        result[key] = rates(_median_times(_paste_calls(model, head, threshold), iters, dev))
    # ---- whole inference
    with torch.inference_mode():
        result["inference"] = rates(
            _median_times({"stock": run(False, lambda: model(images)), "ours": run(True, lambda: model(images))},
                          iters, dev)  # fmt: skip
        )
    model.fast_paste = True
    return result


def _calibrated_model(dev: torch.device, *, size: int, batch: int, detections: int, num_classes: int,
                      backbone: str, seed: int) -> tuple[torch.nn.Module, list[torch.Tensor], dict]:
    """A random-weight Mask R-CNN that keeps ``detections`` per image with trained-like mask logits, its input
    images and its head outputs."""
    torch.manual_seed(seed)
    model = maskrcnn(num_classes=num_classes, backbone=backbone, min_size=size, max_size=size,
                     detections_per_img=detections, score_threshold=0.0)
    model.eval().to(dev)
    gen = torch.Generator().manual_seed(seed)
    images = [torch.randn(3, size, size, generator=gen).to(dev) for _ in range(batch)]
    head = _head_outputs(model, images)
    counts = [len(b) for b in model.roi_heads.postprocess_detections(
        head["class_logits"], head["box_regression"], head["proposals"], head["image_sizes"])[0]]  # fmt: skip
    if min(counts) < detections:  # random weights: let NMS keep everything so each image has `detections`
        model.roi_heads.nms_thresh = 1.0
    # Untrained mask logits sit near 0 (p ~ 0.5 everywhere), where float rounding flips pixels at random; scale
    # the last mask layer so logits spread like a trained model's (std 6: sharp mask edges).
    with torch.no_grad():
        logits = model.roi_heads.mask_predictor.mask_fcn_logits
        logits.weight.mul_(6.0 / head["mask_logits"].std().clamp(min=1e-12))
    return model, images, _head_outputs(model, images)


def _agreement(model: torch.nn.Module, images: list[torch.Tensor]) -> dict:
    """Stock vs vectorised paste on the full model outputs: identical boxes/scores/labels, mask IoU."""
    with torch.inference_mode():
        model.fast_paste = False
        stock_out = model(images)
        model.fast_paste = True
        ours_out = model(images)
    pairs = list(zip(stock_out, ours_out))
    ious = torch.cat([_mask_iou(s["masks"], o["masks"]) for s, o in pairs])
    return {
        "detections_per_image": statistics.mean(len(o["boxes"]) for o in ours_out),
        "nms_threshold": model.roi_heads.nms_thresh,
        "boxes_identical": all(torch.equal(s["boxes"], o["boxes"]) for s, o in pairs),
        "scores_identical": all(torch.equal(s["scores"], o["scores"]) for s, o in pairs),
        "labels_identical": all(torch.equal(s["labels"], o["labels"]) for s, o in pairs),
        "mask_iou_min": float(ious.min()) if len(ious) else 1.0,
        "mask_iou_mean": float(ious.mean()) if len(ious) else 1.0,
        "mask_max_abs_diff": max(float((s["masks"] - o["masks"]).abs().max()) if len(o["masks"]) else 0.0
                                 for s, o in pairs),  # fmt: skip
    }


def _paste_calls(model: torch.nn.Module, head: dict, threshold: float | None) -> dict[str, Callable[[], object]]:
    """Stock and vectorised pasting of the detections' 28x28 masks into the image (optionally thresholded)."""
    with torch.inference_mode():
        _, _, labels = model.roi_heads.postprocess_detections(
            head["class_logits"], head["box_regression"], head["proposals"], head["image_sizes"]
        )
        small = maskrcnn_inference(head["mask_logits"], labels)
        boxes = [d["boxes"] for d in _postprocess(model, head)]
    h, w = head["original_sizes"][0]

    def stock():
        with torch.inference_mode():
            out = [paste_masks_in_image(m, b, (h, w)) for m, b in zip(small, boxes)]
            return [o >= threshold for o in out] if threshold is not None else out

    def ours():
        with torch.inference_mode():
            return paste_masks(torch.cat(small), torch.cat(boxes), h, w, threshold=threshold)

    return {"stock": stock, "ours": ours}


if __name__ == "__main__":  # python -m segbench.analysis.baselines.maskrcnn [cpu|cuda]
    import json
    import sys

    print(json.dumps(bench_postprocess(device=sys.argv[1] if len(sys.argv) > 1 else "cpu"), indent=1))
