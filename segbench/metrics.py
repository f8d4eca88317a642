"""Segmentation metrics from one confusion matrix, and instance -> semantic conversion.

``ConfusionMatrix`` follows torchvision's ``references/segmentation/utils.py`` (one ``bincount`` per update)
and detectron2's ``SemSegEvaluator`` (pixel accuracy, mean accuracy, mIoU, FWIoU from one matrix).
``to_semantic`` turns a Mask R-CNN prediction into a class map so the same metrics apply to all families.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

from segbench.errors import SegbenchError

__all__ = ["ConfusionMatrix", "bootstrap_miou_ci", "paired_bootstrap", "tie_groups", "to_semantic"]


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
# Bootstrap over images (Efron & Tibshirani 1993, ch. 13: percentile interval)
# ---------------------------------------------------------------------------------------------------------------------

CI_METHOD = "bootstrap over images, percentile"


def _per_image(intersection, union, what: str) -> tuple[Tensor, Tensor]:
    """Both arrays as float64 CPU tensors ``[N, K]`` (float64 sums of int64 pixel counts stay exact below 2^53)."""
    inter = torch.as_tensor(intersection).detach().to("cpu", torch.float64)
    uni = torch.as_tensor(union).detach().to("cpu", torch.float64)
    if inter.dim() != 2 or inter.shape != uni.shape:
        raise SegbenchError(
            f"{what}: intersection {list(inter.shape)} and union {list(uni.shape)} must both be [N images, K classes]; "
            "pass ConfusionMatrix(per_image=True).compute()['per_image']"
        )
    if bool((inter < 0).any()) or bool((inter > uni).any()):
        raise SegbenchError(f"{what}: per-image counts must satisfy 0 <= intersection <= union; pass pixel counts")
    return inter, uni


def _resample_weights(n: int, resamples: int, seed: int) -> Tensor:
    """Multinomial counts ``[R, N]`` float64: row r says how often each image is drawn in resample r (sums to N)."""
    if resamples < 1:
        raise SegbenchError(f"bootstrap: resamples={resamples} must be >= 1 (1000 is the usual choice)")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    draws = torch.randint(0, n, (resamples, n), generator=gen)
    weights = torch.zeros(resamples, n, dtype=torch.float64)
    return weights.scatter_add_(1, draws, torch.ones(resamples, n, dtype=torch.float64))


def _miou_rows(inter: Tensor, union: Tensor) -> Tensor:
    """mIoU of each row of summed counts ``[R, K]`` -> ``[R]``: mean over classes with a non-empty union (the
    ``ConfusionMatrix`` policy), NaN when every union is empty."""
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.nan)
    return iou.nanmean(dim=1)


def _percentiles(values: Tensor, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise SegbenchError(f"bootstrap: level={level} must lie in (0, 1), e.g. 0.95")
    tail = (1 - level) / 2
    low, high = torch.nanquantile(values, torch.tensor([tail, 1 - tail], dtype=values.dtype)).tolist()
    return low, high


def bootstrap_miou_ci(
    intersection, union, *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the dataset-level mIoU, resampling images with replacement.

    ``intersection``, ``union``: per-image pixel counts ``[N, K]`` (int64 tensors, arrays or nested lists), as
    ``ConfusionMatrix(per_image=True)`` keeps them. A resample's mIoU is the mean over classes with a non-empty
    union in that resample of ``sum_i I / sum_i U`` (one matrix per resample, as ``compute()``). All resamples
    at once: a multinomial counts matrix ``[R, N]`` times ``[N, K]``. Deterministic for a given ``seed``.
    Returns ``(low, high)``; ``(nan, nan)`` for fewer than 2 images.
    """
    inter, uni = _per_image(intersection, union, "bootstrap_miou_ci")
    if inter.shape[0] < 2:
        return math.nan, math.nan
    weights = _resample_weights(inter.shape[0], resamples, seed)
    return _percentiles(_miou_rows(weights @ inter, weights @ uni), level)


def paired_bootstrap(
    inter_a, union_a, inter_b, union_b, *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Paired bootstrap of the mIoU difference A - B for two models scored on the same N images (same order).

    Each resample draws one set of image indices and scores both models on it, so image difficulty cancels.
    Returns ``{"diff": mIoU(A) - mIoU(B) on all images, "low", "high": percentile CI of the difference at
    ``level``, "p_value": two-sided bootstrap p-value of "no difference", 2 * min(P(d* <= 0), P(d* >= 0)) with
    the (count + 1) / (R + 1) correction, capped at 1}``. Fewer than 2 images: low, high and p_value are NaN.
    """
    ia, ua = _per_image(inter_a, union_a, "paired_bootstrap (model A)")
    ib, ub = _per_image(inter_b, union_b, "paired_bootstrap (model B)")
    if ia.shape != ib.shape:
        raise SegbenchError(
            f"paired_bootstrap: model A has per-image counts {list(ia.shape)}, model B {list(ib.shape)}; "
            "compare two models scored on the same images of the same dataset"
        )
    diff = float(_miou_rows(ia.sum(0, keepdim=True), ua.sum(0, keepdim=True))
                 - _miou_rows(ib.sum(0, keepdim=True), ub.sum(0, keepdim=True)))  # fmt: skip
    if ia.shape[0] < 2:
        return {"diff": diff, "low": math.nan, "high": math.nan, "p_value": math.nan}
    weights = _resample_weights(ia.shape[0], resamples, seed)
    diffs = _miou_rows(weights @ ia, weights @ ua) - _miou_rows(weights @ ib, weights @ ub)
    low, high = _percentiles(diffs, level)
    valid = diffs[~diffs.isnan()]
    tail = min(int((valid <= 0).sum()), int((valid >= 0).sum()))
    p_value = min(1.0, 2 * (tail + 1) / (len(valid) + 1))
    return {"diff": diff, "low": low, "high": high, "p_value": p_value}


def tie_groups(rows, *, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> list[int]:
    """Shared ranks (1-based, competition style: 1, 1, 3) for rows sorted by mIoU, best first.

    Each row is a mapping with ``miou`` and ``per_image`` (``{"intersection": [N,K], "union": [N,K]}``, a record's
    metrics dict) or with ``intersection``/``union`` at the top level. A row whose paired bootstrap against the row
    above cannot separate them (the ``level`` CI of the difference includes 0) shares that row's rank; ties chain
    (A~B, B~C gives A, B and C one rank even if A and C differ). A row without per-image data (or on a different
    image set from the row above) cannot be tested and gets its own rank.
    """
    rows = list(rows)
    mious = [float(row["miou"]) for row in rows]
    if any(a < b for a, b in zip(mious, mious[1:])):
        raise SegbenchError(f"tie_groups: rows must be sorted by mIoU, best first; got {mious}")
    counts = [_row_counts(row) for row in rows]
    ranks: list[int] = []
    for i, current in enumerate(counts):
        above = counts[i - 1] if i else None
        tied = (
            above is not None and current is not None and above[0].shape == current[0].shape
            and _ci_includes_zero(*above, *current, resamples=resamples, level=level, seed=seed)
        )  # fmt: skip
        ranks.append(ranks[-1] if tied else i + 1)
    return ranks


def _row_counts(row) -> tuple[Tensor, Tensor] | None:
    data = row.get("per_image", row) if "intersection" not in row else row
    if not data or data.get("intersection") is None or data.get("union") is None:
        return None
    return _per_image(data["intersection"], data["union"], "tie_groups")


def _ci_includes_zero(ia, ua, ib, ub, **kwargs) -> bool:
    result = paired_bootstrap(ia, ua, ib, ub, **kwargs)
    if math.isnan(result["low"]):  # too few images to separate anything
        return True
    return result["low"] <= 0 <= result["high"]


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
