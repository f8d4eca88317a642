"""Segmentation metrics from one confusion matrix, and instance -> semantic conversion.

``ConfusionMatrix`` follows torchvision's ``references/segmentation/utils.py`` (one ``bincount`` per update)
and detectron2's ``SemSegEvaluator`` (pixel accuracy, mean accuracy, mIoU, FWIoU from one matrix).
Per-image counts feed the bootstrap CI of mIoU (``segbench.evaluation.bootstrap``, re-exported here); Boundary IoU
(Cheng et al., CVPR 2021) is accumulated per class like mIoU. ``to_semantic`` turns a Mask R-CNN prediction into a
class map so the same metrics apply to all families.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from segbench.evaluation.bootstrap import CI_METHOD, bootstrap_miou_ci, paired_bootstrap, tie_groups
from segbench.errors import SegbenchError

__all__ = [
    "ConfusionMatrix",
    "boundary_dilation",
    "boundary_region",
    "bootstrap_miou_ci",
    "paired_bootstrap",
    "tie_groups",
    "to_semantic",
]


# ---------------------------------------------------------------------------------------------------------------------
# Confusion matrix
# ---------------------------------------------------------------------------------------------------------------------


class ConfusionMatrix:
    """Dataset-level confusion matrix for semantic segmentation, optionally with per-image counts and Boundary IoU.

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
    - Dice = 2TP / (2TP + FP + FN); frequency-weighted Dice (``fw_dice``) weights it as FWIoU weights IoU;
    - an empty matrix (no pixels counted) gives NaN for every mean and every class, without error.

    ``per_image=True`` also keeps each image's intersection (TP) and union (TP + FP + FN), int64 ``[N, K]`` on the
    device in update order, from the same bincount; ``compute()`` then adds ``miou_ci`` (``bootstrap_miou_ci``:
    95% percentile CI over images, 1000 resamples, seed 0; None below 2 images), ``ci`` (how it was computed) and
    ``per_image`` (``{"intersection", "union"}`` as lists, for ``paired_bootstrap`` between models).

    ``boundary=True`` also accumulates Boundary IoU (Cheng et al., CVPR 2021) per class over the dataset; see
    ``boundary_region``. Boundaries come from the full masks ``target == c`` and ``pred == c``; pixels whose
    target is ignored are then left out of both boundary regions. ``compute()`` adds ``boundary_iou`` (list per
    class, NaN where both boundary regions are empty), ``mean_boundary_iou`` (mean over the others) and
    ``boundary_dilation_ratio``.
    """

    CI_LEVEL = 0.95
    CI_RESAMPLES = 1000
    CI_SEED = 0

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        device: torch.device | str | None = None,
        per_image: bool = False,
        boundary: bool = False,
        boundary_dilation_ratio: float = 0.02,
    ) -> None:
        if num_classes < 1:
            raise SegbenchError(f"ConfusionMatrix: num_classes={num_classes} must be >= 1; pass the dataset's class count")
        if boundary and not 0 < boundary_dilation_ratio < 1:
            raise SegbenchError(
                f"ConfusionMatrix: boundary_dilation_ratio={boundary_dilation_ratio} must lie in (0, 1); "
                "the paper's default is 0.02 of the image diagonal"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.per_image = per_image
        self.boundary = boundary
        self.boundary_dilation_ratio = boundary_dilation_ratio
        self._follow_data = device is None
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        # Boundary intersection and union per class, int64 [K] each.
        self.boundary_counts = torch.zeros(2, num_classes, dtype=torch.int64, device=device)
        self._image_counts: list[Tensor] = []  # per update: int64 [B, 2, K] (intersection, union)

    def reset(self) -> None:
        """Zero every count (keeps the device)."""
        self.matrix.zero_()
        self.boundary_counts.zero_()
        self._image_counts = []

    def image_counts(self) -> tuple[Tensor, Tensor]:
        """Per-image ``(intersection, union)``, int64 ``[N, K]`` each on the metric's device (needs per_image)."""
        if not self._image_counts:
            empty = torch.zeros(0, self.num_classes, dtype=torch.int64, device=self.matrix.device)
            return empty, empty.clone()
        counts = torch.cat(self._image_counts)
        return counts[:, 0], counts[:, 1]

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
            self.boundary_counts = self.boundary_counts.to(target.device)
            self._follow_data = False

        target = target.long()
        pred = pred.long()
        if target.dim() == 2:
            target, pred = target[None], pred[None]
        images = target.shape[0] if self.per_image else 1
        ignored = target == self.ignore_index
        # Both in [0, K): `t | p` is negative iff either is, and max(t, p) < K bounds both (5 ops instead of 7).
        in_range = ((target | pred) >= 0) & (torch.maximum(target, pred) < k)
        # One bin per (image, target, pred); two extra bins: images*K*K counts ignored pixels, the next bad values.
        # Routing them with `where` instead of boolean indexing keeps the update free of data-dependent shapes
        # (no host sync for a nonzero()).
        bins = torch.add(pred, target, alpha=k)
        if self.per_image:
            bins += torch.arange(images, device=bins.device).view(-1, 1, 1) * (k * k)
        bins = torch.where(in_range, bins, images * k * k + 1)
        bins = torch.where(ignored, images * k * k, bins)
        counts = torch.bincount(bins.flatten(), minlength=images * k * k + 2)
        if counts[images * k * k + 1]:  # the one host sync besides bincount's own
            raise SegbenchError(self._bad_values_message(pred, target, ignored))
        matrices = counts[: images * k * k].view(images, k, k)
        self.matrix += matrices.sum(dim=0)
        if self.per_image:
            tp = matrices.diagonal(dim1=1, dim2=2)
            union = matrices.sum(dim=1) + matrices.sum(dim=2) - tp
            self._image_counts.append(torch.stack([tp, union], dim=1))
        if self.boundary:
            self.boundary_counts += _boundary_counts(pred, target, ~ignored, k, self.boundary_dilation_ratio)

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
        """Combine all processes' counts (``torch.distributed``); a no-op when not initialised.

        The matrix and the boundary counts are summed; per-image counts are gathered, rank 0's images first, so
        every rank ends up with all N images (the order differs from a single-process run: paired comparisons
        need the same world size and sampler). Call it once, after the last update.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        dist.all_reduce(self.matrix)
        dist.all_reduce(self.boundary_counts)
        if self.per_image:
            inter, union = self.image_counts()
            local = torch.stack([inter, union], dim=1)  # [n, 2, K]
            sizes = [torch.zeros(1, dtype=torch.int64, device=local.device) for _ in range(dist.get_world_size())]
            dist.all_gather(sizes, torch.tensor([len(local)], device=local.device))
            longest = int(max(sizes))
            padded = torch.zeros(longest, 2, self.num_classes, dtype=torch.int64, device=local.device)
            padded[: len(local)] = local
            gathered = [torch.empty_like(padded) for _ in sizes]
            dist.all_gather(gathered, padded)  # all_gather needs equal shapes: pad, then trim
            self._image_counts = [part[: int(n)] for part, n in zip(gathered, sizes)]

    def compute(self) -> dict:
        """Return the metrics of the accumulated counts: ``summary`` plus the per-image and boundary keys."""
        out = self.summary(self.matrix)
        if self.per_image:
            inter, union = self.image_counts()
            low, high = bootstrap_miou_ci(
                inter, union, resamples=self.CI_RESAMPLES, level=self.CI_LEVEL, seed=self.CI_SEED
            )
            out["miou_ci"] = [low, high] if math.isfinite(low) and math.isfinite(high) else None
            out["ci"] = {
                "method": CI_METHOD, "level": self.CI_LEVEL, "resamples": self.CI_RESAMPLES, "seed": self.CI_SEED,
            }  # fmt: skip
            out["per_image"] = {"intersection": inter.tolist(), "union": union.tolist()}
        if self.boundary:
            inter, union = self.boundary_counts.to("cpu", torch.float64)
            iou = torch.where(union > 0, inter / union.clamp(min=1), torch.nan)
            out["boundary_iou"] = iou.tolist()
            out["mean_boundary_iou"] = float(iou.nanmean())
            out["boundary_dilation_ratio"] = self.boundary_dilation_ratio
        return out

    @staticmethod
    def summary(matrix: Tensor) -> dict:
        """Metrics of any int ``[K, K]`` confusion matrix (rows = ground truth, cols = prediction).

        Returns plain Python values (fractions in [0, 1], NaN where undefined; see the class docstring):
        ``pixel_accuracy``, ``mean_pixel_accuracy``, ``miou``, ``fwiou``, ``mean_dice``, ``fw_dice`` (float);
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
        fw_dice = (freq[gt > 0] * dice[gt > 0]).sum() if total > 0 else nan
        return {
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
            "mean_pixel_accuracy": float(accuracy.nanmean()),
            "miou": float(iou.nanmean()),
            "fwiou": float(fwiou),
            "mean_dice": float(dice.nanmean()),
            "fw_dice": float(fw_dice),
            "iou": iou.tolist(),
            "accuracy": accuracy.tolist(),
            "dice": dice.tolist(),
            "absent": torch.nonzero(union == 0).flatten().tolist(),
        }


# ---------------------------------------------------------------------------------------------------------------------
# Boundary IoU (Cheng, Girshick, Dollar, Berg, Kirillov; CVPR 2021)
# ---------------------------------------------------------------------------------------------------------------------

_BOUNDARY_CHUNK = 1 << 24  # elements of [B, classes, H, W] eroded at once: bounds memory for many classes


def boundary_dilation(height: int, width: int, ratio: float = 0.02) -> int:
    """The boundary width d in pixels: ``round(ratio * image diagonal)``, at least 1 (the reference's rule)."""
    return max(1, int(round(ratio * math.sqrt(height**2 + width**2))))


def boundary_region(masks: Tensor, dilation: int) -> Tensor:
    """The pixels of each binary mask within ``dilation`` pixels of its contour, bool ``[..., H, W]``.

    The reference (boundary-iou-api ``mask_to_boundary``) pads the mask with one row/column of zeros, erodes it
    ``dilation`` times with a 3x3 kernel (cv2's border beyond the pad counts as foreground) and returns mask minus
    eroded. Iterated 3x3 erosion is one (2d+1)x(2d+1) square erosion, and a square window crossing the image edge
    always covers the zero pad, so: a mask pixel is on the boundary iff the (2d+1) square around it holds a
    background pixel, with everything outside the image background. ``masks``: bool ``[..., H, W]``, any device.
    """
    background = F.pad(~masks, (dilation, dilation, dilation, dilation), value=True)
    return masks & _near(background, dilation)


def _near(background: Tensor, dilation: int) -> Tensor:
    """bool ``[..., H, W]``: whether the (2d+1) square around each pixel holds a background pixel, given the
    background already padded by ``d`` on every side (``[..., H + 2d, W + 2d]``)."""
    window = 2 * dilation + 1
    return _window_any(_window_any(background, window, dim=-1), window, dim=-2)


def _window_any(x: Tensor, window: int, dim: int) -> Tensor:
    """Sliding-window OR of a bool tensor along ``dim``: ``out[i] = any(x[i : i + window])``, length L - window + 1.

    Doubling spans (1, 2, 4, ...) then one last OR: O(log window) full-tensor ops of one byte per pixel, much
    faster on the CPU than ``max_pool2d`` with a (2d+1) kernel, and the same code on every device.
    """
    span = 1
    while 2 * span <= window:
        n = x.shape[dim] - span
        x = x.narrow(dim, 0, n) | x.narrow(dim, span, n)  # now covers 2 * span
        span *= 2
    rest = window - span
    if rest:
        n = x.shape[dim] - rest
        x = x.narrow(dim, 0, n) | x.narrow(dim, rest, n)
    return x


def _boundary_counts(pred: Tensor, target: Tensor, valid: Tensor, num_classes: int, ratio: float) -> Tensor:
    """Boundary intersection and union per class for one batch, int64 ``[2, K]``.

    ``pred``, ``target``: int64 ``[B, H, W]`` class maps; ``valid``: bool ``[B, H, W]`` (target not ignored).
    """
    b, h, w = target.shape
    d = boundary_dilation(h, w, ratio)
    # Pad the class maps once with -1 (no class): outside the image is then background for every class mask.
    # Ignored target pixels become -1 too (in no class), and int16 cuts the bytes the comparisons read.
    small = torch.int16 if num_classes < 2**15 else torch.int32
    target = torch.where(valid, target, -1)
    maps = [F.pad(m.to(small), (d, d, d, d), value=-1)[:, None] for m in (target, pred)]
    valid = valid[:, None]
    counts = torch.zeros(2, num_classes, dtype=torch.int64, device=target.device)
    step = max(1, _BOUNDARY_CHUNK // (b * h * w))
    for first in range(0, num_classes, step):  # a loop over class chunks, never over pixels
        classes = torch.arange(first, min(first + step, num_classes), device=target.device, dtype=small)
        gt, pr = (_class_boundaries(m, classes.view(1, -1, 1, 1), d) for m in maps)
        both, either = gt & pr & valid, (gt | pr) & valid
        # Sum bytes into int32 (exact: a chunk has < 2^31 pixels per class); bool sums go through int64, ~10x slower.
        counts[0, first : first + step] = both.view(torch.uint8).sum(dim=(0, 2, 3), dtype=torch.int32)
        counts[1, first : first + step] = either.view(torch.uint8).sum(dim=(0, 2, 3), dtype=torch.int32)
    return counts


def _class_boundaries(padded_map: Tensor, classes: Tensor, d: int) -> Tensor:
    """Boundary regions of ``padded_map == c`` for each class ``c`` in ``classes`` ``[1, C, 1, 1]``: bool
    ``[B, C, H, W]`` from a class map padded by ``d``, ``[B, 1, H + 2d, W + 2d]``."""
    background = padded_map != classes
    inside = ~background[..., d : background.shape[-2] - d, d : background.shape[-1] - d]
    return inside & _near(background, d)


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
