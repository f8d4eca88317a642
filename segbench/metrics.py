"""Segmentation metrics from one confusion matrix, and instance -> semantic conversion.

``ConfusionMatrix`` follows torchvision's ``references/segmentation/utils.py`` (one ``bincount`` per update)
and detectron2's ``SemSegEvaluator`` (pixel accuracy, mean accuracy, mIoU, FWIoU from one matrix).
``to_semantic`` turns a Mask R-CNN prediction into a class map so the same metrics apply to all families.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from segbench.errors import SegbenchError

__all__ = ["ConfusionMatrix", "to_semantic"]


# ---------------------------------------------------------------------------------------------------------------------
# Confusion matrix
# ---------------------------------------------------------------------------------------------------------------------


class ConfusionMatrix:
    """Dataset-level confusion matrix for semantic segmentation.

    ``matrix`` is int64 ``[K, K]``: rows are ground-truth classes, columns are predicted classes. It lives on
    ``device`` (default: the device of the first ``update``) and moves there once, so updates never copy to the CPU.

    ``update(pred, target)`` accepts

    - ``pred``: integer class map ``[B, H, W]`` or ``[H, W]`` with values in ``[0, K)``, or float logits
      ``[B, K, H, W]`` / ``[K, H, W]`` (argmax over the class dim, on the device);
    - ``target``: integer class map of the same ``[B, H, W]`` / ``[H, W]`` shape, values in ``[0, K)`` or
      ``ignore_index`` (default 255).

    Policy (the numbers ``compute()`` returns):

    - ignored pixels (target == ``ignore_index``) are skipped;
    - a class with an empty union (neither in the ground truth nor predicted) is excluded from every mean: its
      IoU, accuracy and Dice are NaN (never 0 or 1) and it is listed in ``absent``;
    - a class predicted but never in the ground truth has IoU 0 and Dice 0 (it counts in mIoU and mean Dice) and
      accuracy NaN (left out of mPA);
    - means are dataset-level: one matrix accumulates every pixel of the set, then the per-class numbers are
      computed once (not averaged per image);
    - FWIoU weights each class's IoU by its ground-truth pixel frequency;
    - Dice = 2TP / (2TP + FP + FN);
    - an empty matrix (no pixels counted) gives NaN for every mean and every class, without error.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None) -> None:
        if num_classes < 1:
            raise SegbenchError(f"ConfusionMatrix: num_classes={num_classes} must be >= 1; pass the dataset's class count")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._follow_data = device is None
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Zero the matrix (keeps its device)."""
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch. See the class docstring for shapes; raises ``SegbenchError`` on bad shapes or values."""
        k = self.num_classes
        pred = self._class_map(pred, target)
        if self.matrix.device != target.device:
            if not self._follow_data:
                raise SegbenchError(
                    f"ConfusionMatrix.update: target is on {target.device} but the matrix is on {self.matrix.device}; "
                    "move the batch to the metric's device or create the metric with device=None"
                )
            self.matrix = self.matrix.to(target.device)
            self._follow_data = False

        target = target.long()
        pred = pred.long()
        ignored = target == self.ignore_index
        # Both in [0, K): `t | p` is negative iff either is, and max(t, p) < K bounds both (5 ops instead of 7).
        in_range = ((target | pred) >= 0) & (torch.maximum(target, pred) < k)
        # Two extra bins: K*K counts ignored pixels, K*K+1 counts bad values. Routing them with `where` instead of
        # boolean indexing keeps the update free of data-dependent shapes (no host sync for a nonzero()).
        bins = torch.where(in_range, torch.add(pred, target, alpha=k), k * k + 1)
        bins = torch.where(ignored, k * k, bins)
        counts = torch.bincount(bins.flatten(), minlength=k * k + 2)
        if counts[k * k + 1]:  # the one host sync besides bincount's own
            raise SegbenchError(self._bad_values_message(pred, target, ignored))
        self.matrix += counts[: k * k].view(k, k)

    def _class_map(self, pred: Tensor, target: Tensor) -> Tensor:
        """Return ``pred`` as an integer class map with ``target``'s shape (argmax of logits)."""
        if target.dim() not in (2, 3) or target.is_floating_point() or target.is_complex():
            raise SegbenchError(
                f"ConfusionMatrix.update: target must be an integer class map [B,H,W] or [H,W], got "
                f"{target.dtype} {list(target.shape)}; pass the int64 mask, not one-hot or float"
            )
        if pred.device != target.device:
            raise SegbenchError(
                f"ConfusionMatrix.update: pred is on {pred.device} but target is on {target.device}; "
                "move both to the same device"
            )
        if pred.is_floating_point() and pred.dim() == target.dim() + 1:
            if pred.shape[-3] != self.num_classes:
                raise SegbenchError(
                    f"ConfusionMatrix.update: logits {list(pred.shape)} have {pred.shape[-3]} classes, expected "
                    f"{self.num_classes}; build the metric with the model's num_classes"
                )
            pred = pred.argmax(dim=-3)
        elif pred.is_floating_point():
            raise SegbenchError(
                f"ConfusionMatrix.update: float pred {list(pred.shape)} is neither logits [B,K,H,W] nor a class map; "
                "pass logits or an integer class map"
            )
        if pred.shape != target.shape:
            raise SegbenchError(
                f"ConfusionMatrix.update: pred {list(pred.shape)} and target {list(target.shape)} differ in shape; "
                "resize the prediction to the mask size (or pass logits [B,K,H,W] for target [B,H,W])"
            )
        return pred

    def _bad_values_message(self, pred: Tensor, target: Tensor, ignored: Tensor) -> str:
        # Slow path, only reached on an error: name up to 10 offending values of each tensor.
        k = self.num_classes
        bad_t = target[~ignored & ((target < 0) | (target >= k))].unique()[:10].tolist()
        bad_p = pred[~ignored & ((pred < 0) | (pred >= k))].unique()[:10].tolist()
        parts = []
        if bad_t:
            parts.append(f"target has values {bad_t} outside [0, {k}) that are not ignore_index={self.ignore_index}")
        if bad_p:
            parts.append(f"pred has values {bad_p} outside [0, {k})")
        return (
            f"ConfusionMatrix.update: {' and '.join(parts)}; check num_classes and the dataset's ignore value "
            "(map void labels to the ignore value)"
        )

    def all_reduce(self) -> None:
        """Sum the matrix over all processes (``torch.distributed``); a no-op when not initialised."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix)

    def compute(self) -> dict:
        """Return the metrics of the accumulated matrix; see ``summary``."""
        return self.summary(self.matrix)

    @staticmethod
    def summary(matrix: Tensor) -> dict:
        """Metrics of any int ``[K, K]`` confusion matrix (rows = ground truth, cols = prediction).

        Returns plain Python values (fractions in [0, 1], NaN where undefined; see the class docstring):
        ``pixel_accuracy``, ``mean_pixel_accuracy``, ``miou``, ``fwiou``, ``mean_dice`` (float);
        ``iou``, ``accuracy``, ``dice`` (list[float], one per class); ``absent`` (list[int], empty-union classes).
        """
        m = matrix.detach().to("cpu", torch.float64)
        tp = m.diag()
        gt = m.sum(dim=1)  # TP + FN
        predicted = m.sum(dim=0)  # TP + FP
        union = gt + predicted - tp  # TP + FP + FN
        total = m.sum()

        nan = torch.tensor(float("nan"), dtype=torch.float64)
        iou = torch.where(union > 0, tp / union, nan)
        accuracy = torch.where(gt > 0, tp / gt, nan)
        dice = torch.where(union > 0, 2 * tp / (gt + predicted), nan)
        # Classes absent from the ground truth have frequency 0, so they drop out of FWIoU on their own.
        freq = gt / total if total > 0 else torch.full_like(gt, float("nan"))
        fwiou = (freq[gt > 0] * iou[gt > 0]).sum() if total > 0 else nan
        return {
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
            "mean_pixel_accuracy": float(accuracy.nanmean()),
            "miou": float(iou.nanmean()),
            "fwiou": float(fwiou),
            "mean_dice": float(dice.nanmean()),
            "iou": iou.tolist(),
            "accuracy": accuracy.tolist(),
            "dice": dice.tolist(),
            "absent": torch.nonzero(union == 0).flatten().tolist(),
        }


# ---------------------------------------------------------------------------------------------------------------------
# Instance -> semantic
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def to_semantic(
    pred: dict[str, Tensor],
    num_classes: int,
    height: int,
    width: int,
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    label_to_class: Tensor | list[int] | None = None,
    fill: int = 0,
) -> Tensor:
    """Turn one torchvision Mask R-CNN prediction into a semantic class map, int64 ``[height, width]``.

    ``pred``: ``{"masks": float [N, 1, H, W] or [N, H, W] probabilities, "scores": float [N], "labels": int64 [N]}``
    with masks at the original image size (N = 0 is valid). A detection is kept when ``score >= score_threshold``
    and covers the pixels where ``mask >= mask_threshold``. Where kept masks overlap, the highest-scoring one wins
    (ties: the earlier detection). Pixels no kept mask covers get ``fill`` (the background class).
    ``label_to_class`` maps instance label -> semantic class (index = label); default identity. Every resulting
    class must lie in ``[0, num_classes)``. Runs on the masks' device.
    """
    masks, scores, labels = pred["masks"], pred["scores"], pred["labels"]
    device = masks.device
    if masks.dim() == 4:
        masks = masks.squeeze(1) if masks.shape[1] == 1 else masks.flatten(0, 1)
    n = masks.shape[0]
    if masks.dim() != 3 or (n > 0 and tuple(masks.shape[-2:]) != (height, width)):
        raise SegbenchError(
            f"to_semantic: masks {list(pred['masks'].shape)} do not match the image size {[height, width]}; "
            "pass masks [N,1,H,W] at the original resolution"
        )
    if not 0 <= fill < num_classes:
        raise SegbenchError(f"to_semantic: fill={fill} is outside [0, {num_classes}); pass the background class")
    out = torch.full((height, width), fill, dtype=torch.int64, device=device)
    if n == 0:
        return out

    classes = labels.to(device=device, dtype=torch.int64)
    if label_to_class is not None:
        lut = torch.as_tensor(label_to_class, dtype=torch.int64, device=device)
        if int(classes.max()) >= len(lut) or int(classes.min()) < 0:
            raise SegbenchError(
                f"to_semantic: labels {classes.unique().tolist()} are not all covered by label_to_class of length "
                f"{len(lut)}; give one class per instance label"
            )
        classes = lut[classes]
    if int(classes.max()) >= num_classes or int(classes.min()) < 0:
        raise SegbenchError(
            f"to_semantic: classes {classes.unique().tolist()} fall outside [0, {num_classes}); "
            "pass label_to_class mapping instance labels to semantic classes"
        )

    scores = scores.to(device=device, dtype=torch.float32)
    kept = (masks >= mask_threshold) & (scores >= score_threshold).view(n, 1, 1)  # [N, H, W] bool
    # Each pixel takes the detection with the highest score among those covering it; argmax returns the first
    # maximum, so equal scores resolve to the earlier detection.
    ranked = torch.where(kept, scores.view(n, 1, 1), float("-inf"))
    winner = ranked.argmax(dim=0)  # [H, W]
    return torch.where(kept.any(dim=0), classes[winner], out)
